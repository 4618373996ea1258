"""Distributed sampling: ranks write disjoint shards, rank 0 (or `--merge`) merges them; one rank and two ranks give
the same files for the same seed; an interrupted rank resumes; a rerun with another world size skips finished work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mmcrystal.generate import (
    CrystalGenerator,
    RankInfo,
    merge_shards,
    model_fingerprint,
    rank_info,
    sample,
    write_samples,
)
from mmcrystal.generation.distributed import rank_batches

REQUEST = dict(prompt="a cubic crystal", n=7, batch_size=2, steps=2, seed=3)  # 4 batches, the last of one crystal


def _snapshot(out) -> dict[str, str]:
    """Every output file except the bookkeeping (progress, manifest)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("progress.json", "manifest.json"))
    return {str(p.relative_to(out)): p.read_text() for p in files}


def _run(decoder, out, info, **overrides):
    generator = CrystalGenerator.from_pretrained(decoder)
    kwargs = {**REQUEST, "model_id": model_fingerprint(decoder), "rank": info, "merge_wait": 0, **overrides}
    return write_samples(generator, out, **kwargs)


@pytest.fixture(scope="module")
def reference(text_decoder, tmp_path_factory):
    """One process: the files every distributed run must reproduce (one torch thread, like the tests and the
    subprocesses: CPU kernels may round differently with another thread count)."""
    out = tmp_path_factory.mktemp("one_rank") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped fixtures are set up before the per-test one-thread fixture
    try:
        summary = sample(str(text_decoder), str(out), **REQUEST)
    finally:
        torch.set_num_threads(threads)
    assert summary["complete"] and summary["num_batches"] == 4
    return _snapshot(out)


def test_rank_info_from_torchrun_and_slurm():
    assert rank_info({}) == RankInfo(0, 1, 0)
    assert rank_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == RankInfo(3, 4, 1)
    assert rank_info({"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0"}) == RankInfo(2, 3, 0)
    both = {"RANK": "0", "WORLD_SIZE": "1", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}
    assert rank_info(both) == RankInfo(0, 1, 0)  # torchrun's variables win (and can force one process)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(ValueError):
            rank_info(bad)
    assigned = [rank_batches(10, RankInfo(r, 3)) for r in range(3)]
    assert sorted(k for batches in assigned for k in batches) == list(range(10))  # disjoint, complete
    assert assigned[0] == [0, 3, 6, 9]


def test_two_ranks_give_the_files_of_one(text_decoder, reference, tmp_path):
    out = tmp_path / "two"
    first = _run(text_decoder, out, RankInfo(1, 2))  # rank 1 finishes first: its shard only
    assert first["batches_done"] == [1, 3] and first["complete"] and first["rank"] == 1
    assert not (out / "cif").exists() and (out / "shards" / "rank00001-of00002" / "extxyz").is_dir()
    merged = _run(text_decoder, out, RankInfo(0, 2))  # rank 0: its batches, then the merge
    assert merged["complete"] and merged["merged_batches"] == [0, 1, 2, 3] and merged["missing_batches"] == []
    assert _snapshot(out) == reference
    assert not (out / "shards").exists()  # merged shards are removed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 7 and len(manifest["batches"]) == 4
    assert manifest["batches_from"] == {"0": "rank00000-of00002", "1": "rank00001-of00002",
                                        "2": "rank00000-of00002", "3": "rank00001-of00002"}  # fmt: skip


def test_interrupted_rank_resumes_and_merge_completes(text_decoder, reference, tmp_path):
    out = tmp_path / "interrupted"

    def stop(structures, index):
        raise KeyboardInterrupt(f"rank 1 killed after batch {index}")

    with pytest.raises(KeyboardInterrupt):
        _run(text_decoder, out, RankInfo(1, 2), callback=stop)
    partial = _run(text_decoder, out, RankInfo(0, 2))  # rank 0 does not wait (merge_wait 0): partial merge
    assert not partial["complete"] and partial["missing_batches"] == [3] and (out / "shards").exists()
    resumed = _run(text_decoder, out, RankInfo(1, 2))  # rank 1 again: batch 1 is already merged into OUT
    assert resumed["skipped_batches"] == [1] and resumed["batches_done"] == [1, 3] and resumed["complete"]
    merged = sample(merge=str(out))
    assert merged["complete"] and merged["merged_batches"] == [3]
    assert _snapshot(out) == reference


def test_rerun_with_another_world_size_skips_finished_batches(text_decoder, reference, tmp_path):
    out = tmp_path / "resized"
    _run(text_decoder, out, RankInfo(2, 3))  # one of three ranks ran (batch 2), the others never started
    again = _run(text_decoder, out, RankInfo(0, 1))  # one process: adopts batch 2, makes 0, 1, 3
    assert again["complete"] and again["skipped_batches"] == [2]
    assert _snapshot(out) == reference and not (out / "shards").exists()
    with pytest.raises(ValueError, match="another request"):
        _run(text_decoder, out, RankInfo(1, 2), seed=4)
    with pytest.raises(FileNotFoundError, match="nothing to merge"):
        merge_shards(tmp_path / "empty")


@pytest.mark.slow
def test_two_processes_under_torchrun_variables(text_decoder, reference, tmp_path):
    """Two real processes (RANK / WORLD_SIZE as torchrun sets them), coordinated through files only (slow: each
    process imports torch, transformers and pymatgen, about 30 s on a busy 2-core machine)."""
    out = tmp_path / "procs"
    code = (
        "import sys, torch; torch.set_num_threads(1); from mmcrystal.generate import sample; "
        f"sample(sys.argv[1], sys.argv[2], merge_wait=300, **{REQUEST!r})"
    )
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        args = [sys.executable, "-c", code, str(text_decoder), str(out)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert _snapshot(out) == reference
    assert json.loads((out / "manifest.json").read_text())["complete"]
