"""`encoders` and every submodule import without lightning, pymatgen, mmcrystal or optional backends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Heavy or optional libraries that must load only when an encoder needing them is BUILT.
FORBIDDEN = ["lightning", "pytorch_lightning", "pymatgen", "mmcrystal", "chgnet", "transformers", "timm", "peft"]

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import encoders
    names = [m.name for m in pkgutil.walk_packages(encoders.__path__, "encoders.")]
    for name in names:
        importlib.import_module(name)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
    print(json.dumps({"submodules": names, "forbidden_loaded": loaded}))
    """
)


def test_encoders_import_in_isolation():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(FORBIDDEN)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # the walk really visited the package (crystal, spectrum, image, text and layers modules)
    for expected in ["encoders.base", "encoders.crystal.chgnet_backbone", "encoders.text.encoder"]:
        assert expected in report["submodules"]
    assert report["forbidden_loaded"] == []
