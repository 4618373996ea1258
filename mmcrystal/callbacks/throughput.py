"""Training throughput, data-wait fraction and GPU memory, logged every step and summarised for benchmarks.

Per training batch (micro-batch under gradient accumulation), on each rank:

- *wait*: wall time from the previous batch's end to this batch's start. Lightning fetches the next batch in that
  gap, so it is the time spent waiting on the loader, plus Lightning's per-step bookkeeping and any checkpoint
  written at that step (validation is excluded). It is an upper bound on the loader's share.
- *step*: wall time from batch start to batch end (forward, backward, optimiser). On CUDA the host runs ahead of
  the GPU unless ``cuda_sync=True`` synchronises at each batch end (exact attribution, slightly slower training).

Logged (rank 0's values reach the logger): ``perf/samples_per_sec`` (global: this rank's crystals x world size,
over the last `window` batches' wall time), ``perf/data_wait_fraction`` (wait / (wait + step) over the window),
``perf/step_ms`` and, on CUDA, ``perf/gpu_max_mem_gib`` (peak allocated since the start, GiB).
"""

from __future__ import annotations

import time
from collections import deque

import lightning as L
import torch

__all__ = ["ThroughputMonitor"]


def _batch_size(batch) -> int:
    if hasattr(batch, "__len__"):
        return len(batch)
    raise TypeError(f"ThroughputMonitor cannot count the samples of a {type(batch).__name__} batch")


class ThroughputMonitor(L.Callback):
    """Logs samples/s, the data-wait fraction and peak GPU memory; `summary()` aggregates a whole run.

    Args:
        window: Batches averaged in the logged values.
        warmup_batches: Batches left out of `summary()` (start-up, compilation, allocator warm-up).
        cuda_sync: Synchronise CUDA at each batch end so step time includes the GPU's work.
    """

    def __init__(self, window: int = 50, warmup_batches: int = 5, cuda_sync: bool = False):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.warmup_batches, self.cuda_sync = window, warmup_batches, cuda_sync
        self._recent: deque[tuple[float, float, int]] = deque(maxlen=window)  # (wait s, step s, global samples)
        self._last_end: float | None = None
        self._start = 0.0
        self._wait = 0.0
        self._val_start: float | None = None
        self.batches = 0
        self.totals = {"wait_s": 0.0, "step_s": 0.0, "samples": 0, "batches": 0}

    # ---------------------------------------------------------------------------------------------- timing
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = time.perf_counter()  # the loader's start-up counts as waiting

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None and self._last_end is not None:
            self._last_end += time.perf_counter() - self._val_start  # validation is not data wait
        self._val_start = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._wait = now - self._last_end if self._last_end is not None else 0.0
        self._start = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        on_cuda = pl_module.device.type == "cuda"
        if self.cuda_sync and on_cuda:
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        step = now - self._start
        self._last_end = now
        samples = _batch_size(batch) * trainer.world_size
        self._recent.append((self._wait, step, samples))
        self.batches += 1
        if self.batches > self.warmup_batches:
            self.totals["wait_s"] += self._wait
            self.totals["step_s"] += step
            self.totals["samples"] += samples
            self.totals["batches"] += 1
        wait_sum = sum(r[0] for r in self._recent)
        step_sum = sum(r[1] for r in self._recent)
        elapsed = wait_sum + step_sum
        metrics = {
            "perf/samples_per_sec": sum(r[2] for r in self._recent) / elapsed if elapsed > 0 else 0.0,
            "perf/data_wait_fraction": wait_sum / elapsed if elapsed > 0 else 0.0,
            "perf/step_ms": 1000.0 * step,
        }
        if on_cuda:
            metrics["perf/gpu_max_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, batch_size=1)

    # ---------------------------------------------------------------------------------------------- summary
    def summary(self) -> dict[str, float]:
        """Totals after the warm-up batches: global samples/s, data-wait fraction, batches, seconds."""
        t = self.totals
        seconds = t["wait_s"] + t["step_s"]
        out = {
            "batches": float(t["batches"]),
            "samples": float(t["samples"]),
            "seconds": seconds,
            "samples_per_sec": t["samples"] / seconds if seconds > 0 else float("nan"),
            "data_wait_fraction": t["wait_s"] / seconds if seconds > 0 else float("nan"),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out
