"""The fast tar and .npy readers agree with tarfile/numpy on every layout they may meet."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from mmcrystal.data.shards import _load_npy, iter_shard


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.uint8),
        np.random.default_rng(0).normal(size=(5, 3)),
        np.asfortranarray(np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)),
        np.zeros((0, 3), dtype=np.float64),
        np.float16(np.linspace(0, 1, 12)).reshape(3, 4),
    ],
)
def test_npy_decoder_matches_numpy(array):
    decoded = _load_npy(_npy(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_object_arrays_are_refused():
    with pytest.raises(ValueError, match="object"):
        _load_npy(_npy(np.array([{"a": 1}], dtype=object)))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_matches_tarfile(tmp_path, fmt):
    path = tmp_path / "shard.tar"
    members = {}
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(3):
            key = f"sample{i:03d}" + ("x" * 120 if i == 2 else "")  # long names need GNU/pax records
            if fmt == tarfile.USTAR_FORMAT and i == 2:
                key = f"deep/{'d' * 60}/sample{i}"  # ustar prefix field instead
            for ext, payload in (("meta.json", b'{"id": %d}' % i), ("z.npy", _npy(np.arange(i + 1, dtype=np.uint8)))):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                members[(key.rsplit("/", 1)[-1], ext)] = payload
    got = {(key, ext): payload for key, files in iter_shard(str(path)) for ext, payload in files.items()}
    assert got == members


def test_truncated_shard_names_the_file(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("a.meta.json")
        info.size = 2000
        tar.addfile(info, io.BytesIO(b"x" * 2000))
    path.write_bytes(path.read_bytes()[:1024])
    with pytest.raises(OSError, match="bad.tar"):
        list(iter_shard(str(path)))
