"""Freezing, partial unfreezing, LoRA and layer-wise learning-rate decay of a `PropertyModel`.

Depth of a backbone parameter (what partial unfreezing and layer-wise decay read):
- inside a tower (crystal encoder, XRD encoder), the layer stack is its longest ``nn.ModuleList`` (CSPNet
  ``layers``, radius graph ``blocks``, transformer ``layers``); a parameter in layer i of any stack of the tower
  (CHGNet has parallel atom/bond/angle stacks) has depth i + 1; parameters registered before the first stacked
  parameter (embeddings, stems) have depth 0, the ones after it (final norm, pooling, readout) the depth of the
  last layer;
- the fusion sits on top of the towers: its layer i has depth D_tower + 1 + i (its input projections count with
  its first layer, its final norm with its last).
The head has depth D + 1 where D is the largest backbone depth.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from mmcrystal.finetune.config import TuningConfig
from mmcrystal.schedules import warmup_cosine

__all__ = ["tower_depths", "backbone_depths", "apply_tuning", "param_groups", "build_finetune_optimizer"]


def _stacks(module: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]


def tower_depths(module: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each parameter of one encoder (see module docstring) and the tower's number of layers L."""
    stacks = _stacks(module)
    if not stacks:
        return {name: 0 for name, _ in module.named_parameters()}, 0
    length = max(len(m) for _, m in stacks)
    stacked = [(prefix + ".", len(m)) for prefix, m in stacks if len(m) >= 2 or length == 1]
    depths: dict[str, int] = {}
    seen_stack = False
    for name, _ in module.named_parameters():
        owner = next(((p, n) for p, n in stacked if name.startswith(p)), None)
        if owner is not None:
            index = int(name[len(owner[0]) :].split(".", 1)[0])
            # a shorter parallel stack (CHGNet bond layers) is aligned with the top of the longest one
            depths[name] = index + 1 + (length - owner[1])
            seen_stack = True
        else:
            depths[name] = length if seen_stack else 0
    return depths, length


def backbone_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of every backbone parameter of a `PropertyModel` (full names) and the largest depth D."""
    depths: dict[str, int] = {}
    top = 0
    for tower, encoder in model.encoders.items():
        if tower == "text":
            continue
        local, length = tower_depths(encoder)
        top = max(top, length)
        depths.update({f"encoders.{tower}.{k}": v for k, v in local.items()})
    if model.fusion is not None:
        layers = len(model.fusion.layers)
        for name, _ in model.fusion.named_parameters():
            match = re.match(r"layers\.(\d+)\.", name)
            if match:
                depth = top + 1 + int(match.group(1))
            elif name.startswith(("norm.", "match_head.")):
                depth = top + layers
            else:
                depth = top + 1
            depths[f"fusion.{name}"] = depth
        top += layers
    return depths, top


def _tuned_modules(model: nn.Module) -> list[nn.Module]:
    mods = [enc for name, enc in model.encoders.items() if name != "text"]
    return mods + ([model.fusion] if model.fusion is not None else [])


def apply_tuning(model: nn.Module, tuning: TuningConfig) -> None:
    """Set ``requires_grad`` (and inject LoRA adapters) on a `PropertyModel` according to ``tuning``."""
    if tuning.mode == "full":
        for module in _tuned_modules(model):
            for name, param in module.named_parameters():
                param.requires_grad_(not _frozen_by_own_config(module, name))
        return
    for module in _tuned_modules(model):
        module.requires_grad_(False)
    if tuning.mode == "partial":
        depths, _ = backbone_depths(model)
        for tower in [n for n in model.encoders if n != "text"]:
            _, length = tower_depths(model.encoders[tower])
            first = length - tuning.trainable_blocks + 1  # <= 0 when every block (stem included) trains
            for name, param in model.encoders[tower].named_parameters():
                if depths[f"encoders.{tower}.{name}"] >= first:
                    param.requires_grad_(True)
        if model.fusion is not None:
            model.fusion.requires_grad_(True)  # the fusion is the top of the backbone: always among the last blocks
    elif tuning.mode == "lora":
        _inject_lora(model, tuning)


def _frozen_by_own_config(module: nn.Module, name: str) -> bool:
    """CHGNet with ``freeze=True`` keeps its weights fixed whatever the tuning mode (it runs under no_grad)."""
    return bool(getattr(getattr(module, "config", None), "freeze", False)) and name.startswith("model.")


def _default_lora_targets(encoder: nn.Module) -> list[str]:
    """Every nn.Linear inside the crystal encoder's layer stacks (message-passing MLPs and projections)."""
    stacks = [prefix + "." for prefix, m in _stacks(encoder) if len(m) >= 2] or [""]
    return [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and n.startswith(tuple(stacks))]


