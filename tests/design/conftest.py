"""Fixtures of the design tests: the toy problem's training structures (see design_toys.py)."""

from __future__ import annotations

import pytest
from design_toys import write_reference


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory) -> tuple[str, str]:
    """(folder of 30 toy training CIFs, cache folder for the reference index)."""
    root = tmp_path_factory.mktemp("design_reference")
    return write_reference(root / "train", n=30), str(root / "cache")
