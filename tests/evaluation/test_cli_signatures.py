"""`evaluate` and `evaluate_csp` are typed, documented functions: jsonargparse builds their --help from them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", ["evaluate", "evaluate_csp"])
def test_help_is_built_from_the_signature(name, capsys):
    from jsonargparse import CLI

    from mmcrystal.evaluation import run

    with pytest.raises(SystemExit) as exit_info:
        CLI(getattr(run, name), args=["--help"], prog=f"mmcrystal {name}", as_positional=True)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--workers" in text and "(required, type: str)" in text
    if name == "evaluate":
        assert "--stability_thresholds" in text and "StructureMatcher site tolerance" in text