def _inject_lora(model: nn.Module, tuning: TuningConfig) -> None:
    """LoRA adapters (Hu et al. 2022: W x + (alpha / r) B A x, B initialised at zero) through peft."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError(
            "tuning.mode 'lora' needs peft: install the `lora` extra, pip install 'mmcrystal[lora]'"
        ) from err
    encoder = model.encoders["crystal"]
    targets = list(tuning.lora_targets) if tuning.lora_targets else _default_lora_targets(encoder)
    if not targets:
        raise ValueError(f"no nn.Linear layer to put LoRA adapters on in {type(encoder).__name__}")
    config = LoraConfig(
        r=tuning.lora_rank, lora_alpha=tuning.lora_alpha, lora_dropout=tuning.lora_dropout, target_modules=targets
    )
    inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name)


# ------------------------------------------------------------------------------------------------- optimiser
def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # same rule as mmcrystal.tasks.base: no weight decay on biases, norms and other 1-D parameters
    return param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower()


def param_groups(model: nn.Module, lr: float, weight_decay: float, tuning: TuningConfig) -> list[dict]:
    """AdamW parameter groups of the trainable parameters: (decay / no decay) x learning-rate scale.

    Head (and anything that is not backbone): ``lr``. Backbone parameter at depth d of D:
    ``lr * backbone_lr_scale * layer_lr_decay ** (D + 1 - d)``.
    """
    depths, top = backbone_depths(model)
    groups: dict[tuple[bool, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        clean = name.replace(".base_layer.", ".")  # LoRA-wrapped layers keep the depth of the layer they wrap
        depth = depths.get(clean, _lora_depth(clean, depths))
        scale = 1.0 if depth is None else tuning.backbone_lr_scale * tuning.layer_lr_decay ** (top + 1 - depth)
        groups.setdefault((_no_decay(name, param), scale), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr": lr * scale, "lr_scale": scale}
        for (no_decay, scale), params in groups.items()
    ]


def _lora_depth(name: str, depths: dict[str, int]) -> int | None:
    """Depth of a LoRA adapter parameter: that of the layer it adapts (``x.lora_A.default.weight`` -> ``x.weight``)."""
    if ".lora_" not in name:
        return None
    base = name.split(".lora_")[0] + ".weight"
    return depths.get(base)


def build_finetune_optimizer(model: nn.Module, optim, tuning: TuningConfig, total_steps: int) -> dict:
    """AdamW over `param_groups` and the warm-up + cosine schedule of `mmcrystal.tasks.base.build_optimizer`.

    Args:
        model: A `PropertyModel`.
        optim: An `OptimConfig` (``lr``, ``weight_decay``, ``betas``, ``warmup_steps``, ``min_lr_ratio``).
        tuning: The tuning recipe.
        total_steps: Optimiser steps of the run (the cosine reaches its floor there).

    Returns:
        Lightning's ``{"optimizer", "lr_scheduler": {"scheduler", "interval": "step"}}``.
    """
    groups = param_groups(model, optim.lr, optim.weight_decay, tuning)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))
    return warmup_cosine(optimizer, optim.warmup_steps, optim.min_lr_ratio, total_steps)
