"""`AlignmentPretraining`: the Lightning task that aligns crystal, text, XRD, DOS and micrograph embeddings.

Thin by design: `MultimodalCrystalModel` holds the networks, `mmcrystal.losses.contrastive` the objectives,
`mmcrystal.evaluation.retrieval` the metrics; this file wires them into training and validation steps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmcrystal.config import config_from_dict, config_to_dict, register_config
from mmcrystal.data.batch import MultimodalBatch
from mmcrystal.data.symmetry import CRYSTAL_SYSTEMS
from mmcrystal.evaluation.retrieval import retrieval_metrics, zero_shot_accuracy
from mmcrystal.fusion.cross_attention import CrossAttentionFusion, FusionConfig, matching_loss, mine_hard_negatives
from mmcrystal.losses.contrastive import (
    clip_loss,
    gather_no_grad,
    gather_with_grad,
    group_ids,
    positive_mask,
    siglip_loss,
)
from mmcrystal.model import AlignmentModelConfig, ModalityEmbedding, MultimodalCrystalModel
from mmcrystal.pretrained import load_pretrained, save_pretrained
from mmcrystal.tasks.base import OptimConfig, TaskBase, build_optimizer

__all__ = ["AlignmentLossConfig", "AlignmentPretraining", "ZERO_SHOT_TEMPLATES"]

ZERO_SHOT_TEMPLATES = (
    "a {} crystal",
    "a crystal structure in the {} crystal system",
    "a material with {} symmetry",
    "an inorganic compound with a {} lattice",
)


@register_config
@dataclass
class AlignmentLossConfig:
    """Which modality pairs are contrasted, and how.

    Attributes:
        pairs: ``crystal_anchored`` (each modality against the crystal, as MultiMat) or ``all_pairs``.
        weights: Optional per-pair weights keyed ``"crystal-text"``; unlisted pairs weigh 1.
        duplicate_positives: Identical captions in a (global) batch are positives of each other.
        gather: Contrast against the global batch across DDP ranks (embeddings gathered with gradients).
    """

    pairs: str = "crystal_anchored"
    weights: dict[str, float] = field(default_factory=dict)
    duplicate_positives: bool = True
    gather: bool = True


def _as_config(value, cls):
    if value is None:
        return cls()
    return config_from_dict(value) if isinstance(value, dict) else value


class AlignmentPretraining(TaskBase):
    """Contrastive (and optionally cross-attention matching) alignment of the modalities.

    Args:
        network: Encoders, projection heads, latent width and temperature (`AlignmentModelConfig`).
        loss: Pairs and contrastive options (`AlignmentLossConfig`).
        optim: Optimiser and schedule (`OptimConfig`).
        fusion: Cross-attention fusion with a matching head trained on hard negatives; None to skip it.
    """

    compile_targets = ("model.encoders.crystal",)  # the periodic GNN; text tokenisation does not compile

    def __init__(
        self,
        network: AlignmentModelConfig | None = None,
        loss: AlignmentLossConfig | None = None,
        optim: OptimConfig | None = None,
        fusion: FusionConfig | None = None,
    ):
        super().__init__()
        model_cfg = _as_config(network, AlignmentModelConfig)
        self.loss_cfg = _as_config(loss, AlignmentLossConfig)
        self.optim_cfg = _as_config(optim, OptimConfig)
        fusion_cfg = config_from_dict(fusion) if isinstance(fusion, dict) else fusion
        # plain dicts only: the checkpoint then loads with weights_only=True (no pickled classes)
        self.save_hyperparameters(
            {
                "network": config_to_dict(model_cfg),
                "loss": config_to_dict(self.loss_cfg),
                "optim": config_to_dict(self.optim_cfg),
                "fusion": config_to_dict(fusion_cfg) if fusion_cfg else None,
            }
        )
        self.model = MultimodalCrystalModel(model_cfg)
        self.fusion = None
        if fusion_cfg is not None:
            context = {m: self.model.encoders[m].output_dim for m in fusion_cfg.context if m in self.model.encoders}
            self.fusion = CrossAttentionFusion(fusion_cfg, self.model.encoders["crystal"].output_dim, context)
        self.pairs = self._pairs()
        self._val_outputs: list[dict] = []

    def _pairs(self) -> list[tuple[str, str]]:
        mods = self.model.modalities
        if self.loss_cfg.pairs == "all_pairs":
            return list(itertools.combinations(mods, 2))
        if self.loss_cfg.pairs != "crystal_anchored":
            raise ValueError(f"loss.pairs must be 'crystal_anchored' or 'all_pairs', got {self.loss_cfg.pairs!r}")
        return [("crystal", m) for m in mods if m != "crystal"]

    # ------------------------------------------------------------------------------------------- losses
    def _groups(self, batch: MultimodalBatch, modality: str) -> torch.Tensor | None:
        if modality != "text" or not self.loss_cfg.duplicate_positives:
            return None
        return group_ids([c.strip().lower() for c in batch.captions]).to(self.device)

    def contrastive_losses(self, batch: MultimodalBatch, emb: dict[str, ModalityEmbedding]) -> dict[str, tuple]:
        gather = self.loss_cfg.gather and self._trainer is not None and self._trainer.world_size > 1
        scale = self.model.logit_scale()
        out = {}
        for m1, m2 in self.pairs:
            a, b = emb[m1].embedding, emb[m2].embedding
            present = emb[m1].present & emb[m2].present
            g1, g2 = self._groups(batch, m1), self._groups(batch, m2)
            if gather:
                a, b, present = gather_with_grad(a), gather_with_grad(b), gather_no_grad(present)
                g1 = gather_no_grad(g1) if g1 is not None else None
                g2 = gather_no_grad(g2) if g2 is not None else None
            if self.model.config.siglip:
                value = siglip_loss(a, b, scale, self.model.logit_bias, present, g1, g2)
            else:
                value = clip_loss(a, b, scale, present, g1, g2)
            out[f"{m1}-{m2}"] = (value, int(present.sum()))  # (loss, number of pairs in the global batch)
        return out

    def matching_loss(self, batch: MultimodalBatch, emb: dict[str, ModalityEmbedding]) -> torch.Tensor | None:
        """ITM loss: positives, hard-negative contexts for each crystal, hard-negative crystals for each context."""
        if self.fusion is None:
            return None
        crystal = emb["crystal"]
        losses = []
        for modality in self.fusion.config.context:
            other = emb.get(modality)
            if other is None or other.encoded is None:
                continue
            both = crystal.present & other.present
            if int(both.sum()) < 2:
                continue
            idx = both.nonzero()[:, 0]
            c_rows = (crystal.present.cumsum(0) - 1)[idx]
            o_rows = (other.present.cumsum(0) - 1)[idx]
            c_tok, c_mask = crystal.encoded.tokens[c_rows], crystal.encoded.mask[c_rows]
            o_tok, o_mask = other.encoded.tokens[o_rows], other.encoded.mask[o_rows]
            groups = self._groups(batch, modality)
            positives = positive_mask(None, groups[idx] if groups is not None else None, len(idx), self.device)
            sims = crystal.embedding[idx] @ other.embedding[idx].t()
            neg_other = mine_hard_negatives(sims, positives)
            neg_crystal = mine_hard_negatives(sims.t(), positives.t())
            logits = [self.fusion(c_tok, c_mask, {modality: (o_tok, o_mask)}).match_logit]
            labels = [torch.ones(len(idx), device=self.device)]
            ok = neg_other >= 0
            if bool(ok.any()):
                j = neg_other[ok]
                logits.append(self.fusion(c_tok[ok], c_mask[ok], {modality: (o_tok[j], o_mask[j])}).match_logit)
                labels.append(torch.zeros(int(ok.sum()), device=self.device))
            ok = neg_crystal >= 0
            if bool(ok.any()):
                j = neg_crystal[ok]
                logits.append(self.fusion(c_tok[j], c_mask[j], {modality: (o_tok[ok], o_mask[ok])}).match_logit)
                labels.append(torch.zeros(int(ok.sum()), device=self.device))
            losses.append(matching_loss(torch.cat(logits), torch.cat(labels)))
        return torch.stack(losses).mean() if losses else None

    def compute_loss(self, batch: MultimodalBatch) -> tuple[torch.Tensor, dict, dict[str, ModalityEmbedding]]:
        """Total loss, its parts (for logging: name -> (value, count)) and the batch's embeddings. Logs nothing."""
        emb = self.model(batch)
        parts = self.contrastive_losses(batch, emb)
        total, weight_sum = 0.0, 0.0
        for name, (value, count) in parts.items():
            weight = self.loss_cfg.weights.get(name, 1.0) if count >= 2 else 0.0
            total, weight_sum = total + weight * value, weight_sum + weight
        # a batch with no pair at all still returns a graph-connected zero (DDP needs every parameter used)
        loss = total / weight_sum if weight_sum else sum(v for v, _ in parts.values())
        itm = self.matching_loss(batch, emb)
        if itm is not None:
            parts["matching"] = (itm, len(batch))
            loss = loss + self.fusion.config.matching_weight * itm
        return loss, parts, emb

    def _step(self, batch: MultimodalBatch, split: str):
        loss, parts, emb = self.compute_loss(batch)
        sync = split != "train"
        for name, (value, count) in parts.items():
            if count >= 2:
                self.log(f"{split}/loss_{name}", value, batch_size=count, sync_dist=sync)
        self.log(f"{split}/loss", loss, batch_size=len(batch), prog_bar=True, sync_dist=sync)
        return loss, emb

    # ------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        self.log("train/logit_scale", self.model.logit_scale(), batch_size=len(batch))
        return loss

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def _eval_step(self, batch: MultimodalBatch, split: str) -> None:
        _, emb = self._step(batch, split)
        keep = ~batch.is_padding.to(self.device)
        record = {"crystal_system": batch.crystal_system.to(self.device), "keep": keep}
        if "text" in emb:
            record["text_group"] = self._groups(batch, "text") if batch.captions else None
        for modality, value in emb.items():
            record[f"{modality}_emb"] = value.embedding.detach().float()  # bf16 under autocast; metrics in fp32
            record[f"{modality}_present"] = value.present
        self._val_outputs.append(record)

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def _eval_epoch_end(self, split: str) -> None:
        if not self._val_outputs:
            return
        merged = {
            k: torch.cat([o[k] for o in self._val_outputs])
            for k in self._val_outputs[0]
            if self._val_outputs[0][k] is not None
        }
        self._val_outputs.clear()
        if self._trainer is not None and self._trainer.world_size > 1:
            merged = {k: v.reshape(-1, *v.shape[2:]) for k, v in self.all_gather(merged).items()}
        keep = merged["keep"]
        metrics = self.retrieval_and_zero_shot({k: v[keep] for k, v in merged.items()})
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, rank_zero_only=True)

    @torch.no_grad()
    def retrieval_and_zero_shot(self, merged: dict[str, torch.Tensor]) -> dict[str, float]:
        """recall@1/5/10 and mean rank both ways for each pair; zero-shot crystal system from text prompts."""
        out: dict[str, float] = {}
        for m1, m2 in self.pairs:
            both = merged[f"{m1}_present"] & merged[f"{m2}_present"]
            if int(both.sum()) < 2:
                continue
            groups = merged.get("text_group")
            groups = groups[both] if groups is not None and "text" in (m1, m2) else None
            for q, g in ((m1, m2), (m2, m1)):
                stats = retrieval_metrics(merged[f"{q}_emb"][both], merged[f"{g}_emb"][both], groups=groups)
                for key in ("recall@1", "recall@5", "recall@10", "mean_rank", "gallery"):
                    out[f"{key}/{q}->{g}"] = stats[key]
        if "text" in self.model.modalities:
            out["zero_shot_crystal_system"] = zero_shot_accuracy(
                merged["crystal_emb"], self.crystal_system_prototypes().float(), merged["crystal_system"]
            )
        return out

    @torch.no_grad()
    def crystal_system_prototypes(self, templates=ZERO_SHOT_TEMPLATES) -> torch.Tensor:
        """(7, latent) text prototypes, one per crystal system, averaged over prompt templates (CLIP recipe)."""
        prompts = [t.format(system) for system in CRYSTAL_SYSTEMS for t in templates]
        emb = self.model.encode("text", prompts).reshape(len(CRYSTAL_SYSTEMS), len(templates), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1)

    def configure_optimizers(self):
        prefixes = ["model.encoders.text."] if "text" in self.model.modalities else []
        crystal_cfg = self.model.config.encoder_config("crystal")
        if type(crystal_cfg).__name__ == "CHGNetConfig":
            prefixes.append("model.encoders.crystal.")
        return build_optimizer(self, self.optim_cfg, self.total_steps(), tuple(prefixes))

    # ------------------------------------------------------------------------------------------- export
    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the aligned model (encoders + heads + temperature) as safetensors + JSON config."""
        return save_pretrained(self.model, self.model.config, folder, "MultimodalCrystalModel", extra)

    @staticmethod
    def load_model(folder: str | Path, map_location="cpu") -> MultimodalCrystalModel:
        """The `MultimodalCrystalModel` of a `save_pretrained` folder (no run folder, no network)."""
        model, _ = load_pretrained(folder, MultimodalCrystalModel, map_location)
        return model.eval()
