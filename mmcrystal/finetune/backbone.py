"""Resolve a `BackboneConfig` into encoder configs and pretrained weights for a `PropertyModel`.

Sources:
- an alignment export folder (``AlignmentPretraining.save_pretrained``: ``config.json`` + ``model.safetensors`` +
  ``text_backbone/``): the crystal encoder, and the text/XRD encoders when asked for as inputs. Read directly
  from the files, so a crystal-only fine-tune never builds the text model. Both config formats are read: the
  current ``class_path`` one and the older ``__type__`` one of exports written before the switch;
- an alignment Lightning checkpoint (``.ckpt``, loaded with ``weights_only=True``): the same, plus the
  cross-attention fusion, which export folders do not hold;
- ``chgnet``: CHGNet's pretrained atom features (weights ship inside the chgnet wheel);
- ``scratch``: the configured encoder, random init.
``pretrained=False`` with a path keeps the architecture and drops the weights (the fair from-scratch baseline).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from encoders import CHGNetConfig, CSPNetConfig, TextConfig, xrd_config
from mmcrystal.config import config_from_dict
from mmcrystal.finetune.config import BackboneConfig
from mmcrystal.fusion.cross_attention import FusionConfig
from mmcrystal.pretrained import resolve_text_paths

__all__ = [
    "ResolvedBackbone",
    "resolve_backbone",
    "read_alignment_source",
    "property_model_config",
    "build_property_model",
]

log = logging.getLogger(__name__)


@dataclass
class ResolvedBackbone:
    """Encoder configs and the weights to load (``{submodule prefix: state dict}``; empty for random init)."""

    crystal: object
    inputs: list[str]
    text: object | None = None
    xrd: object | None = None
    fusion: FusionConfig | None = None
    state: dict[str, dict] = field(default_factory=dict)
    source: str = "scratch"


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def read_alignment_source(path: str | Path) -> tuple[object, FusionConfig | None, dict[str, torch.Tensor]]:
    """``(AlignmentModelConfig, FusionConfig or None, state dict keyed like AlignmentPretraining)`` of an
    alignment export folder or checkpoint; keys start with ``model.`` (encoders, heads) and ``fusion.``."""
    path = Path(path)
    if path.is_dir():
        meta_path = path / "config.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not an alignment export folder (no config.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != "MultimodalCrystalModel":
            raise ValueError(f"{path} holds a {meta.get('kind')!r}, not an aligned MultimodalCrystalModel")
        resolve_text_paths(meta["config"], path.resolve())
        from safetensors.torch import load_file

        state = {f"model.{k}": v for k, v in load_file(str(path / "model.safetensors")).items()}
        return config_from_dict(meta["config"]), None, state
    if path.suffix == ".ckpt" and path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams = checkpoint.get("hyper_parameters", {})
        if "network" not in hparams:
            raise ValueError(f"{path} is not an AlignmentPretraining checkpoint (no 'network' hyperparameter)")
        fusion = config_from_dict(hparams["fusion"]) if hparams.get("fusion") else None
        return config_from_dict(hparams["network"]), fusion, checkpoint["state_dict"]
    raise FileNotFoundError(f"backbone source {str(path)!r}: not 'scratch', 'chgnet', an export folder or a .ckpt")


def _from_alignment(cfg: BackboneConfig) -> ResolvedBackbone:
    aligned, source_fusion, state = read_alignment_source(cfg.source)
    out = ResolvedBackbone(crystal=aligned.encoder_config("crystal"), inputs=list(cfg.inputs), source=cfg.source)
    out.state["encoders.crystal"] = _sub_state(state, "model.encoders.crystal.")
    for name in cfg.inputs:
        if name in aligned.modalities:
            setattr(out, name, aligned.encoder_config(name))
            out.state[f"encoders.{name}"] = _sub_state(state, f"model.encoders.{name}.")
        else:
            log.info("backbone: %s has no %s encoder; a new one starts from random init", cfg.source, name)
            setattr(out, name, getattr(cfg, name) or _default_encoder(name))
    if cfg.inputs:
        if source_fusion is not None:
            out.fusion = replace(source_fusion, context=list(cfg.inputs))
            fusion_state = _sub_state(state, "fusion.")
            dropped = [m for m in source_fusion.context if m not in cfg.inputs]
            drop = tuple(f"context_in.{m}." for m in dropped) + tuple(f"context_type.{m}" for m in dropped)
            out.state["fusion"] = {k: v for k, v in fusion_state.items() if not k.startswith(drop)}
        else:
            out.fusion = _default_fusion(cfg, out.crystal)
    if not cfg.pretrained:
        out.state = {}
    return out


def _default_encoder(name: str):
    return TextConfig() if name == "text" else xrd_config(1024)


def _default_fusion(cfg: BackboneConfig, crystal) -> FusionConfig:
    if cfg.fusion is not None:
        return replace(cfg.fusion, context=list(cfg.inputs))
    width = getattr(crystal, "hidden_dim", 64)
    return FusionConfig(dim=width, num_layers=1, num_heads=4 if width % 4 == 0 else 1, context=list(cfg.inputs))


def resolve_backbone(cfg: BackboneConfig, tuning_mode: str = "full") -> ResolvedBackbone:
    """Encoder configs and pretrained weights for ``cfg`` (see module docstring).

    Args:
        cfg: The backbone config.
        tuning_mode: `TuningConfig.mode`; CHGNet runs under ``no_grad`` only when it is ``frozen``.
    """
    if cfg.source == "scratch":
        crystal = cfg.crystal or CSPNetConfig()
    elif cfg.source == "chgnet":
        crystal = cfg.crystal if isinstance(cfg.crystal, CHGNetConfig) else CHGNetConfig()
    else:
        out = _from_alignment(cfg)
        if out.state:
            log.info("backbone: pretrained weights from %s (%s)", cfg.source, ", ".join(out.state))
        return out
    if isinstance(crystal, CHGNetConfig):
        crystal = replace(crystal, freeze=tuning_mode == "frozen")
    out = ResolvedBackbone(crystal=crystal, inputs=list(cfg.inputs), source=cfg.source)
    for name in cfg.inputs:
        setattr(out, name, getattr(cfg, name) or _default_encoder(name))
    if cfg.inputs:
        out.fusion = _default_fusion(cfg, crystal)
    return out


def property_model_config(resolved: ResolvedBackbone, targets, head=None, tuning=None, normalization=None):
    """The `PropertyModelConfig` of a resolved backbone with these tasks, head and tuning recipe."""
    from mmcrystal.finetune.config import HeadConfig, PropertyModelConfig, TuningConfig, parse_target

    return PropertyModelConfig(
        crystal=resolved.crystal,
        targets=[parse_target(t) for t in targets],
        inputs=list(resolved.inputs),
        text=resolved.text,
        xrd=resolved.xrd,
        fusion=resolved.fusion,
        head=head or HeadConfig(),
        tuning=tuning or TuningConfig(),
        normalization=normalization,
        source=str(resolved.source),
    )


def build_property_model(backbone: BackboneConfig, targets, head=None, tuning=None, normalization=None):
    """A `PropertyModel` with the backbone's pretrained weights loaded (then frozen / LoRA-wrapped per ``tuning``)."""
    from mmcrystal.finetune.config import TuningConfig
    from mmcrystal.finetune.model import PropertyModel

    tuning = tuning or TuningConfig()
    resolved = resolve_backbone(backbone, tuning.mode)
    return PropertyModel(property_model_config(resolved, targets, head, tuning, normalization), resolved.state)
