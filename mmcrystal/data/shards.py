"""WebDataset-compatible tar shards of crystal records.

Each sample is a group of tar members sharing a key (the webdataset convention, so ``webdataset.WebDataset`` reads
the shards too):

====================  ===================================================================================
``<key>.meta.json``   id, split, source location, properties (name -> float), captions (list of str)
``<key>.z.npy``       atomic numbers, uint8 (N,)
``<key>.frac.npy``    fractional coordinates, float64 (N, 3), exactly as parsed (not wrapped)
``<key>.lattice.npy`` lattice matrix, float64 (3, 3), rows are the vectors a, b, c in Å
``<key>.xrd.npy``     optional: XRD intensities float32 (n_2θ,), grid in the manifest
``<key>.dos.npy``     optional: DOS float32 (n_E,), grid in the manifest
``<key>.image.npy``   optional: micrograph float16 (H, W)
====================  ===================================================================================

Shards are written to a temporary name and renamed, with fixed tar metadata (mtime 0), so the same records always
give the same bytes: a re-run of ``prepare`` can verify a finished shard by its hash and skip it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmcrystal.data.record import CrystalRecord

__all__ = ["encode_record", "write_shard", "iter_shard", "decode_sample", "sha256_file", "record_from_sample"]

_ARRAY_FIELDS = ("z", "frac", "lattice", "xrd", "dos", "image")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_record(record: CrystalRecord) -> dict[str, bytes]:
    """A validated record -> {extension: bytes} for one tar sample."""
    structure = record.structure
    files = {
        "meta.json": json.dumps(
            {
                "id": record.id,
                "split": record.split,
                "location": record.location,
                "properties": record.properties,
                "captions": record.captions,
            },
            ensure_ascii=False,
        ).encode(),
        "z.npy": _npy_bytes(np.asarray(structure.atomic_numbers, dtype=np.uint8)),
        "frac.npy": _npy_bytes(np.asarray(structure.frac_coords, dtype=np.float64)),
        "lattice.npy": _npy_bytes(np.asarray(structure.lattice.matrix, dtype=np.float64)),
    }
    if record.xrd is not None:
        files["xrd.npy"] = _npy_bytes(np.asarray(record.xrd, dtype=np.float32))
    if record.dos is not None:
        files["dos.npy"] = _npy_bytes(np.asarray(record.dos, dtype=np.float32))
    if record.image is not None:
        files["image.npy"] = _npy_bytes(np.asarray(record.image, dtype=np.float16))
    return files


def write_shard(path: str | Path, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    """Write (key, files) samples to ``path`` atomically; return the shard's SHA-256."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, files in samples:
            if "." in key or "/" in key:
                raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
            for ext, payload in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                tar.addfile(info, io.BytesIO(payload))
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open_stream(url: str):
    if "://" in url or url.startswith("pipe:"):
        import webdataset

        return webdataset.gopen(url, "rb")
    return open(url, "rb")  # noqa: SIM115 - closed by iter_shard


def iter_shard(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, {extension: bytes}) samples from a local path or URL (http(s)://, pipe:, ...)."""
    stream = _open_stream(url)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            key, files = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                sample_key, _, ext = name.partition(".")
                if sample_key != key:
                    if key is not None:
                        yield key, files
                    key, files = sample_key, {}
                files[ext] = tar.extractfile(member).read()
            if key is not None:
                yield key, files
    finally:
        stream.close()


def decode_sample(files: dict[str, bytes], fields: tuple[str, ...] = _ARRAY_FIELDS) -> dict:
    """Bytes of one sample -> dict with ``meta`` (dict) and numpy arrays for the requested fields present."""
    out = {"meta": json.loads(files["meta.json"])}
    for name in fields:
        payload = files.get(f"{name}.npy")
        if payload is not None:
            out[name] = np.load(io.BytesIO(payload), allow_pickle=False)
    return out


def record_from_sample(sample: dict) -> CrystalRecord:
    """A decoded sample -> `CrystalRecord` with a pymatgen Structure (for evaluation and inspection)."""
    from pymatgen.core import Lattice, Structure

    meta = sample["meta"]
    structure = Structure(Lattice(sample["lattice"]), sample["z"].astype(int).tolist(), sample["frac"])
    return CrystalRecord(
        meta["id"],
        structure,
        meta.get("properties", {}),
        meta.get("captions", []),
        meta.get("split", ""),
        meta.get("location", ""),
        sample.get("xrd"),
        sample.get("dos"),
        None if sample.get("image") is None else sample["image"].astype(np.float32),
    )
