"""Start a run from another run's weights: fine-tune a decoder, add a head to it, or grow its size limits.

`CrystalDiffusion(init_from=...)` calls these at the start of `fit`. Why not `ckpt_path`: resuming restores the
optimiser, schedule and step and needs the same architecture; a warm start takes only the weights and lets the new
config differ (a composition model or formula-count tokens added, max_atoms 24 -> 40, a new dataset), as MatterGen
fine-tunes its base model with new condition adapters.

Rules, per tensor of the new model:
- same name and shape in the source: copied;
- same name, same number of dimensions, equal in every dimension but the first (an embedding or output layer with
  more or fewer rows, e.g. the atom-count head's classes n = 1..max_atoms): the overlapping rows are copied, the
  remaining rows keep their fresh initialisation;
- otherwise (absent, or another shape): left fresh.
Every tensor is reported in one of these groups, and the source's tensors the new model has no place for are
listed, so nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["WarmStartReport", "copy_matching", "decoder_state"]


@dataclass
class WarmStartReport:
    """Names of the new model's tensors by what happened to them, and the source's unused tensors."""

    copied: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def head(names: list[str]) -> str:
            return ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")

        return (f"{len(self.copied)} tensors copied; resized (overlapping rows copied): [{head(self.resized)}]; "
                f"fresh: [{head(self.fresh)}]; unused in the source: [{head(self.unused)}]")  # fmt: skip


def decoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `CrystalDiffusionModel` weights of a decoder folder (`save_pretrained`: EMA denoiser) or of a Lightning
    checkpoint of `CrystalDiffusion` (its EMA denoiser replaces the online one, as the export does)."""
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"init_from {path}: no model.safetensors (a folder written by save_pretrained)")
        from safetensors.torch import load_file

        return load_file(str(weights), device="cpu")
    if not path.is_file():
        raise FileNotFoundError(f"init_from {path}: no such decoder folder or checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"init_from {path}: not a Lightning checkpoint (no state_dict)")
    model = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    ema = {k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")}
    if not model:
        raise ValueError(f"init_from {path}: no decoder weights (keys model.*) in the checkpoint")
    model.update({f"denoiser.{k}": v for k, v in ema.items()})
    return model


@torch.no_grad()
def copy_matching(module: nn.Module, state: dict[str, torch.Tensor]) -> WarmStartReport:
    """Copy `state` into `module` in place by the rules of the module docstring."""
    report = WarmStartReport()
    own = module.state_dict(keep_vars=True)
    for name, target in own.items():
        source = state.get(name)
        if source is None:
            report.fresh.append(name)
        elif source.shape == target.shape:
            target.copy_(source.to(target.dtype))
            report.copied.append(name)
        elif source.dim() == target.dim() >= 1 and source.shape[1:] == target.shape[1:]:
            rows = min(source.shape[0], target.shape[0])
            target[:rows].copy_(source[:rows].to(target.dtype))
            report.resized.append(name)
        else:
            report.fresh.append(name)
    report.unused = sorted(set(state) - set(own))
    return report
