"""The table of public datasets that ``mmcrystal download`` knows how to fetch.

Every file is named three ways: its path inside the dataset folder (the same in the download cache and in
a mirror laid out as ``<mirror>/<dataset>/<path>``), the upstream URL at a pinned commit, and its SHA-256
where the bytes are known. A split maps to candidate *variants* in order of preference: the full upstream
file first, then what a mirror may hold instead (a recompressed copy, or only a subset of the rows). The
downloader takes the first variant it can get and records which one in the dataset folder, so a subset is
never mistaken for the full split.

Where the pins come from: the copies under ../shared/data that their data cards trace to a file at a pinned
commit (the train subsets additionally checked here by their git blob ids), and mirror-only files by their
mirror bytes. Upstream files nobody here has seen are ``sha256=None`` and get trust-on-first-use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Reader kinds: how the rest of the pipeline parses a split's files.
READER_KINDS = {
    "cdvae_csv": "CSV, one row per structure, pymatgen CIF in column `cif` (CDVAE schema); may be .csv.gz",
    "chemeleon_csv": "CSV with `cif` plus a text caption in column `prompt` (Chemeleon MP-40)",
    "aflow_rdf_json": "JSON list of dicts: `lattice`, `coordinates`, `atom_array`, `dos_fermi` (yanxon/RDF)",
    "robocrys_mineral_json_gz": "gzip JSON, pandas 'split' orient; `structure` is a pymatgen Structure dict",
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    Args:
        path: Path relative to the dataset folder, in the cache and in a mirror.
        url: Upstream URL at a pinned commit; None when the file exists only in mirrors.
        sha256: Pinned SHA-256 of the file's bytes; None means trust-on-first-use.
        archive_member: When set, ``url`` points to a zip archive (e.g. a wheel) and this member is extracted.
        archive_sha256: Pinned SHA-256 of that archive.
    """

    path: str
    url: str | None = None
    sha256: str | None = None
    archive_member: str | None = None
    archive_sha256: str | None = None


@dataclass(frozen=True)
class SplitVariant:
    """One way a split can be held: a set of files, covering the full split or only part of it.

    Args:
        label: Short id recorded in the dataset folder's manifest (e.g. ``"upstream"``, ``"subset_1024"``).
        files: The files that together hold this variant of the split.
        coverage: ``"full"`` (every row of the split) or ``"subset"`` (only some rows).
        rows: Number of rows when known.
        note: What differs from the upstream file (format, provenance).
    """

    label: str
    files: tuple[RemoteFile, ...]
    coverage: str = "full"
    rows: int | None = None
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A fetchable dataset.

    Args:
        name: Registry key; also the dataset folder name in the cache and in mirrors.
        title: Human-readable name.
        reader: Reader kind, a key of ``READER_KINDS``.
        source: Upstream repository or package page (a URL); the data card names it too.
        licence: Short licence statement; the data card has the details.
        splits: Split name -> candidate variants, most preferred first.
    """

    name: str
    title: str
    reader: str
    source: str
    licence: str
    splits: Mapping[str, tuple[SplitVariant, ...]] = field(default_factory=dict)


def github_raw(repo: str, commit: str, path: str) -> str:
    """URL of ``path`` in GitHub repository ``repo`` ("owner/name") at a pinned 40-hex ``commit``."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


CDVAE = "txie-93/cdvae"
CDVAE_COMMIT = "f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea"  # main, 2022-04-20
DIFFCSP = "jiaor17/DiffCSP"
# A commit other projects cite as a permalink into DiffCSP; data/mpts_52 was not inspected at it here.
DIFFCSP_COMMIT = "7121d159826efa2ba9500bf299250d96da37f146"
CHEMELEON = "hspark1212/chemeleon"
CHEMELEON_COMMIT = "df4c67449265f5dfad66b1300ba438b35b9fcb7c"  # main, 2025-05-30
CHEMELEON_RANDOM_COMMIT = "da75888151ebcf46daa57fd6600ad88011087f78"  # branch `revision`, 2025-05-19
ROBOCRYS_WHEEL = (
    "https://files.pythonhosted.org/packages/56/d5/"
    "f37b2112efd1f4a2ef3932c5ef7012e71409102b83c78fdf3ada6c5e8bc8/robocrys-0.2.13-py3-none-any.whl"
)


