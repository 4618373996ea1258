"""`CrystalDataModule`: prepared shards (local folder, URL or object store) -> typed batches for Lightning.

Shards stream from a local folder, from http(s) (webdataset's curl pipe), or through any command that writes a
shard to stdout (``url_command="aws s3 cp {url} -"``, ``"gsutil cat {url}"``, ``"s5cmd cat {url}"``). Training
gives every rank and worker the same number of batches; the training loader's data position is saved in Lightning
checkpoints and restored on resume (guarantees in `mmcrystal.data.loader`).
"""

from __future__ import annotations

import json
from functools import partial

import lightning as L

from mmcrystal.data.batch import collate_samples
from mmcrystal.data.loader import (
    EpochDataLoader,
    InMemoryCrystalDataset,
    ResumableSampler,
    ShardDataset,
    ShardInfo,
    count_samples,
    seed_worker,
)

__all__ = ["CrystalDataModule", "load_manifest", "stream_url"]


def _join(root: str, name: str) -> str:
    return name if "://" in name or name.startswith("/") else f"{root.rstrip('/')}/{name}"


def stream_url(url: str, url_command: str | None) -> str:
    """A remote URL as ``pipe:<command>`` when a command template (with ``{url}``) is given; local paths and
    ``pipe:`` URLs unchanged."""
    if url_command is None or "://" not in url or url.startswith(("pipe:", "file://")):
        return url
    if "{url}" not in url_command:
        raise ValueError(f"url_command {url_command!r} must contain '{{url}}' where the shard URL goes")
    return "pipe:" + url_command.format(url=url)


def load_manifest(root: str, url_command: str | None = None) -> dict:
    """Read ``manifest.json`` from a prepared folder or a base URL (through `url_command` if given)."""
    url = stream_url(_join(root, "manifest.json"), url_command)
    if "://" in url or url.startswith("pipe:"):
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
        resample: Training draws shards with replacement per reader slot (multi-node runs with few or uneven
            shards); an epoch is then ``epoch_samples`` samples.
        epoch_samples: Training samples per epoch over all ranks; default: the training split's size.
        url_command: Shell command template that streams a remote shard to stdout, with ``{url}`` for its URL
            (``"aws s3 cp {url} -"``); used for every non-local URL, the manifest included. Default: http(s)
            through curl, other schemes through webdataset's handlers.
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
        resample: bool = False,
        epoch_samples: int | None = None,
        url_command: str | None = None,
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
        command = cfg.url_command
        if cfg.root is not None:
            self.manifest = load_manifest(cfg.root, command)
            for split, entry in self.manifest["splits"].items():
                self.splits[split] = [
                    ShardInfo(stream_url(_join(cfg.root, s["file"]), command), s["samples"]) for s in entry["shards"]
                ]
        for item in cfg.shards or []:
            split, _, url = item.partition("=")
            if not url:
                raise ValueError(f"shard entry {item!r} must look like 'split=path_or_url'")
            url = stream_url(url, command)
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

    def _data_position(self) -> tuple[int, int]:
        """(epoch, training batches of it finished) from Lightning's progress counters; a finished epoch is
        reported as the start of the next one."""
        trainer = self.trainer
        epoch, done = trainer.current_epoch, int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return epoch, done

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
        rank, world = self._rank_world()
        attached = training and self.trainer is not None
        common = dict(
            num_workers=cfg.num_workers,
            worker_init_fn=seed_worker,
            persistent_workers=False,
            pin_memory=False,
            epoch_fn=(lambda: self.trainer.current_epoch) if attached else None,
            position_fn=self._data_position if attached else None,
            seed=cfg.seed,
            rank=rank or 0,
            resumable=training,
        )
        if cfg.in_memory:
            dataset = InMemoryCrystalDataset.from_shards(shards, cfg.fields)
            collate = partial(collate_samples, property_names=self.property_names or None)
            # a DistributedSampler (which Lightning leaves alone) even on one process: seeded, resumable order
            sampler = ResumableSampler(dataset, world or 1, rank or 0, shuffle=training, seed=cfg.seed)
            return EpochDataLoader(
                dataset, batch_size=batch_size, sampler=sampler, drop_last=training, collate_fn=collate, **common
            )
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
            resample=cfg.resample,
            epoch_samples=cfg.epoch_samples,
        )
        return EpochDataLoader(dataset, batch_size=None, **common)

    def train_dataloader(self):
        return self._loader(self.config.train_split, training=True)

    def val_dataloader(self):
        return self._loader(self.config.val_split, training=False)

    def test_dataloader(self):
        return self._loader(self.config.test_split, training=False)

    def predict_dataloader(self):
        return self._loader(self.config.test_split, training=False)
