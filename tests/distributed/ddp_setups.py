"""Tiny tasks, trainers and a 2-process gloo launcher shared by the training tests (tests/test_train.py and
tests/distributed/). Spawned workers import this module by name, so it holds everything they run."""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from pathlib import Path

import lightning as L
import torch
import torch.multiprocessing as mp

from encoders import CSPNetConfig, TextConfig
from mmcrystal.callbacks import PreemptionCheckpoint, RNGStateCheckpoint, StepCheckpoint
from mmcrystal.data.datamodule import CrystalDataModule
from mmcrystal.diffusion import DenoiserConfig, NumAtomsConfig
from mmcrystal.diffusion.conditioning import ConditionConfig
from mmcrystal.model import AlignmentModelConfig
from mmcrystal.tasks.alignment import AlignmentPretraining
from mmcrystal.tasks.base import OptimConfig
from mmcrystal.tasks.diffusion import CrystalDiffusion

TEXT = TextConfig(model_name="tiny-random")


def prepare_uneven(out: Path, shared_data: Path) -> Path:
    """MP-20 with captions: 60 train (test.csv.gz) and 60 val structures, each split in shards of 16, 16, 16, 12."""
    from mmcrystal.data.prepare import PrepareConfig, prepare_sources
    from mmcrystal.data.readers import SourceSpec

    sources = [SourceSpec(str(shared_data / "mp_20" / "test.csv.gz"), split="train"),
               SourceSpec(str(shared_data / "mp_20" / "val.csv.gz"), split="val")]  # fmt: skip
    cfg = PrepareConfig(samples_per_shard=16, workers=0, limit=60, modalities=["captions"])
    prepare_sources(sources, out, cfg, progress=False)
    return out


def tiny_alignment(seed: int = 0) -> AlignmentPretraining:
    torch.manual_seed(seed)
    network = AlignmentModelConfig(
        modalities=["crystal", "text"], latent_dim=16, projection_hidden=32,
        crystal=CSPNetConfig(hidden_dim=16, num_layers=1, num_freqs=2), text=TEXT,
    )  # fmt: skip
    return AlignmentPretraining(network=network, optim=OptimConfig(lr=3e-3, warmup_steps=2))


def tiny_diffusion(data_root: str | Path, seed: int = 0) -> CrystalDiffusion:
    torch.manual_seed(seed)
    return CrystalDiffusion(
        denoiser=DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, num_heads=2),
        conditions=ConditionConfig(conditions=["text", "properties"], cond_dim=16, text=TEXT, properties=["band_gap"]),
        num_atoms=NumAtomsConfig(hidden_dim=16, num_layers=1, max_atoms=32),
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
        ema_decay=0.9,
        manifest_root=str(data_root),
    )


def build_task(name: str, data_root, seed: int = 0):
    return tiny_alignment(seed) if name == "align" else tiny_diffusion(data_root, seed)


def no_dropout(module: torch.nn.Module) -> None:
    """Switch dropout off (nn.Dropout and attention dropout), so runs that draw different masks compare."""
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = 0.0


def datamodule(data_root, **kwargs) -> CrystalDataModule:
    defaults = dict(root=str(data_root), batch_size=4, shuffle_buffer=8, seed=3)
    return CrystalDataModule(**{**defaults, **kwargs})


def trainer(root: Path, max_steps: int, callbacks=(), devices: int = 1, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=max_steps,
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
        num_sanity_val_steps=0, limit_val_batches=1, log_every_n_steps=1,
    )  # fmt: skip
    return L.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


def resume_callbacks(ckpt_dir: Path, every: int = 0, extra=()) -> list:
    """`extra` first: a signal sent there is seen by PreemptionCheckpoint in the same batch end."""
    return [*extra, PreemptionCheckpoint(ckpt_dir), RNGStateCheckpoint(), StepCheckpoint(ckpt_dir, every)]


class SignalAtStep(L.Callback):
    """Sends `signum` to this process once the optimiser step `step` is done (on `ranks` only)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM, ranks=(0,)):
        self.step, self.signum, self.ranks = step, signum, ranks

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank in self.ranks:
            os.kill(os.getpid(), self.signum)


def weights(task: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (the EMA copy included), detached and cloned."""
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


def optimizer_state(trainer: L.Trainer) -> list[torch.Tensor]:
    state = trainer.optimizers[0].state_dict()["state"]
    return [t.clone() for k in sorted(state) for t in state[k].values() if isinstance(t, torch.Tensor)]


