"""Downloads: hash pinning, trust-on-first-use, retries, resume, mirrors, idempotence. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import mmcrystal.data.download as dl
from mmcrystal.data import registry
from mmcrystal.data.download import ChecksumError, DownloadError, download, resolve_dataset_files
from mmcrystal.data.registry import DatasetSpec, RemoteFile, SplitVariant

TRAIN = b"material_id,cif\n" + b"".join(b"t%d,cif-%d\n" % (i, i) for i in range(200))
SUBSET = b"material_id,cif\nt0,cif-0\nt1,cif-1\n"
TEST = b"material_id,cif\n" + b"".join(b"s%d,cif-%d\n" % (i, i) for i in range(50))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileServer:
    """What the local server holds and what it was asked; ``fail``/``cut`` inject faults per URL path."""

    root: Path
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # path -> answer HTTP 500 this many times
    cut: dict[str, int] = field(default_factory=dict)  # path -> send only this many bytes, once

    def put(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


def _handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            path = urllib.parse.unquote(self.path)
            state.requests.append((path, self.headers.get("Range")))
            if state.fail.get(path, 0) > 0:
                state.fail[path] -= 1
                return self.send_error(500)
            file = state.root / path.lstrip("/")
            if not file.is_file():
                return self.send_error(404)
            data, start = file.read_bytes(), 0
            if match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
                start = int(match[1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.cut.pop(path, None)
            self.wfile.write(body if cut is None else body[:cut])
            self.close_connection = cut is not None

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server(tmp_path):
    state = FileServer(tmp_path / "served")
    state.root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _local_network_only(monkeypatch):
    """Refuse any address but 127.0.0.1, and make retry backoff instant."""
    real_open = dl._open_url

    def guarded(request, timeout):
        host = urllib.parse.urlparse(request.full_url).hostname
        assert host == "127.0.0.1", f"test tried to reach {request.full_url}"
        return real_open(request, timeout)

    monkeypatch.setattr(dl, "_open_url", guarded)
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)


def toy_spec(server: FileServer, pins: dict[str, str | None], name: str = "toy") -> DatasetSpec:
    """A registry entry served by ``server`` under /upstream/: train (full, then subset) and test."""

    def file(path: str) -> RemoteFile:
        return RemoteFile(path, server.url + "upstream/" + path, pins.get(path))

    return DatasetSpec(
        name=name,
        title="toy",
        reader="cdvae_csv",
        source=server.url,
        licence="test",
        splits={
            "train": (
                SplitVariant("upstream", (file("train.csv"),), "full", 200),
                SplitVariant("subset_2", (file("train_subset.csv"),), "subset", 2),
            ),
            "test": (SplitVariant("upstream", (file("test.csv"),), "full", 50),),
        },
    )


@pytest.fixture
def toy(server, monkeypatch):
    """Register a pinned toy dataset whose upstream files are served correctly."""
    for rel, data in {"train.csv": TRAIN, "train_subset.csv": SUBSET, "test.csv": TEST}.items():
        server.put(f"upstream/{rel}", data)
    spec = toy_spec(server, {"train.csv": sha(TRAIN), "train_subset.csv": sha(SUBSET), "test.csv": sha(TEST)})
    monkeypatch.setitem(registry.DATASETS, "toy", spec)
    return spec


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_pinned_files_are_verified_recorded_and_resolved(toy, tmp_path):
    folder = download("toy", cache_dir=tmp_path / "cache")
    assert folder == tmp_path / "cache" / "toy"
    assert (folder / "train.csv").read_bytes() == TRAIN and (folder / "test.csv").read_bytes() == TEST
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{sha(TEST)}  test.csv", f"{sha(TRAIN)}  train.csv"]
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["reader"] == "cdvae_csv"
    assert manifest["splits"]["train"]["variant"] == "upstream"
    assert manifest["splits"]["train"]["coverage"] == "full"
    assert resolve_dataset_files("toy", folder) == {"train": [folder / "train.csv"], "test": [folder / "test.csv"]}
    assert resolve_dataset_files("toy", tmp_path / "cache") == resolve_dataset_files("toy", folder)
    assert not leftovers(folder)


def test_corrupted_file_is_refused_and_deleted(toy, server, tmp_path):
    server.put("upstream/test.csv", TEST.replace(b"cif-7", b"cif-8"))
    with pytest.raises(ChecksumError) as info:
        download("toy", cache_dir=tmp_path, splits=["test"])
    message = str(info.value)
    assert "toy/test.csv" in message and server.url + "upstream/test.csv" in message
    assert sha(TEST) in message and sha(TEST.replace(b"cif-7", b"cif-8")) in message
    assert not (tmp_path / "toy" / "test.csv").exists()
    assert not leftovers(tmp_path / "toy")


def test_trust_on_first_use_records_then_verifies(server, monkeypatch, tmp_path, caplog):
    server.put("upstream/test.csv", TEST)
    monkeypatch.setitem(registry.DATASETS, "tofu", toy_spec(server, {}, name="tofu"))
    caplog.set_level(logging.WARNING, logger=dl.__name__)
    folder = download("tofu", cache_dir=tmp_path, splits=["test"])
    assert "not pinned" in caplog.text
    assert (folder / "SHA256SUMS").read_text() == f"{sha(TEST)}  test.csv\n"

    server.put("upstream/test.csv", TEST + b"extra,row\n")  # upstream bytes change
    with pytest.raises(ChecksumError, match="recorded on first use"):
        download("tofu", cache_dir=tmp_path, splits=["test"], force=True)
    assert (folder / "test.csv").read_bytes() == TEST  # the verified copy was kept

    (folder / "test.csv").write_bytes(b"local damage")  # a damaged cache copy is fetched again and checked
    server.put("upstream/test.csv", TEST)
    download("tofu", cache_dir=tmp_path, splits=["test"])
    assert (folder / "test.csv").read_bytes() == TEST


def test_transient_500_is_retried(toy, server, tmp_path):
    server.fail["/upstream/test.csv"] = 2
    folder = download("toy", cache_dir=tmp_path, splits=["test"])
    assert (folder / "test.csv").read_bytes() == TEST
    assert server.paths().count("/upstream/test.csv") == 3


def test_gives_up_after_retries_without_a_final_file(toy, server, tmp_path):
    server.fail["/upstream/test.csv"] = 10
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download("toy", cache_dir=tmp_path, splits=["test"], retries=2)
    assert not (tmp_path / "toy" / "test.csv").exists()


def test_dropped_connection_resumes_with_range(toy, server, tmp_path):
    server.cut["/upstream/train.csv"] = 100
    folder = download("toy", cache_dir=tmp_path, splits=["train"])
    assert (folder / "train.csv").read_bytes() == TRAIN
    assert [r for p, r in server.requests if p == "/upstream/train.csv"] == [None, "bytes=100-"]


def test_rerun_is_idempotent(toy, server, tmp_path):
    folder = download("toy", cache_dir=tmp_path)
    seen, mtime = len(server.requests), (folder / "train.csv").stat().st_mtime_ns
    assert download("toy", cache_dir=tmp_path) == folder
    assert len(server.requests) == seen
    assert (folder / "train.csv").stat().st_mtime_ns == mtime
    download("toy", cache_dir=tmp_path, splits=["test"], force=True)
    assert len(server.requests) == seen + 1


def test_damaged_file_with_no_source_is_dropped_from_the_manifest(toy, server, tmp_path):
    folder = download("toy", cache_dir=tmp_path)
    (folder / "test.csv").write_bytes(b"damaged")
    (server.root / "upstream" / "test.csv").unlink()
    download("toy", cache_dir=tmp_path)  # train still verifies; test cannot be repaired and is skipped
    assert sorted(resolve_dataset_files("toy", folder)) == ["train"]


def test_missing_full_split_falls_back_to_subset(toy, server, tmp_path, caplog):
    (server.root / "upstream" / "train.csv").unlink()
    caplog.set_level(logging.WARNING, logger=dl.__name__)
    folder = download("toy", cache_dir=tmp_path)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["splits"]["train"] | {"source": None} == {
        "variant": "subset_2", "coverage": "subset", "rows": 2, "files": ["train_subset.csv"], "source": None,
    }  # fmt: skip
    assert "only a subset" in caplog.text
    assert resolve_dataset_files("toy", folder)["train"] == [folder / "train_subset.csv"]

    (server.root / "upstream" / "test.csv").unlink()
    with pytest.raises(DownloadError, match="split 'test' is not available"):
        download("toy", cache_dir=tmp_path / "other", splits=["test"])
    assert download("toy", cache_dir=tmp_path / "other").name == "toy"  # all splits: missing ones skipped


def test_url_mirror_is_the_only_source(toy, server, tmp_path):
    server.put("mirror/toy/train_subset.csv", SUBSET)  # the mirror lacks the full train split
    server.put("mirror/toy/test.csv", TEST)
    folder = download("toy", cache_dir=tmp_path, mirror=server.url + "mirror")
    assert all(p.startswith("/mirror/toy/") for p in server.paths())
    files = resolve_dataset_files("toy", folder)
    assert files == {"train": [folder / "train_subset.csv"], "test": [folder / "test.csv"]}
    assert json.loads((folder / "MANIFEST.json").read_text())["splits"]["test"]["source"].endswith("/mirror/")


def test_local_mirror_with_corrupt_file_is_refused(toy, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "test.csv").write_bytes(TEST[:-3])
    with pytest.raises(ChecksumError, match=str(mirror / "toy" / "test.csv")):
        download("toy", cache_dir=tmp_path / "cache", mirror=mirror, splits=["test"])
    assert not (tmp_path / "cache" / "toy" / "test.csv").exists()


def test_archive_member_is_extracted_and_both_hashes_checked(server, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("pkg/data/db.json.gz", TEST)
    server.put("upstream/pkg.whl", buffer.getvalue())
    member = RemoteFile("db.json.gz", server.url + "upstream/pkg.whl", sha(TEST), "pkg/data/db.json.gz")
    spec = DatasetSpec(
        "wheel", "w", "robocrys_mineral_json_gz", server.url, "MIT", {"all": (SplitVariant("w", (member,)),)}
    )
    monkeypatch.setitem(registry.DATASETS, "wheel", spec)
    folder = download("wheel", cache_dir=tmp_path)
    assert (folder / "db.json.gz").read_bytes() == TEST
    assert sorted(p.name for p in folder.iterdir()) == ["MANIFEST.json", "SHA256SUMS", "db.json.gz"]


def test_git_lfs_pointer_is_not_accepted(server, monkeypatch, tmp_path):
    server.put("upstream/test.csv", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    monkeypatch.setitem(registry.DATASETS, "lfs", toy_spec(server, {}, name="lfs"))
    with pytest.raises(DownloadError, match="Git LFS pointer"):
        download("lfs", cache_dir=tmp_path, splits=["test"])
    assert not (tmp_path / "lfs" / "SHA256SUMS").exists()


def test_shared_data_mirror_perov_5_passes_pinned_hashes(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_open_url", lambda *a: pytest.fail("a local mirror must not touch the network"))
    folder = download("perov_5", cache_dir=tmp_path, mirror=shared_data)
    manifest = json.loads((folder / "MANIFEST.json").read_text())["splits"]
    assert {s: (e["variant"], e["coverage"]) for s, e in manifest.items()} == {
        "train": ("subset_1024", "subset"), "val": ("upstream", "full"), "test": ("upstream", "full"),
    }  # fmt: skip
    files = resolve_dataset_files("perov_5", folder)
    assert files["train"] == [folder / "train_subset_1024.csv"]
    pinned = {f.path: f.sha256 for vs in registry.get_dataset("perov_5").splits.values() for v in vs for f in v.files}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        assert pinned[path] == digest


def test_shared_data_mirror_mp_20_uses_gz_and_partial_train(shared_data, tmp_path):
    folder = download("mp_20", cache_dir=tmp_path, mirror=shared_data)
    files = resolve_dataset_files("mp_20", folder)
    assert files["val"] == [folder / "val.csv.gz"] and files["test"] == [folder / "test.csv.gz"]
    assert [p.name for p in files["train"]] == ["slices_raw_mp20_dataset_mini.csv", "opryan90_train_named_subset.csv"]


def test_resolve_reads_a_mirror_in_place(shared_data):
    variants = dl.resolve_split_variants("carbon_24", shared_data)
    assert variants["train"].coverage == "subset" and variants["test"].coverage == "full"
    files = resolve_dataset_files("mp_40_text", shared_data / "mp_40_text")
    assert sorted(files) == ["test", "test_random"]  # train/val are not in the shared mirror
    with pytest.raises(FileNotFoundError, match="mpts_52"):
        resolve_dataset_files("mpts_52", shared_data)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.default_cache_dir() == tmp_path / "xdg" / "mmcrystal" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dl.default_cache_dir() == tmp_path / ".cache" / "mmcrystal" / "datasets"


def test_bad_names_and_mirrors_are_explained(toy, tmp_path):
    with pytest.raises(KeyError, match="perov_5"):
        download("nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no split"):
        download("toy", cache_dir=tmp_path, splits=["validation"])
    with pytest.raises(FileNotFoundError, match="mirror folder"):
        download("toy", cache_dir=tmp_path, mirror=tmp_path / "absent")
    with pytest.raises(ValueError, match="http"):
        download("toy", cache_dir=tmp_path, mirror="ftp://example.invalid/")


def _all_files():
    for spec in registry.DATASETS.values():
        for split, variants in spec.splits.items():
            for variant in variants:
                for file in variant.files:
                    yield spec, split, variant, file


def test_registry_entries_are_well_formed():
    pinned_url = re.compile(
        r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+|https://files\.pythonhosted\.org/\S+"
    )
    for spec in registry.DATASETS.values():
        assert spec.reader in registry.READER_KINDS, spec.name
        assert spec.source.startswith("https://") and spec.splits, spec.name
        for split, variants in spec.splits.items():
            assert len({v.label for v in variants}) == len(variants), (spec.name, split)
            assert all(v.coverage in ("full", "subset") and v.files for v in variants), (spec.name, split)
    for spec, split, _, file in _all_files():
        assert file.url is None or pinned_url.fullmatch(file.url), (spec.name, split, file.url)
        assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256), (spec.name, file.path)
        assert file.url or file.sha256, f"{spec.name}/{file.path}: a mirror-only file must be pinned"


def test_pinned_hashes_match_the_shared_mirror(shared_data):
    checked = 0
    for spec, _, _, file in _all_files():
        local = shared_data / spec.name / file.path
        if file.url is None:
            assert local.is_file(), f"mirror-only file {local} is missing"
        if file.sha256 and local.is_file():
            assert dl.sha256_file(local) == file.sha256, local
            checked += 1
    assert checked >= 17
