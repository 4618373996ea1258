"""Config dataclasses round-trip through plain JSON, union slots included; unknown types are refused."""

from __future__ import annotations

import json

import pytest

from encoders import RadiusGraphConfig, TextConfig, xrd_config
from mmcrystal.config import config_from_dict, config_to_dict
from mmcrystal.model import AlignmentModelConfig


def test_roundtrip_with_union_slots_and_tuples():
    cfg = AlignmentModelConfig(
        modalities=["crystal", "text", "xrd"], crystal=RadiusGraphConfig(cutoff=5.0), text=TextConfig("tiny-random"),
        xrd=xrd_config(1024),
    )  # fmt: skip
    data = json.loads(json.dumps(config_to_dict(cfg)))
    back = config_from_dict(data)
    assert back == cfg
    assert isinstance(back.crystal, RadiusGraphConfig) and isinstance(back.xrd.stem_strides, tuple)


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown config type"):
        config_from_dict({"class_path": "os.system", "init_args": {"command": "true"}})
