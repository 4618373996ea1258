"""Malformed-input corpus: every kind of bad record gets its named reason; every bad file a clear error."""

from __future__ import annotations

import gzip
import json
import math

import pandas as pd
import pytest
from corpus import CSV_ROWS, GOOD, GOOD_CIF, JSONL_LINES, partial_occupancy_cif

from mmcrystal.data.prepare import PrepareConfig, prepare_sources
from mmcrystal.data.readers import DataFileError, SourceSpec, read_source
from mmcrystal.data.record import CrystalRecord, RawRecord, Rejection
from mmcrystal.data.validation import REASONS, ValidationConfig, validate_record


def _write_csv(path, rows):
    frame = pd.DataFrame(
        [{"material_id": r[0], "cif": r[1], "band_gap": r[2], "prompt": r[3]} for r in rows],
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def bad_csv(tmp_path):
    return _write_csv(tmp_path / "train.csv", CSV_ROWS)


@pytest.fixture
def bad_jsonl(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_text("\n".join(line for line, _ in JSONL_LINES) + "\n")
    return path


def test_every_bad_record_gets_its_reason(tmp_path, bad_csv, bad_jsonl):
    cfg = PrepareConfig(samples_per_shard=4, workers=0, validation=ValidationConfig(max_atoms=40))
    manifest = prepare_sources(
        [SourceSpec(str(bad_csv)), SourceSpec(str(bad_jsonl), split="train")], tmp_path / "out", cfg, progress=False
    )
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rejects}
    expected = [(r[0], r[4]) for r in CSV_ROWS] + [
        (json.loads(l)["id"] if l.startswith('{"id"') and l.endswith("}") else None, reason)
        for l, reason in JSONL_LINES
    ]
    wanted_rejections = [(rid, reason) for rid, reason in expected if reason]
    assert len(rejects) == len(wanted_rejections)
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons == sorted(reason for _, reason in wanted_rejections)
    for rid, reason in wanted_rejections:
        if rid and rid in by_id and rid != "good-1":
            assert by_id[rid]["reason"] == reason, by_id[rid]
    for r in rejects:
        assert r["reason"] in REASONS
        assert r["location"].startswith(str(tmp_path)), r  # the record's file (and row/line) is named
        assert r["detail"]
    split = manifest["splits"]["train"]
    n_good = sum(1 for _, reason in expected if reason is None)
    assert split["accepted"] == n_good
    assert split["accepted"] + split["rejected"] == split["records_read"] == len(expected)
    assert sum(split["rejected_by_reason"].values()) == split["rejected"]


def test_nan_property_dropped_or_rejected():
    raw = RawRecord("x", "f:1", cif=GOOD_CIF, properties={"gap": math.nan, "e": -1.0})
    kept = validate_record(raw, ValidationConfig())
    assert isinstance(kept, CrystalRecord) and kept.properties == {"e": -1.0}
    rejected = validate_record(raw, ValidationConfig(drop_nonfinite_properties=False))
    assert isinstance(rejected, Rejection) and rejected.reason == "non_finite_property"


def test_partial_occupancy_ordering_option():
    raw = RawRecord("p", "f:1", cif=partial_occupancy_cif())
    assert validate_record(raw, ValidationConfig()).reason == "partial_occupancy"
    ordered = validate_record(raw, ValidationConfig(ordering="majority"))
    assert isinstance(ordered, CrystalRecord)
    assert ordered.structure.is_ordered and len(ordered.structure) == 2


def test_chemeleon_caption_lists_are_parsed(tmp_path, bad_csv):
    records = {r.id: r for r in reversed(list(read_source(SourceSpec(str(bad_csv)))))}  # first occurrence wins
    assert records["good-2"].captions == ["first caption", "second caption"]
    assert records["good-1"].captions == ["rock salt NaCl"]
    assert records["no-caption"].captions == []


# ------------------------------------------------------------------------------------------- bad files
def _corrupt_gzip(path):
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate" * 10)
    return path


BAD_FILES = {
    "missing file": lambda d: (d / "nope.csv", "csv"),
    "csv without cif column": lambda d: (_csv_text(d / "a.csv", "material_id,formula\nmp-1,NaCl\n"), "csv"),
    "csv without id column": lambda d: (_csv_text(d / "b.csv", 'cif,formula\n"x",NaCl\n'), "csv"),
    "empty csv": lambda d: (_csv_text(d / "c.csv", ""), "csv"),
    "unterminated quote": lambda d: (_csv_text(d / "d.csv", 'material_id,cif\nmp-1,"data_x\n'), "csv"),
    "corrupt gzip csv": lambda d: (_corrupt_gzip(d / "e.csv.gz"), "csv"),
    "corrupt gzip jsonl": lambda d: (_corrupt_gzip(d / "f.jsonl.gz"), "jsonl"),
    "invalid json list": lambda d: (_csv_text(d / "g.json", '[{"id": 1}, '), "jsonl"),
    "unknown extension": lambda d: (_csv_text(d / "h.parquetx", "x"), "auto"),
    "folder without cifs": lambda d: ((d / "emptydir").mkdir() or d / "emptydir", "auto"),
    "garbage extxyz": lambda d: (_csv_text(d / "i.extxyz", "3\nnot a comment line = [\nH 0 0\n"), "ase"),
    "missing property column": lambda d: (_csv_text(d / "j.csv", f'material_id,cif\nmp-1,"{GOOD_CIF}"\n'), "csv-props"),
}


def _csv_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_clear_error(tmp_path, case):
    path, kind = BAD_FILES[case](tmp_path)
    spec = SourceSpec(str(path), kind="csv" if kind == "csv-props" else kind)
    if kind == "csv-props":
        spec.property_columns = ["band_gap"]
    with pytest.raises(DataFileError) as info:
        list(read_source(spec))
    assert str(path) in str(info.value)
    assert info.value.reason


def test_unterminated_quote_names_line(tmp_path):
    path = _csv_text(tmp_path / "q.csv", 'material_id,cif\nmp-1,"ok"\nmp-2,"data_x\nmore\n')
    with pytest.raises(DataFileError) as info:
        list(read_source(SourceSpec(str(path))))
    assert info.value.line is not None


def test_bad_file_in_prepare_names_file(tmp_path):
    path = _csv_text(tmp_path / "train.csv", "material_id,formula\nmp-1,NaCl\n")
    with pytest.raises(DataFileError, match="train.csv"):
        prepare_sources([SourceSpec(str(path))], tmp_path / "out", PrepareConfig(workers=0), progress=False)


def test_gzip_csv_and_structure_roundtrip(tmp_path):
    path = tmp_path / "val.csv.gz"
    with gzip.open(path, "wt") as handle:
        pd.DataFrame([{"material_id": "m", "cif": GOOD_CIF}]).to_csv(handle, index=False)
    (record,) = list(read_source(SourceSpec(str(path))))
    result = validate_record(record, ValidationConfig())
    assert isinstance(result, CrystalRecord)
    assert result.structure.matches(GOOD)
    assert SourceSpec(str(path)).resolved_split() == "val"
