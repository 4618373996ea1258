"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest
from eval_crystals import rocksalt
from pymatgen.core import Structure


@pytest.fixture
def nacl() -> Structure:
    return rocksalt()
