"""Readers: source files -> `RawRecord`s, lazily, with a ``path:line`` location on every record.

Supported sources (``kind`` is detected from the path when ``auto``):

=============  ==========================================================================================
``csv``        CDVAE/DiffCSP-style table with a ``cif`` column (``.csv`` or ``.csv.gz``); Chemeleon-style
               tables add a ``prompt`` column (one caption, or a Python-list string of captions).
``cif_dir``    A folder of ``*.cif`` files (id = file stem) with an optional sidecar table
               (``metadata.csv`` / ``index.csv``, or ``sidecar=``) holding ``id`` + properties + ``caption``.
``ase``        Anything ``ase.io.iread`` reads (``.extxyz``, ``.xyz``, ``.traj``, ...); ``atoms.info`` gives the
               id (``id``/``material_id``), float properties and ``caption``.
``hf``         A Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk`` or ``hf:<name>[@split]``,
               with a ``cif`` column or a ``structure`` column of pymatgen dicts (or their JSON text).
``jsonl``      JSON lines (``.jsonl``/``.jsonl.gz``); each line a pymatgen Structure dict, or an object with
               ``structure`` + optional ``id``, ``properties``, ``captions``.
=============  ==========================================================================================

A file that cannot be read at all raises `DataFileError` naming the file (and line where known). A record that
cannot be decoded is yielded with ``error`` set, so validation counts it as a rejection.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmcrystal.data.record import RawRecord

__all__ = ["SourceSpec", "DataFileError", "read_source", "detect_kind", "parse_captions"]

SourceKind = Literal["auto", "csv", "cif_dir", "ase", "hf", "jsonl"]

ID_COLUMNS = ("material_id", "id", "mp_id", "name")
CAPTION_COLUMNS = ("prompt", "captions", "caption", "text", "description")
# Float columns that describe the structure itself rather than a target property.
NON_PROPERTY_COLUMNS = {"volume", "density", "atomic_density", "pressure", "Unnamed: 0", "index"}
ASE_SUFFIXES = {".extxyz", ".xyz", ".traj", ".db", ".vasp", ".poscar", ".res"}


class DataFileError(ValueError):
    """A source file that cannot be read as a whole. The message names the file and, where known, the line."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass
class SourceSpec:
    """One input of `mmcrystal prepare`.

    Attributes:
        path: File, folder, or ``hf:<dataset name>[@split]``.
        split: Split the records belong to; defaults to the file stem when it is train/val/test, else ``train``.
        kind: Reader to use; ``auto`` detects it from the path.
        id_column: Column holding the material id (auto: the first of material_id, id, mp_id, name).
        cif_column: Column holding CIF text.
        caption_column: Column holding captions (auto: prompt, captions, caption, text, description).
        property_columns: Columns read as float properties (auto: every float column except structure-derived
            ones such as volume and density).
        sidecar: Table of per-file metadata for ``cif_dir`` sources.
    """

    path: str
    split: str | None = None
    kind: SourceKind = "auto"
    id_column: str | None = None
    cif_column: str = "cif"
    caption_column: str | None = None
    property_columns: list[str] | None = None
    sidecar: str | None = None
    _resolved_kind: str = field(default="", repr=False)

    def resolved_split(self) -> str:
        if self.split:
            return self.split
        stem = Path(self.path).name.split(".")[0].lower()
        for name in ("train", "val", "test"):
            if stem == name or stem.startswith(name + "_") or stem.endswith("_" + name):
                return name
        return "train"


def detect_kind(path: str) -> str:
    """Guess the reader from a path (see the module table)."""
    if path.startswith("hf:"):
        return "hf"
    p = Path(path)
    if not p.exists():
        raise DataFileError(path, "no such file or folder")
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return "hf"
        if any(p.glob("*.cif")):
            return "cif_dir"
        raise DataFileError(path, "folder holds neither *.cif files nor a saved Hugging Face dataset")
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return "jsonl"
    if p.suffix.lower() in ASE_SUFFIXES:
        return "ase"
    raise DataFileError(path, f"cannot tell the format from the name {p.name!r}; pass kind=")


