"""Self-contained model folders: ``save_pretrained(dir)`` / ``from_pretrained(dir)``.

A folder holds ``config.json`` (plain JSON with type tags, see `mmcrystal.config`), ``model.safetensors`` and, for
a text encoder, its tokenizer and architecture config. Loading needs neither the run folder nor the network nor
the Hugging Face cache, and never unpickles anything: safetensors holds tensors only, JSON holds configs only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmcrystal.config import config_from_dict, config_to_dict

__all__ = ["save_pretrained", "load_pretrained", "resolve_text_paths"]

TEXT_FOLDER = "text_backbone"


def _text_encoders(module: torch.nn.Module):
    from encoders import TextEncoder

    return [m for m in module.modules() if isinstance(m, TextEncoder)]


def save_pretrained(module: torch.nn.Module, config, folder: str | Path, kind: str, extra: dict | None = None) -> Path:
    """Write ``module``'s weights and ``config`` to ``folder``.

    Args:
        module: The model; its state dict must hold tensors only.
        config: Its config dataclass.
        folder: Output folder (created).
        kind: Class name recorded for `load_pretrained` (e.g. ``MultimodalCrystalModel``).
        extra: JSON-serialisable metadata stored beside the config (training data, metrics, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(config)
    texts = _text_encoders(module)
    if texts:  # make the folder independent of the hub/cache: keep the tokenizer and the architecture
        texts[0].tokenizer.save_pretrained(folder / TEXT_FOLDER)
        backbone = texts[0].backbone
        getattr(backbone, "base_model", backbone).config.save_pretrained(folder / TEXT_FOLDER)
        _retarget_text_config(config_dict)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(_dedupe_shared(state), str(folder / "model.safetensors"))
    meta = {"kind": kind, "config": config_dict, "extra": extra or {}}
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    return folder


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights): store copies
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen and tensor.numel() else tensor
        seen.add(ptr)
    return out


def _retarget_text_config(node) -> None:
    """Point every TextConfig at the folder's copy of the tokenizer/architecture, weights from safetensors."""
    if isinstance(node, dict):
        if str(node.get("class_path", "")).endswith(".TextConfig"):
            node["init_args"].update(model_name=f"@pretrained/{TEXT_FOLDER}", pretrained=False)
        for value in node.values():
            _retarget_text_config(value)
    elif isinstance(node, list):
        for value in node:
            _retarget_text_config(value)


def resolve_text_paths(node, folder: Path) -> None:
    """Point ``@pretrained/...`` text model names at ``folder``: in ``{"class_path", "init_args"}`` nodes and in the
    plain dicts that exports written before configs carried class paths use."""
    if isinstance(node, dict):
        args = node.get("init_args") if isinstance(node.get("init_args"), dict) else node
        name = args.get("model_name")
        if isinstance(name, str) and name.startswith("@pretrained/"):
            args["model_name"] = str(folder / name.removeprefix("@pretrained/"))
            args["local_files_only"] = True
        for value in node.values():
            resolve_text_paths(value, folder)
    elif isinstance(node, list):
        for value in node:
            resolve_text_paths(value, folder)


def load_pretrained(folder: str | Path, builder, map_location: str | torch.device = "cpu"):
    """Rebuild a module from a folder written by `save_pretrained`.

    Args:
        folder: The folder.
        builder: Callable ``config -> module`` (usually the model class).
        map_location: Device for the weights.

    Returns:
        ``(module, extra)``.
    """
    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    resolve_text_paths(meta["config"], folder)
    module = builder(config_from_dict(meta["config"]))
    state = load_file(str(folder / "model.safetensors"), device=str(map_location))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise RuntimeError(
            f"{folder}: weights do not fit the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return module, meta.get("extra", {})
