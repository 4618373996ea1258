"""`CrystalDataModule`: prepared shards (local folder or URL) -> typed batches for Lightning."""

from __future__ import annotations

import json
from functools import partial

import lightning as L

from mmcrystal.data.batch import collate_samples
from mmcrystal.data.loader import (
    EpochDataLoader,
    InMemoryCrystalDataset,
    ShardDataset,
    ShardInfo,
    count_samples,
    seed_worker,
)

__all__ = ["CrystalDataModule", "load_manifest"]


def _join(root: str, name: str) -> str:
    return name if "://" in name or name.startswith("/") else f"{root.rstrip('/')}/{name}"


def load_manifest(root: str) -> dict:
    """Read ``manifest.json`` from a prepared folder or a base URL."""
    url = _join(root, "manifest.json")
    if "://" in url:
        import webdataset

        with webdataset.gopen(url, "rb") as handle:
            return json.loads(handle.read())
    with open(url) as handle:
        return json.load(handle)


class CrystalDataModule(L.LightningDataModule):
    """Lightning data module over prepared crystal shards (the output of ``mmcrystal prepare``).

    Args:
        root: Folder or base URL holding ``manifest.json`` and the shards.
        shards: Explicit shard paths/URLs as ``split=url`` entries, instead of (or besides) a manifest; their
            sample counts are read once at setup.
        batch_size: Crystals per training batch (per rank).
        eval_batch_size: Crystals per validation/test batch; defaults to ``batch_size``.
        num_workers: Loader worker processes per rank.
        shuffle_buffer: Samples held for shuffling in each reader slot.
        seed: Base seed for shuffling and caption choice.
        in_memory: Load whole splits into RAM (small datasets); Lightning then adds the distributed sampler.
        train_split: Split used for training.
        val_split: Split used for validation.
        test_split: Split used for testing and prediction.
        fields: Array fields decoded from the shards (leave out modalities a run does not use).
    """

    def __init__(
        self,
        root: str | None = None,
        shards: list[str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        in_memory: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        fields: tuple[str, ...] = ("z", "frac", "lattice", "xrd", "dos", "image"),
    ):
        super().__init__()
        if root is None and not shards:
            raise ValueError("CrystalDataModule needs root (a prepared folder/URL) or shards=['split=url', ...]")
        self.save_hyperparameters()
        self.config = self.hparams
        self.manifest: dict = {}
        self.splits: dict[str, list[ShardInfo]] = {}

    # --------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cfg = self.config
        if cfg.root is not None:
            self.manifest = load_manifest(cfg.root)
            for split, entry in self.manifest["splits"].items():
                self.splits[split] = [ShardInfo(_join(cfg.root, s["file"]), s["samples"]) for s in entry["shards"]]
        for item in cfg.shards or []:
            split, _, url = item.partition("=")
            if not url:
                raise ValueError(f"shard entry {item!r} must look like 'split=path_or_url'")
            self.splits.setdefault(split, []).append(ShardInfo(url, count_samples(url)))

    @property
    def property_names(self) -> list[str]:
        if self.manifest:
            return list(self.manifest.get("property_names", []))
        return []

    def _rank_world(self) -> tuple[int | None, int | None]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return None, None

    def split_shards(self, split: str) -> list[ShardInfo]:
        self.setup()
        if split not in self.splits:
            raise KeyError(f"split {split!r} not prepared; available: {sorted(self.splits)}")
        return self.splits[split]

    # --------------------------------------------------------------------------------------------- loaders
    def _loader(self, split: str, training: bool) -> EpochDataLoader:
        cfg = self.config
        batch_size = cfg.batch_size if training else (cfg.eval_batch_size or cfg.batch_size)
        shards = self.split_shards(split)
        common = dict(
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker,
            persistent_workers=False,
            pin_memory=False,
        )
        if cfg.in_memory:
            dataset = InMemoryCrystalDataset.from_shards(shards, cfg.fields)
            collate = partial(collate_samples, property_names=self.property_names or None)
            return EpochDataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=training,
                drop_last=training,
                collate_fn=collate,
                **common,
            )
        rank, world = self._rank_world()
        dataset = ShardDataset(
            shards,
            batch_size,
            training,
            cfg.shuffle_buffer,
            cfg.seed,
            rank,
            world,
            self.property_names or None,
            cfg.fields,
        )
        epoch_fn = (lambda: self.trainer.current_epoch) if (training and self.trainer is not None) else None
        return EpochDataLoader(dataset, batch_size=None, epoch_fn=epoch_fn, **common)

    def train_dataloader(self):
        return self._loader(self.config.train_split, training=True)

    def val_dataloader(self):
        return self._loader(self.config.val_split, training=False)

    def test_dataloader(self):
        return self._loader(self.config.test_split, training=False)

    def predict_dataloader(self):
        return self._loader(self.config.test_split, training=False)
