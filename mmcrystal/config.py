"""Config dataclasses <-> plain JSON dicts, so checkpoints and ``from_pretrained`` folders hold no pickled objects.

Every dataclass is written as ``{"class_path": "module.Class", "init_args": {fields}}``, the form jsonargparse
(and so LightningCLI, which re-reads a checkpoint's hyperparameters for ``--ckpt_path``) understands, which lets
union slots (a crystal encoder may be CSPNet, radius-graph or CHGNet) round-trip. Only classes registered here (all
encoder configs and mmcrystal's own) can be rebuilt, looked up by name: reading a config never imports or calls
arbitrary code.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

__all__ = ["config_to_dict", "config_from_dict", "register_config"]

_CONFIG_TYPES: dict[str, type] = {}


def register_config(cls: type) -> type:
    """Class decorator: allow ``config_from_dict`` to rebuild this dataclass."""
    _CONFIG_TYPES[cls.__name__] = cls
    return cls


def _known_types(module: str | None = None) -> dict[str, type]:
    import importlib

    import encoders

    # only this project's own modules are ever imported, to let their configs register themselves
    if module and module.split(".")[0] in ("mmcrystal", "encoders"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    for name in ("mmcrystal.model", "mmcrystal.fusion.cross_attention", "mmcrystal.tasks.alignment"):
        importlib.import_module(name)

    for name in encoders.__all__:
        obj = getattr(encoders, name)
        if dataclasses.is_dataclass(obj) and isinstance(obj, type):
            _CONFIG_TYPES.setdefault(obj.__name__, obj)
    return _CONFIG_TYPES


def config_to_dict(value: Any) -> Any:
    """A dataclass (possibly nested, in lists/dicts) -> JSON-compatible structure with type tags."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        args = {f.name: config_to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}
    if isinstance(value, (list, tuple)):
        return [config_to_dict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): config_to_dict(v) for k, v in value.items()}
    return value


def config_from_dict(value: Any) -> Any:
    """Inverse of `config_to_dict`. Lists become tuples where the dataclass field's default is a tuple."""
    module = None
    if isinstance(value, dict) and "class_path" in value and set(value) <= {"class_path", "init_args"}:
        module, _, name = value["class_path"].rpartition(".")
        value = {"__type__": name, **(value.get("init_args") or {})}
    if isinstance(value, dict) and "__type__" in value:
        types = _known_types(module)
        name = value["__type__"]
        if name not in types:
            raise ValueError(f"unknown config type {name!r}; known: {sorted(types)}")
        cls = types[name]
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in value:
                continue
            item = config_from_dict(value[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(item, list) and isinstance(default, tuple):
                item = tuple(item)
            kwargs[f.name] = item
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)} - {"__type__"}
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {sorted(unknown)}")
        return cls(**kwargs)
    if isinstance(value, list):
        return [config_from_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: config_from_dict(v) for k, v in value.items()}
    return value
