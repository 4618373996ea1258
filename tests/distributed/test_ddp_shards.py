"""Uneven data never hangs DDP (2 gloo processes, each run under a timeout): shards of 16, 16, 16, 12 samples dealt to
2 ranks x 2 loader workers, fewer shards than reader slots, resampled shards with a fixed epoch length, and the
in-memory path. Every rank runs the same number of training batches and validation covers every sample once."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from ddp_setups import datamodule, prepare_uneven, run_ranks, tiny_alignment, trainer

# (name, data module options, training batches each rank must run in one epoch)
CASES = [
    ("streamed", {"num_workers": 2}, 60 // 2 // 4),
    ("three_shards", {"num_workers": 2, "three_shards": True}, 44 // 2 // 4),
    ("resampled", {"num_workers": 1, "resample": True, "epoch_samples": 40}, 40 // 2 // 4),
    ("in_memory", {"in_memory": True}, 60 // 2 // 4),
]


class CountBatches(L.Callback):
    def __init__(self):
        self.train, self.val_ids = 0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train += 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_ids += [m for m, pad in zip(batch.ids, batch.is_padding.tolist(), strict=True) if not pad]


def one_epoch_each(rank: int, data_root: str, tmp: str) -> dict:
    out = {}
    for name, options, _ in CASES:
        options = dict(options)
        if options.pop("three_shards", False):
            train = sorted(Path(data_root).glob("train-*.tar"))[1:]  # 16, 16, 12: fewer shards than 4 slots
            val = sorted(Path(data_root).glob("val-*.tar"))
            options["shards"] = [f"train={f}" for f in train] + [f"val={f}" for f in val]
            options["root"] = None
        count = CountBatches()
        run = trainer(f"{tmp}/{name}", -1, [count], devices=2, max_epochs=1, limit_val_batches=None,
                      enable_checkpointing=False)  # fmt: skip
        run.fit(tiny_alignment(), datamodule=datamodule(data_root, **options))
        out[name] = {"train": count.train, "steps": run.global_step, "val_ids": count.val_ids}
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, shared_data):
    return prepare_uneven(tmp_path_factory.mktemp("uneven"), shared_data)


@pytest.fixture(scope="module")
def counts(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("ddp_shards")
    return run_ranks(one_epoch_each, (str(data_root), str(tmp)), tmp / "result", timeout=300)


@pytest.mark.parametrize(("name", "expected"), [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_rank_runs_the_same_batches_and_validation_covers_each_sample_once(counts, name, expected):
    ranks = [counts[0][name], counts[1][name]]
    assert [r["train"] for r in ranks] == [expected, expected]
    assert [r["steps"] for r in ranks] == [expected, expected]
    val = ranks[0]["val_ids"] + ranks[1]["val_ids"]
    assert len(val) == len(set(val)) == 60  # the uneven val shards (16, 16, 16, 12), padding dropped
