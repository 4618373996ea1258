"""`prepare` on real MP-20 rows: shards + manifest, counts that add up, idempotent re-runs and resume."""

from __future__ import annotations

import json

import pytest

from mmcrystal.data.prepare import PrepareConfig, prepare, prepare_sources
from mmcrystal.data.readers import SourceSpec
from mmcrystal.data.shards import iter_shard


@pytest.fixture(scope="module")
def mp20_prepared(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("mp20")
    src = shared_data / "mp_20" / "val.csv.gz"
    cfg = PrepareConfig(samples_per_shard=100, workers=2, limit=300)
    manifest = prepare_sources([SourceSpec(str(src), split="val")], out, cfg, progress=False)
    return out, manifest


def test_counts_add_up(mp20_prepared):
    out, manifest = mp20_prepared
    split = manifest["splits"]["val"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    in_shards = [key for shard in split["shards"] for key, _ in iter_shard(str(out / shard["file"]))]
    assert split["records_read"] == 300
    assert len(in_shards) == split["accepted"] == sum(s["samples"] for s in split["shards"])
    assert len(rejects) == split["rejected"]
    assert split["accepted"] + split["rejected"] == 300
    ids = [
        json.loads(files["meta.json"])["id"] for s in split["shards"] for _, files in iter_shard(str(out / s["file"]))
    ]
    assert len(set(ids) | {r["id"] for r in rejects}) == 300


def test_manifest_contents(mp20_prepared):
    _, manifest = mp20_prepared
    assert manifest["property_names"] == ["band_gap", "e_above_hull", "formation_energy_per_atom"]
    stats = manifest["stats"]["val"]
    assert sum(stats["num_atoms_histogram"].values()) == manifest["splits"]["val"]["accepted"]
    assert max(int(k) for k in stats["num_atoms_histogram"]) <= 20  # MP-20: at most 20 atoms
    assert 2 < stats["lattice"]["a"]["mean"] < 15
    assert manifest["normalization"]["reference_split"] == "val"
    assert manifest["sources"][0]["sha256"] and manifest["software"]["pymatgen"]
    assert len(manifest["splits"]["val"]["shards"]) == 3


def test_rerun_is_idempotent_and_resumes(tmp_path, shared_data):
    src = SourceSpec(str(shared_data / "perov_5" / "test.csv"), split="test")
    cfg = PrepareConfig(samples_per_shard=40, workers=0, limit=120)
    first = prepare_sources([src], tmp_path, cfg, progress=False)
    shard_bytes = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")}
    second = prepare_sources([src], tmp_path, cfg, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")} == mtimes  # nothing rewritten
    assert first["splits"] == second["splits"]
    # an interrupted run: one shard missing, one half-written
    (tmp_path / "test-00001.tar").unlink()
    (tmp_path / "test-00002.tar").write_bytes(b"truncated")
    third = prepare_sources([src], tmp_path, cfg, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == shard_bytes  # deterministic bytes
    assert third["splits"] == first["splits"]


def test_prepare_function_with_split_syntax(tmp_path, shared_data):
    path = shared_data / "carbon_24" / "val.csv"
    manifest = prepare(str(tmp_path), inputs=[f"train={path}"], limit=30, workers=0, progress=False)
    assert manifest["splits"]["train"]["accepted"] == 30
    assert manifest["property_names"] == ["energy_per_atom"]


def test_webdataset_reads_our_shards(mp20_prepared):
    import webdataset as wds

    out, manifest = mp20_prepared
    url = str(out / manifest["splits"]["val"]["shards"][0]["file"])
    sample = next(iter(wds.WebDataset(url, shardshuffle=False).decode()))
    assert sample["z.npy"].dtype.name == "uint8" and sample["lattice.npy"].shape == (3, 3)
    assert "id" in sample["meta.json"]


def test_symmetry_labels_agree_with_materials_project(mp20_prepared, shared_data):
    import pandas as pd

    out, manifest = mp20_prepared
    reference = pd.read_csv(shared_data / "mp_20" / "val.csv.gz", nrows=300).set_index("material_id")
    metas = [
        json.loads(files["meta.json"])
        for s in manifest["splits"]["val"]["shards"]
        for _, files in iter_shard(str(out / s["file"]))
    ]
    agree = [m["symmetry"]["spacegroup"] == reference.loc[m["id"], "spacegroup.number"] for m in metas]
    assert sum(agree) / len(agree) > 0.95  # MP's own labels used a similar tolerance
    assert {m["symmetry"]["crystal_system"] for m in metas} >= {"cubic", "hexagonal", "orthorhombic", "monoclinic"}


def test_exclude_lists_leave_held_out_ids_out(tmp_path, shared_data):
    import pandas as pd

    path = shared_data / "carbon_24" / "val.csv"
    ids = pd.read_csv(path, usecols=["material_id"], nrows=30).material_id.astype(str).tolist()
    (tmp_path / "held_out.txt").write_text("# test ids\n" + "\n".join(ids[:4]) + "\n")
    pd.DataFrame({"material_id": ids[4:6]}).to_csv(tmp_path / "held_out.csv", index=False)
    manifest = prepare(str(tmp_path / "out"), inputs=[f"train={path}"], limit=30, workers=0, progress=False,
                       exclude=[str(tmp_path / "held_out.txt"), str(tmp_path / "held_out.csv")])  # fmt: skip
    train = manifest["splits"]["train"]
    assert train["rejected_by_reason"].get("excluded_id") == 6
    assert train["accepted"] == 30  # the limit counts kept records: six more were read in their place
    kept = {json.loads(files["meta.json"])["id"] for shard in sorted((tmp_path / "out").glob("train-*.tar"))
            for _, files in iter_shard(str(shard))}  # fmt: skip
    assert len(kept) == 30 and not kept & set(ids[:6]) and set(ids[6:]) <= kept
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rejects if r["reason"] == "excluded_id"} == set(ids[:6])
    assert manifest["config"]["exclude"] == [str(tmp_path / "held_out.txt"), str(tmp_path / "held_out.csv")]
    with pytest.raises(FileNotFoundError, match="exclude list"):
        prepare(str(tmp_path / "x"), inputs=[f"train={path}"], limit=3, workers=0, progress=False,
                exclude=[str(tmp_path / "missing.txt")])  # fmt: skip
