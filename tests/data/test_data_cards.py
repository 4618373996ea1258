"""Data cards: every registered dataset has one, and every card names a source and a licence.

The format is defined in data_cards/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmcrystal.data.registry import DATASETS, list_datasets

CARDS = Path(__file__).resolve().parents[2] / "data_cards"
REPO = CARDS.parent
URL = re.compile(r"https?://[^\s)>\]]+")
SECTIONS = ("## Splits", "## Columns", "## Known issues", "## Citation")


def header_line(text: str, *keys: str) -> str | None:
    """The value after the first line that starts with one of ``keys`` (e.g. ``Source:``)."""
    for line in text.splitlines():
        for key in keys:
            if line.startswith(key):
                return line[len(key) :].strip()
    return None


def all_cards() -> list[Path]:
    return sorted(p for p in CARDS.glob("*.md") if p.name != "README.md")


def test_every_registered_dataset_has_a_card():
    missing = [name for name in list_datasets() if not (CARDS / f"{name}.md").is_file()]
    assert not missing, f"no data card for {missing}; write data_cards/<name>.md (format: data_cards/README.md)"


@pytest.mark.parametrize("card", all_cards(), ids=lambda p: p.name)
def test_card_names_source_and_licence(card):
    text = card.read_text()
    assert text.startswith("# "), f"{card.name}: must start with a '# <name>: <title>' heading"
    source = header_line(text, "Source:")
    assert source, f"{card.name}: needs a line starting with 'Source:'"
    generator = re.findall(r"`([\w./-]+\.py)`", source)
    assert URL.search(source) or any((REPO / g).is_file() for g in generator), (
        f"{card.name}: the Source: line must contain an http(s) URL (or, for built data, a repository path)"
    )
    licence = header_line(text, "Licence:", "License:")
    assert licence, f"{card.name}: needs a non-empty line starting with 'Licence:'"


@pytest.mark.parametrize("name", list_datasets())
def test_registered_card_matches_the_registry(name):
    card = CARDS / f"{name}.md"
    if not card.is_file():
        pytest.skip("reported by test_every_registered_dataset_has_a_card")
    text, spec = card.read_text(), DATASETS[name]
    assert text.startswith(f"# {name}:"), f"{card.name}: heading must start with '# {name}:'"
    assert header_line(text, "Reader:") == spec.reader, f"{card.name}: 'Reader:' must be {spec.reader}"
    assert spec.source.rstrip("/") in text, f"{card.name}: must name the registry source {spec.source}"
    assert f"mmcrystal download {name}" in text, f"{card.name}: needs a 'Download:' line with the command"
    missing = [s for s in SECTIONS if not re.search(rf"^{re.escape(s)}\s*$", text, re.MULTILINE)]
    assert not missing, f"{card.name}: missing sections {missing}"
    for split in spec.splits:
        assert re.search(rf"\|\s*{split}\s*\|", text), f"{card.name}: split {split!r} not in its Splits table"