def _upstream(
    repo: str, commit: str, folder: str, split: str, rows: int | None, sha256: str | None = None
) -> SplitVariant:
    """The plain ``<folder>/<split>.csv`` file of a benchmark repository."""
    url = github_raw(repo, commit, f"{folder}/{split}.csv")
    return SplitVariant("upstream", (RemoteFile(f"{split}.csv", url, sha256),), "full", rows)


def _mp_20() -> DatasetSpec:
    def gz(split: str, rows: int, sha256: str) -> SplitVariant:
        note = "gzip CSV converted from the patched feather of wenwenli1124/cdvae; adds `pressure`, `formula`"
        return SplitVariant("mirror_csv_gz", (RemoteFile(f"{split}.csv.gz", None, sha256),), "full", rows, note)

    slices = RemoteFile(
        "train_partial/slices_raw_mp20_dataset_mini.csv",
        github_raw(
            "xiaohang007/SLICES",
            "b3719d74ad253fc9baadf2e875470f686d259694",
            "MatterGPT/raw_mp20_dataset_mini.csv",
        ),
        # Pinned from the mirror copy; byte identity with the upstream file was not checked here.
        "889dfda365876656d8782a560eacf703fafaec5182a3162d087cf6c914aa6d96",
    )
    opryan = RemoteFile(
        "train_partial/opryan90_train_named_subset.csv",
        github_raw("OPRYAN90/cdvae", "437566befc3b53756d8b18f1fe885fbae84e49a6", "data/mp_20/train.csv"),
        "88e85ab73e67053de2054063efb6241ccd0c3c175315fb91c282dbb7a2e75584",  # git blob b92adbbc matches
    )
    partial = SplitVariant(
        "train_partial_3420", (slices, opryan), "subset", 3420, "two disjoint slices of the train split"
    )
    return DatasetSpec(
        name="mp_20",
        title="MP-20 (CDVAE benchmark: Materials Project, <=20 atoms)",
        reader="cdvae_csv",
        source=f"https://github.com/{CDVAE}",
        licence="CC BY 4.0 (Materials Project data); CDVAE repository MIT",
        splits={
            "train": (_upstream(CDVAE, CDVAE_COMMIT, "data/mp_20", "train", 27136), partial),
            "val": (
                _upstream(CDVAE, CDVAE_COMMIT, "data/mp_20", "val", 9047),
                gz("val", 9047, "d4f25bb914d7467b7bbb0b90c91240a79c437941754e60f9a54b730a31d79737"),
            ),
            "test": (
                _upstream(CDVAE, CDVAE_COMMIT, "data/mp_20", "test", 9046),
                gz("test", 9046, "47c82671df7cec96d577951fae94e3f96f713bfc7fa265b0e410972d6e469246"),
            ),
        },
    )


def _perov_5() -> DatasetSpec:
    subset = RemoteFile(
        "train_subset_1024.csv",
        github_raw(CDVAE, "307861da36a6c5be29e68d3685f0d824dfd6e281", "data/perov_5_dev/train.csv"),
        "03f2e7db1979376f986686ff2b904a03919a92e00f22c792f269f1f9fb1eae3c",  # git blob 50d0aaf9 matches
    )
    folder = "data/perov_5"
    return DatasetSpec(
        name="perov_5",
        title="Perov-5 (CDVAE benchmark: cubic perovskites, 5 atoms)",
        reader="cdvae_csv",
        source=f"https://github.com/{CDVAE}",
        licence="MIT (CDVAE repository); no separate data licence stated",
        splits={
            "train": (
                _upstream(CDVAE, CDVAE_COMMIT, folder, "train", 11356),
                SplitVariant("subset_1024", (subset,), "subset", 1024, "perov_5_dev/train.csv (PR #32)"),
            ),
            "val": (
                _upstream(
                    CDVAE,
                    CDVAE_COMMIT,
                    folder,
                    "val",
                    3787,
                    sha256="326f401219901270374b71e2faff63df3a29a99fd26f469993b9f476b693daf2",
                ),
            ),
            "test": (
                _upstream(
                    CDVAE,
                    CDVAE_COMMIT,
                    folder,
                    "test",
                    3785,
                    sha256="a85878c685037f0a578257f6d4fcdde00e968dbab73c5f1e90ecef65218513f6",
                ),
            ),
        },
    )


