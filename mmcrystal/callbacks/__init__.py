"""Lightning callbacks for training at cluster scale: throughput and data-wait logging, step checkpoints,
preemption-safe checkpointing (SIGTERM, SLURM's requeue signal), per-rank RNG state in checkpoints, optional
torch.compile. `mmcrystal.train.build_callbacks` wires them into every ``mmcrystal <stage> fit``."""

from mmcrystal.callbacks.checkpoints import PreemptionCheckpoint, StepCheckpoint, TrainingPreempted
from mmcrystal.callbacks.compile import CompileNetworks
from mmcrystal.callbacks.rng import RNGStateCheckpoint, capture_rng_state, restore_rng_state
from mmcrystal.callbacks.throughput import ThroughputMonitor

__all__ = [
    "CompileNetworks",
    "PreemptionCheckpoint",
    "RNGStateCheckpoint",
    "StepCheckpoint",
    "ThroughputMonitor",
    "TrainingPreempted",
    "capture_rng_state",
    "restore_rng_state",
]
