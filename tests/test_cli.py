"""The console script: fast top-level help, --help for every command, commands callable as functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmcrystal.cli import COMMANDS, main, resolve


def test_top_level_help_imports_nothing_heavy():
    code = (
        "import sys; from mmcrystal.cli import main; main(['--help']); "
        "heavy = [m for m in ('torch', 'pymatgen', 'lightning', 'transformers', 'pandas') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"mmcrystal {name}" in out
    assert callable(resolve(name))


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "unknown command" in capsys.readouterr().err


def test_prepare_via_cli_with_nested_validation_option(tmp_path, shared_data):
    src = shared_data / "perov_5" / "test.csv"
    main(["prepare", str(tmp_path), "--inputs+", f"test={src}", "--limit", "20", "--workers", "0",
          "--validation.max_atoms", "4", "--progress", "false"])  # fmt: skip
    import json

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["splits"]["test"]["rejected_by_reason"] == {"too_many_atoms": 20}  # Perov-5 cells have 5 atoms
    assert manifest["config"]["validation"]["max_atoms"] == 4