def _carbon_24() -> DatasetSpec:
    subset = RemoteFile(
        "train_subset_712.csv",
        github_raw(
            "orbital-materials/cdvae",
            "c066922d30b879dcfa073ce63e80b41df567041c",
            "data/carbon_24_mini/train.csv",
        ),
        "a94617ebd5b2017387e84772f077e3690eb40c1c95b6f6461f5fca954155bae3",  # git blob 7f2f5e14 matches
    )
    folder = "data/carbon_24"
    return DatasetSpec(
        name="carbon_24",
        title="Carbon-24 (CDVAE benchmark: AIRSS carbon at 10 GPa, 6-24 atoms)",
        reader="cdvae_csv",
        source=f"https://github.com/{CDVAE}",
        licence="MIT (CDVAE repository); underlying AIRSS data open access on Materials Cloud",
        splits={
            "train": (
                _upstream(CDVAE, CDVAE_COMMIT, folder, "train", 6091),
                SplitVariant("subset_712", (subset,), "subset", 712, "carbon_24_mini/train.csv"),
            ),
            "val": (
                _upstream(
                    CDVAE,
                    CDVAE_COMMIT,
                    folder,
                    "val",
                    2032,
                    sha256="36c00689cd63073c954a58bc6ed6e2adb7aeed5a630c994970959a1babffd50e",
                ),
            ),
            "test": (
                _upstream(
                    CDVAE,
                    CDVAE_COMMIT,
                    folder,
                    "test",
                    2030,
                    sha256="386b17c08816f434818d51e46687bf72ff3f92348f3ba24823e4758f1fe8a969",
                ),
            ),
        },
    )


def _mpts_52() -> DatasetSpec:
    # Row counts as reported in the DiffCSP paper; not checked against the files here.
    rows = {"train": 27380, "val": 5000, "test": 8096}
    return DatasetSpec(
        name="mpts_52",
        title="MPTS-52 (DiffCSP benchmark: Materials Project time split, <=52 atoms)",
        reader="cdvae_csv",
        source=f"https://github.com/{DIFFCSP}",
        licence="CC BY 4.0 (Materials Project data); DiffCSP repository MIT",
        splits={s: (_upstream(DIFFCSP, DIFFCSP_COMMIT, "data/mpts_52", s, n),) for s, n in rows.items()},
    )


def _mp_40_text() -> DatasetSpec:
    random_test = RemoteFile(
        "random_split_test.csv",
        github_raw(CHEMELEON, CHEMELEON_RANDOM_COMMIT, "data/mp-40/random_split/test.csv"),
        "3198da2f4e1e0dd866c5584b3b3f56985657e90168544d90a8d4264c1e4edd13",
    )
    folder = "data/mp-40"
    return DatasetSpec(
        name="mp_40_text",
        title="Chemeleon MP-40 structure-text pairs (Materials Project, <=40 atoms, GPT-3.5 captions)",
        reader="chemeleon_csv",
        source=f"https://github.com/{CHEMELEON}",
        licence="CC BY 4.0 (Materials Project structures); Chemeleon repository MIT; captions by GPT-3.5",
        splits={
            "train": (_upstream(CHEMELEON, CHEMELEON_COMMIT, folder, "train", None),),
            "val": (_upstream(CHEMELEON, CHEMELEON_COMMIT, folder, "val", None),),
            "test": (
                _upstream(
                    CHEMELEON,
                    CHEMELEON_COMMIT,
                    folder,
                    "test",
                    708,
                    sha256="67cb3a682724d40afb5bfe2fba52e4e40ddaa40c2ac955e13aebffe91db45f5b",
                ),
            ),
            "test_random": (SplitVariant("random_split", (random_test,), "full", 708, "random_split/test.csv"),),
        },
    )


