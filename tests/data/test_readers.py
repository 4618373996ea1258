"""Each reader yields the same crystal, id, properties and captions from its format."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from corpus import GOOD

from mmcrystal.data.readers import SourceSpec, detect_kind, parse_captions, read_source
from mmcrystal.data.validation import ValidationConfig, validate_record


def _validated(spec):
    out = []
    for raw in read_source(spec):
        result = validate_record(raw, ValidationConfig())
        assert not hasattr(result, "reason"), result
        out.append(result)
    return out


def test_cif_folder_with_sidecar(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.cif").write_text(GOOD.to(fmt="cif"))
    pd.DataFrame({"id": ["a", "b"], "band_gap": [1.5, 2.5], "caption": ["first", "second"]}).to_csv(
        folder / "metadata.csv", index=False
    )
    assert detect_kind(str(folder)) == "cif_dir"
    records = _validated(SourceSpec(str(folder)))
    assert [r.id for r in records] == ["a", "b"]
    assert records[1].properties == {"band_gap": 2.5}
    assert records[1].captions == ["second"]
    assert records[0].structure.matches(GOOD)


def test_extxyz(tmp_path):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for i in range(3):
        atoms = AseAtomsAdaptor.get_atoms(GOOD)
        atoms.info.update({"material_id": f"x{i}", "energy": -float(i), "caption": f"frame {i}"})
        frames.append(atoms)
    path = tmp_path / "set.extxyz"
    write(path, frames, format="extxyz")
    records = _validated(SourceSpec(str(path)))
    assert [r.id for r in records] == ["x0", "x1", "x2"]
    assert records[2].properties["energy"] == -2.0
    assert records[1].captions == ["frame 1"]
    assert records[0].structure.matches(GOOD)


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "material_id": ["h1", "h2"],
            "structure": [json.dumps(GOOD.as_dict()), json.dumps(GOOD.as_dict())],
            "band_gap": [0.5, 1.0],
        }
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    records = _validated(SourceSpec(str(tmp_path / "hf")))
    assert [r.id for r in records] == ["h1", "h2"]
    assert records[1].properties == {"band_gap": 1.0}


def test_jsonl_and_json_list(tmp_path):
    lines = [{"id": f"j{i}", "structure": GOOD.as_dict(), "properties": {"e": i}, "captions": ["c"]} for i in range(2)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    (tmp_path / "b.json").write_text(json.dumps(lines))
    for name in ("a.jsonl", "b.json"):
        records = _validated(SourceSpec(str(tmp_path / name)))
        assert [r.id for r in records] == ["j0", "j1"]
        assert records[1].properties == {"e": 1.0} and records[1].captions == ["c"]


def test_real_cdvae_and_chemeleon_tables(shared_data):
    spec = SourceSpec(str(shared_data / "perov_5" / "test.csv"))
    first = next(read_source(spec))
    assert set(first.properties) == {"heat_all", "heat_ref", "dir_gap", "ind_gap"}
    assert first.captions is None
    mp40 = next(read_source(SourceSpec(str(shared_data / "mp_40_text" / "test.csv"))))
    assert mp40.captions and mp40.id.startswith("mp-")
    assert "density" not in mp40.properties and "band_gap" in mp40.properties


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("one caption", ["one caption"]),
        ("['a', 'b']", ["a", "b"]),
        ("", []),
        (float("nan"), []),
        ("[broken", ["[broken"]),
    ],
)
def test_parse_captions(cell, expected):
    assert parse_captions(cell) == expected


def test_aflow_and_robocrys_formats(shared_data):
    aflow = list(read_source(SourceSpec(str(shared_data / "aflow_sp_metals_dos_fermi" / "sp_metal_aflow_844.json"))))
    assert len(aflow) == 844
    first = validate_record(aflow[0], ValidationConfig())
    assert len(first.structure) > 0 and "dos_fermi_6" in first.properties
    minerals = list(read_source(SourceSpec(str(shared_data / "robocrys_mineral_prototypes" / "mineral_db.json.gz"))))
    assert len(minerals) == len({m.id for m in minerals}) == 180
    cinnabar = next(m for m in minerals if m.id.endswith(":Cinnabar"))
    assert cinnabar.captions == ["Cinnabar structure type"]
    assert validate_record(cinnabar, ValidationConfig()).structure.composition.reduced_formula == "HgS"
