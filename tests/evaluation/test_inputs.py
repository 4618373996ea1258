"""Sample sources: CSV of CIFs, CIF folders, extxyz and prepared shard folders all read the same structures."""

from __future__ import annotations

from eval_crystals import cesium_chloride, rocksalt, write_csv

from mmcrystal.data.record import CrystalRecord
from mmcrystal.data.shards import encode_record, write_shard
from mmcrystal.evaluation.inputs import iter_sample_records, parse_sample


def _formulas(path) -> list[str]:
    out = []
    for record in iter_sample_records(str(path)):
        structure, reason = parse_sample(record)
        out.append(structure.composition.reduced_formula if structure is not None else reason)
    return out


def test_every_source_kind_gives_the_same_structures(tmp_path):
    structures = {"a": rocksalt(), "b": cesium_chloride(), "c": rocksalt(6.3, "K", "Cl")}
    expected = ["NaCl", "NaCl", "KCl"]
    assert _formulas(write_csv(tmp_path / "s.csv", structures)) == expected
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, s in structures.items():
        s.to(filename=str(folder / f"{name}.cif"))
    assert _formulas(folder) == expected
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    write(tmp_path / "s.extxyz", [AseAtomsAdaptor.get_atoms(s) for s in structures.values()])
    assert _formulas(tmp_path / "s.extxyz") == expected
    shards = tmp_path / "shards"
    shards.mkdir()
    samples = [(name, encode_record(CrystalRecord(name, s))) for name, s in structures.items()]
    write_shard(shards / "test-000000.tar", samples)
    assert _formulas(shards) == expected
    assert [r.index for r in iter_sample_records(str(shards))] == [0, 1, 2]


def test_bad_records_are_reasons_not_exceptions(tmp_path):
    path = tmp_path / "s.csv"
    write_csv(path, {"good": rocksalt()})
    with open(path, "a") as handle:
        handle.write('bad,"not a cif"\nempty,\n')
    assert _formulas(path)[0] == "NaCl"
    reasons = _formulas(path)[1:]
    assert reasons[0].startswith("unparsable") and reasons[1].startswith("unparsable_structure")
