"""`PropertyModel`: a crystal encoder (+ optional text/XRD encoders fused by cross-attention) and a property head.

Plain torch (no Lightning): the Lightning task, the in-process training loop of cross-validation and the
`PropertyPredictor` all run this one module. Its outputs are in normalised units (regression) or logits
(classification); `predictions` turns them into physical values and probabilities with the stored train-split
statistics.

    features = pooled crystal embedding                              (no extra inputs)
             | pooled fusion(crystal tokens -> text/XRD tokens)      (extra inputs)
    outputs  = head(features)                                        (B, O)
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from encoders import build_encoder
from mmcrystal.config import config_from_dict, config_to_dict
from mmcrystal.data.batch import CrystalBatch, MultimodalBatch
from mmcrystal.finetune.config import PropertyModelConfig
from mmcrystal.finetune.heads import PropertyHead, normalization_vectors, output_slices
from mmcrystal.fusion.cross_attention import CrossAttentionFusion

__all__ = ["PropertyModel", "batch_targets"]


def batch_targets(batch: MultimodalBatch, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) values and mask of the named property columns of a batch.

    Raises:
        KeyError: A column the batch does not have (names the ones it has).
    """
    missing = [n for n in names if n not in batch.property_names]
    if missing:
        raise KeyError(f"batch has no property column(s) {missing}; it has {batch.property_names}")
    index = [batch.property_names.index(n) for n in names]
    return batch.properties[:, index], batch.property_mask[:, index]


class PropertyModel(nn.Module):
    """Encoders + optional fusion + head; normalisation statistics as buffers.

    Args:
        config: The resolved architecture (`PropertyModelConfig` or its dict form).
        backbone_state: Pretrained weights to load before freezing/LoRA are applied: ``{"encoders.crystal": sd,
            "encoders.xrd": sd, "fusion": sd}`` (state dicts of those submodules). Fusion weights may be partial
            (a context modality the source fusion did not have starts from random init).
    """

    def __init__(self, config: PropertyModelConfig | dict, backbone_state: dict[str, dict] | None = None):
        super().__init__()
        config = config_from_dict(config) if isinstance(config, dict) else config
        self.config = config
        self.encoders = nn.ModuleDict({"crystal": build_encoder(config.crystal)})
        for name in config.inputs:
            cfg = getattr(config, name)
            if cfg is None:
                raise ValueError(f"input {name!r} needs its encoder config in PropertyModelConfig.{name}")
            self.encoders[name] = build_encoder(cfg)
        self.fusion = None
        if config.inputs:
            if config.fusion is None:
                raise ValueError(f"extra inputs {config.inputs} need a fusion config")
            context = {m: self.encoders[m].output_dim for m in config.inputs}
            self.fusion = CrossAttentionFusion(config.fusion, self.encoders["crystal"].output_dim, context)
        width = config.fusion.dim if self.fusion is not None else self.encoders["crystal"].output_dim
        self.head = PropertyHead(width, config.head, config.targets)
        self.slices = output_slices(config.targets)
        mean, std = normalization_vectors(config.normalization, config.targets)
        self.register_buffer("target_mean", mean)  # (T,) physical units
        self.register_buffer("target_std", std)  # (T,)
        if backbone_state:
            self.load_backbone_state(backbone_state)
        from mmcrystal.finetune.tuning import apply_tuning

        apply_tuning(self, config.tuning)

    # --------------------------------------------------------------------------------------------- setup
    @property
    def targets(self):
        return self.config.targets

    @property
    def target_names(self) -> list[str]:
        """Property columns read from the data, one per task (a column may feed several tasks)."""
        return [t.name for t in self.config.targets]

    def config_dict(self) -> dict:
        return config_to_dict(self.config)

    def set_normalization(self, normalization: dict) -> None:
        """Adopt train-split statistics ``{name: {"mean", "std"}}`` of the regression targets."""
        missing = [t.name for t in self.targets if t.kind == "regression" and t.name not in normalization]
        if missing:
            raise KeyError(f"normalisation lacks regression target(s) {missing}")
        self.config = replace(self.config, normalization={k: dict(v) for k, v in normalization.items()})
        mean, std = normalization_vectors(normalization, self.targets)
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)

    def load_backbone_state(self, state: dict[str, dict]) -> None:
        """Load pretrained submodule weights (see class docstring)."""
        for prefix, sd in state.items():
            module = self.get_submodule(prefix)
            strict = prefix != "fusion"
            missing, unexpected = module.load_state_dict(sd, strict=strict)
            if unexpected:
                raise RuntimeError(f"{prefix}: pretrained weights do not fit (unexpected {unexpected[:5]})")

    def train(self, mode: bool = True) -> PropertyModel:
        super().train(mode)
        if self.config.tuning.mode == "frozen":  # a frozen backbone is a fixed feature extractor: no dropout
            for name, module in self.encoders.items():
                if name != "text":
                    module.eval()
            if self.fusion is not None:
                self.fusion.eval()
        return self

    # --------------------------------------------------------------------------------------------- forward
    def _context(self, batch_size: int, inputs: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Tokens (B, S, D) and mask (B, S) of each extra input; absent samples are all-masked."""
        context = {}
        device = self.target_mean.device
        for name in self.config.inputs:
            value, present = inputs.get(name), inputs.get(f"{name}_mask")
            if value is None:
                continue
            present = torch.ones(batch_size, dtype=torch.bool) if present is None else present
            encoder = self.encoders[name]
            if name == "text":
                tokens = encoder.tokenize([v if v else "" for v in value])
                out = encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
            else:
                out = encoder(value.to(device))
            context[name] = (out.tokens, out.mask & present.to(device)[:, None])
        return context

    def features(self, crystal: CrystalBatch, **inputs) -> torch.Tensor:
        """(B, F) pooled embedding the head reads. ``inputs``: ``text``/``text_mask``, ``xrd``/``xrd_mask``."""
        encoded = self.encoders["crystal"](crystal)
        if self.fusion is None:
            return encoded.pooled
        context = self._context(crystal.num_graphs, inputs)
        return self.fusion(encoded.tokens, encoded.mask, context).pooled

    def forward(self, crystal: CrystalBatch, **inputs) -> torch.Tensor:
        """(B, O) outputs: normalised values (regression) and logits (classification)."""
        return self.head(self.features(crystal, **inputs))

    def forward_batch(self, batch: MultimodalBatch) -> torch.Tensor:
        """`forward` on a `MultimodalBatch` (its captions and XRD feed the extra inputs when configured)."""
        device = self.target_mean.device
        inputs = {}
        if "text" in self.config.inputs and batch.captions:
            inputs.update(text=batch.captions, text_mask=batch.caption_mask)
        if "xrd" in self.config.inputs and batch.xrd is not None:
            inputs.update(xrd=batch.xrd, xrd_mask=batch.xrd_mask)
        return self(batch.crystal.to(device), **inputs)

    def predictions(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        """Per task: (B,) physical value (regression), (B,) probability of label 1 (binary) or (B, C) class
        probabilities (multiclass)."""
        out = []
        for t, (target, cols) in enumerate(zip(self.targets, self.slices, strict=True)):
            value = outputs[:, cols]
            if target.kind == "regression":
                out.append(value[:, 0] * self.target_std[t] + self.target_mean[t])
            elif target.kind == "binary":
                out.append(torch.sigmoid(value[:, 0]))
            else:
                out.append(torch.softmax(value, dim=-1))
        return out
