"""Shards -> batches: exact round trip, equal batch counts on every rank and worker, exact eval coverage, exact
mid-epoch resume (workers, resampled shards, in-memory), streaming over http and through a shell command."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from mmcrystal.data.batch import collate_samples
from mmcrystal.data.datamodule import CrystalDataModule, stream_url
from mmcrystal.data.loader import EpochDataLoader, InMemoryCrystalDataset, ResumableSampler, ShardDataset, ShardInfo
from mmcrystal.data.prepare import PrepareConfig, prepare_sources
from mmcrystal.data.readers import SourceSpec

N_ROWS = 130


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("shards")
    src = shared_data / "mp_20" / "test.csv.gz"
    cfg = PrepareConfig(samples_per_shard=25, workers=0, limit=N_ROWS)  # 6 uneven shards (25 x 5 + 5)
    manifest = prepare_sources([SourceSpec(str(src), split="train")], out, cfg, progress=False)
    return out, manifest


def _shards(out, manifest):
    return [ShardInfo(str(out / s["file"]), s["samples"]) for s in manifest["splits"]["train"]["shards"]]


def test_round_trip_matches_source(prepared, shared_data):
    from pymatgen.core import Structure

    out, manifest = prepared
    frame = pd.read_csv(shared_data / "mp_20" / "test.csv.gz", nrows=N_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = {
            mid: Structure.from_str(cif, fmt="cif") for mid, cif in zip(frame.material_id, frame.cif, strict=True)
        }
    dataset = ShardDataset(
        _shards(out, manifest), batch_size=16, training=False, property_names=manifest["property_names"]
    )
    seen = 0
    for batch in dataset:
        crystal = batch.crystal
        for i, mid in enumerate(batch.ids):
            ref = source[mid]
            atoms = crystal.batch == i
            assert crystal.atomic_numbers[atoms].tolist() == list(ref.atomic_numbers)
            np.testing.assert_allclose(crystal.frac_coords[atoms].numpy(), ref.frac_coords, atol=1e-6)
            np.testing.assert_allclose(crystal.lattice[i].numpy(), ref.lattice.matrix, rtol=1e-6, atol=1e-5)
            row = frame[frame.material_id == mid].iloc[0]
            j = batch.property_names.index("band_gap")
            assert batch.properties[i, j].item() == pytest.approx(row.band_gap, rel=1e-6)
            seen += 1
    assert seen == manifest["splits"]["train"]["accepted"] == N_ROWS
    assert int(crystal.num_atoms.sum()) == crystal.atomic_numbers.shape[0]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_eval_covers_every_sample_once(prepared, world):
    out, manifest = prepared
    shards = _shards(out, manifest)
    counts, ids = [], []
    for rank in range(world):
        dataset = ShardDataset(shards, batch_size=16, training=False, rank=rank, world_size=world)
        batches = list(dataset)
        counts.append(len(batches))
        assert len(batches) == len(dataset)
        for batch in batches:
            ids += [mid for mid, pad in zip(batch.ids, batch.is_padding.tolist(), strict=True) if not pad]
    assert len(set(counts)) == 1, counts  # no rank waits on another
    assert len(ids) == len(set(ids)) == N_ROWS


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (3, 2)])
def test_training_batch_counts_equal_across_ranks(prepared, world, workers):
    out, manifest = prepared
    shards = _shards(out, manifest)
    counts = []
    for rank in range(world):
        dataset = ShardDataset(shards, batch_size=8, training=True, shuffle_buffer=32, rank=rank, world_size=world)
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        batches = list(loader)
        assert all(len(b) == 8 for b in batches)
        counts.append(len(batches))
    assert len(set(counts)) == 1 and counts[0] == N_ROWS // world // 8


def test_training_shuffles_per_epoch_and_is_seeded(prepared):
    out, manifest = prepared
    dataset = ShardDataset(_shards(out, manifest), batch_size=10, training=True, shuffle_buffer=50, seed=3)
    first = [m for b in dataset for m in b.ids]
    again = [m for b in dataset for m in b.ids]
    dataset.epoch = 1
    other = [m for b in dataset for m in b.ids]
    assert first == again and first != other
    assert len(set(first)) == len(first)  # one slot, quota <= its samples: no repeats within the pass


def test_datamodule_in_memory_and_streaming_agree(prepared):
    out, _ = prepared
    ids = {}
    for in_memory in (False, True):
        dm = CrystalDataModule(root=str(out), batch_size=32, in_memory=in_memory, test_split="train")
        dm.setup()
        batches = list(dm.test_dataloader())
        ids[in_memory] = sorted(m for b in batches for m in b.ids)
        assert batches[0].crystal.lattice.dtype == torch.float32
    assert ids[False] == ids[True] and len(ids[True]) == N_ROWS


def test_datamodule_from_explicit_shard_list(prepared):
    out, manifest = prepared
    files = [f"train={out / s['file']}" for s in manifest["splits"]["train"]["shards"]]
    dm = CrystalDataModule(shards=files, batch_size=64, test_split="train")
    dm.setup()
    assert sum(s.samples for s in dm.splits["train"]) == N_ROWS
    assert sum(len(b) for b in dm.test_dataloader()) == N_ROWS


# ------------------------------------------------------------------------------------------- resume and streaming
@pytest.fixture(scope="module")
def captioned(tmp_path_factory, shared_data):
    """60 MP-20 structures with 5 template captions each, in uneven shards (16, 16, 16, 12)."""
    out = tmp_path_factory.mktemp("captioned")
    cfg = PrepareConfig(samples_per_shard=16, workers=0, limit=60, modalities=["captions"])
    manifest = prepare_sources([SourceSpec(str(shared_data / "mp_20" / "test.csv.gz"), split="train")], out, cfg,
                               progress=False)  # fmt: skip
    return _shards(out, manifest)


def _signature(batch) -> list[tuple]:
    """What must match between runs: ids, the caption drawn for each, and the coordinates."""
    coords = [float(batch.crystal.frac_coords[batch.crystal.batch == i].sum()) for i in range(len(batch))]
    return list(zip(batch.ids, batch.captions, coords, strict=True))


def _loader(shards, workers: int, resample: bool = False, rank: int = 0, world: int = 1) -> EpochDataLoader:
    dataset = ShardDataset(shards, batch_size=4, training=True, shuffle_buffer=8, seed=5, rank=rank,
                           world_size=world, resample=resample, epoch_samples=40 if resample else None)  # fmt: skip
    return EpochDataLoader(dataset, batch_size=None, num_workers=workers, seed=5, rank=rank)


def _epoch(loader) -> list[tuple]:
    return [row for batch in loader for row in _signature(batch)]


@pytest.mark.parametrize(("workers", "resample", "stop"), [(0, False, 5), (2, False, 5), (2, False, 6), (0, True, 3)])
def test_loader_resumes_mid_epoch_exactly(captioned, workers, resample, stop):
    reference = _loader(captioned, workers, resample)
    epochs = [_epoch(reference), _epoch(reference)]  # epochs 0 and 1
    assert epochs[0] != epochs[1] and any(c != "" for _, c, _ in epochs[0])

    interrupted = _loader(captioned, workers, resample)
    _epoch(interrupted)  # epoch 0 in full, then `stop` batches of epoch 1
    iterator = iter(interrupted)
    seen = [row for _ in range(stop) for row in _signature(next(iterator))]
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["consumed_batches"] == stop
    del iterator

    resumed = _loader(captioned, workers, resample)
    resumed.load_state_dict(state)  # a fresh loader: the saved position says which epoch comes next
    assert seen + _epoch(resumed) == epochs[1]
    assert _epoch(resumed) == _epoch(_loader_at_epoch(captioned, workers, resample, 2))  # later epochs unaffected


def _loader_at_epoch(shards, workers, resample, epoch):
    loader = _loader(shards, workers, resample)
    loader._passes = epoch
    return loader


def test_in_memory_sampler_resumes_and_shards_ranks(captioned):
    dataset = InMemoryCrystalDataset.from_shards(captioned)

    def loader(rank):
        sampler = ResumableSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        return EpochDataLoader(dataset, batch_size=4, sampler=sampler, drop_last=True, collate_fn=collate_samples,
                               seed=1, rank=rank)  # fmt: skip

    full = [[m for b in loader(rank) for m in b.ids] for rank in (0, 1)]
    assert len(full[0]) == len(full[1]) == 28 and not set(full[0]) & set(full[1])  # 30 per rank, 7 full batches
    interrupted = loader(0)
    iterator = iter(interrupted)
    head = [m for _ in range(3) for m in next(iterator).ids]
    resumed = loader(0)
    resumed.load_state_dict(interrupted.state_dict())
    assert head + [m for b in resumed for m in b.ids] == full[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_resampled_shards_give_every_rank_the_fixed_epoch_length(captioned, workers):
    world, per_rank = 3, 40 // 3 // 4
    ids = []
    for rank in range(world):
        batches = list(_loader(captioned, workers, resample=True, rank=rank, world=world))
        assert len(batches) == per_rank and all(len(b) == 4 for b in batches)
        ids.append([m for b in batches for m in b.ids])
    assert len({tuple(r) for r in ids}) == world  # every rank (and worker) has its own stream
    assert ids[1] == [m for b in _loader(captioned, workers, True, rank=1, world=world) for m in b.ids]  # seeded


def test_layout_change_on_resume_is_logged(captioned, caplog):
    state = _loader(captioned, 0).state_dict()
    state["world_size"] = 8
    with caplog.at_level("WARNING"):
        _loader(captioned, 0).load_state_dict(state)
    assert "different data layout" in caplog.text


def test_streams_over_http_and_through_a_url_command(prepared):
    import functools
    import http.server
    import shutil
    import threading

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    out, _ = prepared
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        ids = {}
        for command in (None, "curl -s -f -L {url}"):
            dm = CrystalDataModule(root=root, batch_size=32, test_split="train", url_command=command)
            dm.setup()
            assert all(s.url.startswith("pipe:curl") for s in dm.splits["train"]) == (command is not None)
            ids[command] = sorted(m for b in dm.test_dataloader() for m in b.ids)
            train = list(dm.train_dataloader())  # stops mid-shard at its quota: the pipe is left early
            assert len(train) == N_ROWS // 32 and all(len(b) == 32 for b in train)
        assert ids[None] == ids["curl -s -f -L {url}"] and len(ids[None]) == N_ROWS
    finally:
        server.shutdown()


def test_url_command_needs_a_placeholder():
    with pytest.raises(ValueError, match="must contain"):
        stream_url("s3://bucket/shard-000.tar", "aws s3 cp - -")
    assert stream_url("s3://bucket/a.tar", "aws s3 cp {url} -") == "pipe:aws s3 cp s3://bucket/a.tar -"
    assert stream_url("/local/a.tar", "aws s3 cp {url} -") == "/local/a.tar"