def _supercon_jarvis_tc() -> DatasetSpec:
    commit = "840cd7050f711e9e58a8fbbb1d5e3aa3bab70599"  # "Superconn DB.", refs/pull/47/head
    pins = {
        "train": (846, "be0df28dbf1c72b06966bd90c4c85aefc07be5b73aa0fc7ed1cb18fa60c591a9"),
        "val": (105, "2568af0713cbfe3b881a329269964e72274790f785e029d8fce99e2f7236d849"),
        "test": (105, "758d05ecb539e094f6f0e6b70880160a796e115ed738145f379ad5b9eadee402"),
    }
    return DatasetSpec(
        name="supercon_jarvis_tc",
        title="JARVIS electron-phonon superconductors (CDVAE format, prop = -Tc in K)",
        reader="cdvae_csv",
        source=f"https://github.com/{CDVAE}",
        licence="MIT (CDVAE repository); underlying data NIST JARVIS-DFT",
        splits={s: (_upstream(CDVAE, commit, "data/supercon", s, n, sha),) for s, (n, sha) in pins.items()},
    )


def _aflow_sp_metals() -> DatasetSpec:
    file = RemoteFile(
        "sp_metal_aflow_844.json",
        github_raw("yanxon/RDF", "e47287edebf5d7afdb39c5adceded4011eb26ba9", "Datasets/sp_metal_aflow_844.json"),
        "3cdc25c74c6c26c7b575be482484c9f26edaf425c296118600c972a1b3ed3347",
    )
    return DatasetSpec(
        name="aflow_sp_metals_dos_fermi",
        title="AFLOW sp-metals with 7 DOS values near the Fermi level (yanxon/RDF)",
        reader="aflow_rdf_json",
        source="https://github.com/yanxon/RDF",
        licence="not stated (the repository has no licence file); underlying data: public AFLOW database",
        splits={"all": (SplitVariant("upstream", (file,), "full", 844),)},
    )


def _robocrys_minerals() -> DatasetSpec:
    file = RemoteFile(
        "mineral_db.json.gz",
        ROBOCRYS_WHEEL,
        "1a13bd90b1405bd40a68abf015db8b6a8538df8ab6c27bbb2b3daf7f858c56d4",
        archive_member="robocrys/condense/mineral_db.json.gz",
        archive_sha256="962044ac35afb659e237d5b184af929d4736bb114150c8cc8c2807ce4164beb0",
    )
    return DatasetSpec(
        name="robocrys_mineral_prototypes",
        title="robocrystallographer mineral prototypes (180 named structure types)",
        reader="robocrys_mineral_json_gz",
        source="https://pypi.org/project/robocrys/0.2.13/",
        licence="MIT (robocrys package metadata)",
        splits={"all": (SplitVariant("wheel_0.2.13", (file,), "full", 180, "extracted from the wheel"),)},
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _mp_20(),
        _perov_5(),
        _carbon_24(),
        _mpts_52(),
        _mp_40_text(),
        _supercon_jarvis_tc(),
        _aflow_sp_metals(),
        _robocrys_minerals(),
    )
}


def list_datasets() -> list[str]:
    """Names of the datasets that can be downloaded, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry for ``name``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the registered names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())}") from None


def register_dataset(spec: DatasetSpec, overwrite: bool = False) -> None:
    """Add a dataset to the registry (for private sets, or tests).

    Raises:
        ValueError: The name is taken and ``overwrite`` is False, or the reader kind is unknown.
    """
    if spec.name in DATASETS and not overwrite:
        raise ValueError(f"dataset {spec.name!r} is already registered (pass overwrite=True to replace it)")
    if spec.reader not in READER_KINDS:
        raise ValueError(f"dataset {spec.name!r}: unknown reader kind {spec.reader!r}; known: {sorted(READER_KINDS)}")
    DATASETS[spec.name] = spec