def fit(task, data_root, root: Path, steps: int, callbacks, ckpt_path=None, data=None, **kwargs) -> L.Trainer:
    """`trainer(...)` fitting `task` on `datamodule(data_root, **data)`."""
    run = trainer(root, steps, callbacks, **kwargs)
    run.fit(task, datamodule=datamodule(data_root, **(data or {})), ckpt_path=ckpt_path)
    return run


def uninterrupted(name: str, data_root, root: Path, steps: int, devices: int = 1, **kwargs) -> tuple[dict, list]:
    """Weights and optimiser state after `steps` steps without interruption (global seed 0, task seed 0)."""
    torch.manual_seed(0)
    task = build_task(name, data_root, seed=0)
    run = fit(task, data_root, root, steps, resume_callbacks(root / "ckpt"), devices=devices, **kwargs)
    return weights(task), optimizer_state(run)


def assert_same_state(resumed: tuple[dict, list], reference: tuple[dict, list]) -> None:
    """Bitwise equal weights (EMA and its update count included) and optimiser state."""
    (got_w, got_o), (want_w, want_o) = resumed, reference
    assert got_w.keys() == want_w.keys()
    for key in want_w:
        assert torch.equal(got_w[key], want_w[key]), key
    assert len(got_o) == len(want_o) > 0 and all(torch.equal(a, b) for a, b in zip(got_o, want_o, strict=True))


# ------------------------------------------------------------------------------------------- 2-process launcher
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, scenario, args: tuple, out: str) -> None:
    # what torchrun / srun provide; Lightning then uses these processes instead of launching its own
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(1)
    # this process was spawned, which made spawn the default for its own children; loader workers fork, as they
    # do under torchrun or srun (spawned workers would re-import everything, tens of seconds each)
    mp.set_start_method("fork", force=True)
    try:
        result = scenario(rank, *args)
    except BaseException:  # noqa: BLE001 - reported to the test process
        Path(f"{out}.rank{rank}.error").write_text(traceback.format_exc())
        raise
    torch.save(result, f"{out}.rank{rank}.pt")


def run_ranks(scenario, args: tuple, out: Path, world: int = 2, timeout: float = 120.0) -> list:
    """Run `scenario(rank, *args)` in `world` gloo processes; each rank's return value, in rank order. A run that
    does not finish within `timeout` seconds (a hang) is killed and reported."""
    context = mp.start_processes(
        _entry, args=(world, free_port(), scenario, args, str(out)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{scenario.__name__} did not finish within {timeout} s (a DDP hang?)")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
        errors = [p.read_text() for p in sorted(out.parent.glob(f"{out.name}.rank*.error"))]
        raise RuntimeError("\n".join(errors) or str(err)) from None
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(f"{out}.rank{rank}.pt", weights_only=False) for rank in range(world)]


# ------------------------------------------------------------------------------------------- fixed batches
def rank_batch(data_root, rank: int, per_rank: int = 4):
    """Samples [rank * per_rank, (rank + 1) * per_rank) of the train split, collated with each first caption; with
    rank=None, all of the first 2 * per_rank (the global batch of 2 ranks)."""
    from mmcrystal.data.batch import collate_samples
    from mmcrystal.data.datamodule import load_manifest
    from mmcrystal.data.loader import InMemoryCrystalDataset, ShardInfo

    manifest = load_manifest(str(data_root))
    shards = [ShardInfo(str(Path(data_root) / s["file"]), s["samples"]) for s in manifest["splits"]["train"]["shards"]]
    samples = InMemoryCrystalDataset.from_shards(shards).samples
    chosen = samples[: 2 * per_rank] if rank is None else samples[rank * per_rank : (rank + 1) * per_rank]
    return collate_samples(chosen, manifest["property_names"])


def _identity(item):
    return item


def fixed_loader(batches: list):
    return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=_identity)


class Capture(L.Callback):
    """Records the first step's loss and gradients (after DDP's all-reduce, before clipping and the step)."""

    def __init__(self):
        self.loss, self.grads = None, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.loss is None:
            self.loss = float(outputs["loss"])


class SeedEachRank(L.Callback):
    """torch.manual_seed(base + rank) just before the first training batch (what the reference replays)."""

    def __init__(self, base: int):
        self.base, self.done = base, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.done:
            torch.manual_seed(self.base + trainer.global_rank)
            self.done = True