def parse_captions(value) -> list[str]:
    """A caption cell -> list of captions. Accepts one string or a Python/JSON list string of strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:  # literal_eval evaluates literals only, never code
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list):
            return [str(v).strip() for v in parsed if str(v).strip()]
    return [text] if text else []


def read_source(spec: SourceSpec) -> Iterator[RawRecord]:
    """Yield raw records from one source, lazily."""
    kind = spec.kind if spec.kind != "auto" else detect_kind(spec.path)
    readers = {
        "csv": _read_csv,
        "cif_dir": _read_cif_dir,
        "ase": _read_ase,
        "hf": _read_hf,
        "jsonl": _read_jsonl,
    }
    yield from readers[kind](spec)


# --------------------------------------------------------------------------------------------------- tables
def _load_table(path: str):
    import pandas as pd

    try:
        return pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except Exception as exc:  # noqa: BLE001 - pandas, gzip and zlib raise many types for a broken file
        line = _line_from_message(str(exc))
        raise DataFileError(path, f"unreadable table ({type(exc).__name__}: {str(exc)[:160]})", line) from None


def _line_from_message(message: str) -> int | None:
    import re

    match = re.search(r"line (\d+)", message)
    if match:
        return int(match.group(1))
    # pandas' C tokenizer counts rows from 0 with the header as row 0, so file line = row + 1
    match = re.search(r"row (\d+)", message)
    return int(match.group(1)) + 1 if match else None


def _pick(columns, wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    if wanted:
        return wanted if wanted in columns else None
    return next((c for c in candidates if c in columns), None)


def _property_columns(frame, spec: SourceSpec, used: set[str]) -> list[str]:
    if spec.property_columns is not None:
        missing = [c for c in spec.property_columns if c not in frame.columns]
        if missing:
            raise DataFileError(spec.path, f"property column(s) {missing} not in table columns {list(frame.columns)}")
        return list(spec.property_columns)
    return [c for c in frame.columns if c not in used and c not in NON_PROPERTY_COLUMNS and frame[c].dtype.kind == "f"]


def _read_csv(spec: SourceSpec) -> Iterator[RawRecord]:
    frame = _load_table(spec.path)
    if spec.cif_column not in frame.columns:
        raise DataFileError(spec.path, f"no {spec.cif_column!r} column (columns: {list(frame.columns)[:12]})", 1)
    id_col = _pick(frame.columns, spec.id_column, ID_COLUMNS)
    if id_col is None:
        raise DataFileError(spec.path, f"no id column (looked for {spec.id_column or ID_COLUMNS})", 1)
    cap_col = _pick(frame.columns, spec.caption_column, CAPTION_COLUMNS)
    props = _property_columns(frame, spec, {id_col, spec.cif_column, cap_col or ""})
    ids = frame[id_col].tolist()
    cifs = frame[spec.cif_column].tolist()
    captions = frame[cap_col].tolist() if cap_col else None
    prop_values = {name: frame[name].tolist() for name in props}
    for row, (mid, cif) in enumerate(zip(ids, cifs, strict=True)):
        yield RawRecord(
            id=_clean_id(mid),
            location=f"{spec.path}:row {row + 1}",
            cif=cif if isinstance(cif, str) else None,
            properties={name: values[row] for name, values in prop_values.items()},
            captions=parse_captions(captions[row]) if captions is not None else None,
            error=None if isinstance(cif, str) else ("unparsable_structure", "empty cif cell"),
        )


def _clean_id(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


# --------------------------------------------------------------------------------------------------- cif folder
def _read_cif_dir(spec: SourceSpec) -> Iterator[RawRecord]:
    folder = Path(spec.path)
    meta: dict[str, dict] = {}
    sidecar = (
        Path(spec.sidecar)
        if spec.sidecar
        else next((folder / n for n in ("metadata.csv", "index.csv") if (folder / n).exists()), None)
    )
    if sidecar is not None:
        frame = _load_table(str(sidecar))
        id_col = _pick(frame.columns, spec.id_column, ID_COLUMNS)
        if id_col is None:
            raise DataFileError(sidecar, f"sidecar table has no id column (looked for {ID_COLUMNS})", 1)
        cap_col = _pick(frame.columns, spec.caption_column, CAPTION_COLUMNS)
        props = _property_columns(frame, spec, {id_col, cap_col or ""})
        for _, row in frame.iterrows():
            meta[_clean_id(row[id_col])] = {
                "properties": {p: row[p] for p in props},
                "captions": parse_captions(row[cap_col]) if cap_col else None,
            }
    for path in sorted(folder.glob("*.cif")):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            yield RawRecord(path.stem, str(path), error=("unparsable_structure", f"unreadable file: {exc}"))
            continue
        extra = meta.get(path.stem, {})
        yield RawRecord(
            path.stem,
            f"{path}:1",
            cif=text,
            properties=extra.get("properties", {}),
            captions=extra.get("captions"),
        )


# --------------------------------------------------------------------------------------------------- ASE
def _read_ase(spec: SourceSpec) -> Iterator[RawRecord]:
    from ase.io import iread
    from pymatgen.io.ase import AseAtomsAdaptor

    stem = Path(spec.path).stem
    frames = iread(spec.path, index=":")
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for a broken file
            raise DataFileError(spec.path, f"ASE could not read frame {index}: {type(exc).__name__}: {exc}") from None
        info = dict(atoms.info)
        rid = _clean_id(info.pop("id", info.pop("material_id", f"{stem}-{index}")))
        captions = parse_captions(info.pop("caption")) if "caption" in info else None
        # extxyz moves energy/stress-like keys into a calculator; scalar results are properties too (eV for energy)
        results = dict(getattr(atoms.calc, "results", {}) or {})
        props = {
            k: float(v)
            for k, v in {**results, **info}.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        location = f"{spec.path}:frame {index}"
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            yield RawRecord(
                rid,
                location,
                properties=props,
                captions=captions,
                error=("non_positive_volume", "frame is not periodic in 3 directions (no full cell)"),
            )
        else:
            yield RawRecord(
                rid,
                location,
                structure=AseAtomsAdaptor.get_structure(atoms),
                properties=props,
                captions=captions,
            )
        index += 1


# --------------------------------------------------------------------------------------------------- HF datasets
def _read_hf(spec: SourceSpec) -> Iterator[RawRecord]:
    import datasets

    if spec.path.startswith("hf:"):
        name, _, split = spec.path[3:].partition("@")
        dataset = datasets.load_dataset(name, split=split or spec.resolved_split())
    else:
        dataset = datasets.load_from_disk(spec.path)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[spec.resolved_split()]
    columns = dataset.column_names
    struct_col = spec.cif_column if spec.cif_column in columns else ("structure" if "structure" in columns else None)
    if struct_col is None:
        raise DataFileError(spec.path, f"dataset has neither a {spec.cif_column!r} nor a 'structure' column")
    id_col = _pick(columns, spec.id_column, ID_COLUMNS)
    cap_col = _pick(columns, spec.caption_column, CAPTION_COLUMNS)
    props = spec.property_columns or [
        c
        for c, f in dataset.features.items()
        if getattr(f, "dtype", "") in ("float32", "float64") and c not in NON_PROPERTY_COLUMNS
    ]
    for i, row in enumerate(dataset):
        payload = row[struct_col]
        rec = RawRecord(
            id=_clean_id(row[id_col]) if id_col else f"{Path(spec.path).name}-{i}",
            location=f"{spec.path}:row {i + 1}",
            properties={p: row[p] for p in props},
            captions=parse_captions(row[cap_col]) if cap_col else None,
        )
        _attach_structure_payload(rec, payload)
        yield rec


def _attach_structure_payload(rec: RawRecord, payload) -> None:
    if isinstance(payload, dict):
        rec.structure_dict = payload
    elif isinstance(payload, str) and payload.lstrip().startswith("{"):
        try:
            rec.structure_dict = json.loads(payload)
        except json.JSONDecodeError as exc:
            rec.error = ("malformed_record", f"structure JSON: {exc}")
    elif isinstance(payload, str):
        rec.cif = payload
    else:
        rec.error = ("malformed_record", f"structure payload of type {type(payload).__name__}")


# --------------------------------------------------------------------------------------------------- JSON lines
def _open_text(path: str) -> io.TextIOBase:
    try:
        if path.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller's with-block
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None


def _read_jsonl(spec: SourceSpec) -> Iterator[RawRecord]:
    stem = Path(spec.path).name.split(".")[0]
    with _open_text(spec.path) as handle:
        try:
            first = handle.read(1)
        except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
            raise DataFileError(spec.path, f"unreadable ({type(exc).__name__}: {exc})", 1) from None
        if first == "[":  # a whole-file JSON list of records
            try:
                items = json.loads(first + handle.read())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataFileError(spec.path, f"invalid JSON: {exc}", getattr(exc, "lineno", None)) from None
            for i, item in enumerate(items):
                yield _json_record(item, f"{spec.path}:item {i + 1}", f"{stem}-{i}")
            return
        if first == "{":
            text = first + handle.read()
            table = _split_orient_table(text)
            if table is not None:  # a pandas "split"-orient table (robocrys' mineral database)
                yield from _split_table_records(table, spec.path)
                return
            handle = io.StringIO(text[1:])
        lineno = 0
        try:
            for lineno, line in enumerate(_prepend(first, handle), start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield RawRecord(
                        f"{stem}-{lineno}",
                        f"{spec.path}:{lineno}",
                        error=("malformed_record", f"invalid JSON: {exc.msg}"),
                    )
                    continue
                yield _json_record(item, f"{spec.path}:{lineno}", f"{stem}-{lineno}")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise DataFileError(
                spec.path, f"unreadable after line {lineno} ({type(exc).__name__}: {exc})", lineno + 1
            ) from None


def _prepend(first: str, handle) -> Iterator[str]:
    rest = handle.readline()
    yield first + rest
    yield from handle


def _json_record(item, location: str, default_id: str) -> RawRecord:
    if not isinstance(item, dict):
        return RawRecord(
            default_id, location, error=("malformed_record", f"expected an object, got {type(item).__name__}")
        )
    if "structure" in item or "cif" in item:
        rec = RawRecord(
            id=_clean_id(item.get("id", item.get("material_id", default_id))),
            location=location,
            properties=dict(item.get("properties") or {}),
            captions=parse_captions(item["captions"]) if "captions" in item else None,
        )
        _attach_structure_payload(rec, item.get("structure", item.get("cif")))
        if not isinstance(rec.properties, dict):
            rec.error = ("malformed_record", "'properties' is not an object")
        return rec
    if {"lattice", "coordinates", "atom_array"} <= item.keys():  # AFLOW records of yanxon/RDF
        return _aflow_record(item, location, default_id)
    if "lattice" in item and "sites" in item:  # a bare pymatgen Structure dict
        return RawRecord(_clean_id(item.get("properties", {}).get("id", default_id)), location, structure_dict=item)
    return RawRecord(default_id, location, error=("malformed_record", "object has no 'structure', 'cif' or 'sites'"))


def _split_orient_table(text: str) -> dict | None:
    """Parse ``{"columns": [...], "index": [...], "data": [[...], ...]}`` (one JSON object), else None."""
    if '"columns"' not in text[:2000] or '"data"' not in text:
        return None
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        return None
    return table if isinstance(table, dict) and {"columns", "data"} <= table.keys() else None


def _split_table_records(table: dict, path: str) -> Iterator[RawRecord]:
    columns = table["columns"]
    index = table.get("index") or list(range(len(table["data"])))
    for row_no, (key, row) in enumerate(zip(index, table["data"], strict=True), start=1):
        item = dict(zip(columns, row, strict=False))
        # the index (AFLOW prototype labels) repeats across minerals, so the mineral name joins the id
        rid = item.get("id") or (f"{key}:{item['mineral']}" if item.get("mineral") else key)
        rec = RawRecord(_clean_id(rid), f"{path}:row {row_no}")
        if "mineral" in item and item["mineral"]:
            rec.captions = [f"{item['mineral']} structure type"]
        _attach_structure_payload(rec, item.get("structure"))
        yield rec


def _aflow_record(item: dict, location: str, default_id: str) -> RawRecord:
    """AFLOW entry (lattice in Å, fractional coordinates, element symbols) -> RawRecord with a structure dict."""
    props = {"formation_energy": item.get("form_energy_cell")}
    for k, value in enumerate(item.get("dos_fermi") or []):
        props[f"dos_fermi_{k}"] = value
    try:
        sites = [
            {"species": [{"element": el, "occu": 1}], "abc": list(map(float, xyz))}
            for el, xyz in zip(item["atom_array"], item["coordinates"], strict=True)
        ]
        structure = {"lattice": {"matrix": item["lattice"]}, "sites": sites}
    except (TypeError, ValueError) as exc:
        return RawRecord(default_id, location, error=("malformed_record", f"AFLOW entry: {exc}"))
    rid = _clean_id(item.get("id", item.get("auid", default_id)))
    return RawRecord(rid, location, structure_dict=structure, properties=props)
