"""The main job, small enough for two CPU cores: real data -> aligned latent space -> text-conditioned decoder ->
samples from a prompt -> staged evaluation report.

``make demo`` runs ``mmcrystal demo``. With no network, point ``--mirror`` at a local copy of the public datasets
laid out as ``<mirror>/<dataset>/<file>`` (the development machines have one at ../shared/data). Every stage is the
same library code a full run uses; only the sizes are small, so the numbers show the pipeline works, not what the
model can do (BENCHMARKS.md has the real runs).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

__all__ = ["demo"]

log = logging.getLogger(__name__)


def _stage(name: str):
    print(f"\n=== {name} " + "=" * max(0, 100 - len(name)), flush=True)
    return time.perf_counter()


def _prepare(workdir: Path, mirror, cache_dir, limit: int, workers: int) -> tuple[Path, list[str], list[str]]:
    from mmcrystal.data.inspect import inspect_prepared
    from mmcrystal.data.prepare import PrepareConfig, dataset_sources, prepare_sources

    sources = dataset_sources("mp_20", splits=["val", "test"], mirror=mirror, cache_dir=cache_dir)
    for source in sources:  # MP-20's val split is the demo's training set; test stays held out
        source.split = "train" if source.split == "val" else source.split
    out = workdir / "mp20_shards"
    cfg = PrepareConfig(samples_per_shard=500, workers=workers, limit=limit, modalities=["captions", "xrd"])
    prepare_sources(sources, out, cfg, progress=False)
    print(inspect_prepared(str(out)))
    return out, [s.path for s in sources if s.split == "train"], [s.path for s in sources if s.split == "test"]


def _trainer(workdir: Path, name: str, steps: int):
    import lightning as L

    return L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=4, val_check_interval=steps, check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.CSVLogger(str(workdir), name=name), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=10,
    )  # fmt: skip


def _align(workdir: Path, shards: Path, steps: int) -> Path:
    from encoders import CSPNetConfig, TextConfig, xrd_config
    from mmcrystal.data.datamodule import CrystalDataModule
    from mmcrystal.model import AlignmentModelConfig
    from mmcrystal.tasks.alignment import AlignmentPretraining
    from mmcrystal.tasks.base import OptimConfig

    network = AlignmentModelConfig(
        modalities=["crystal", "text", "xrd"], latent_dim=128, projection_hidden=256,
        crystal=CSPNetConfig(hidden_dim=128, num_layers=3, num_freqs=8),
        text=TextConfig(freeze=True, max_length=32),  # MiniLM-L6 from the offline wheel, frozen
        xrd=xrd_config(1024, stem_channels=(32, 64), hidden_dim=128, num_layers=2),
    )  # fmt: skip
    task = AlignmentPretraining(network=network, optim=OptimConfig(lr=1e-3, warmup_steps=20))
    data = CrystalDataModule(root=str(shards), batch_size=48, val_split="test", fields=("z", "frac", "lattice", "xrd"))
    trainer = _trainer(workdir, "align", steps)
    trainer.fit(task, datamodule=data)
    keys = ("val/recall@1/text->crystal", "val/recall@1/xrd->crystal", "val/zero_shot_crystal_system")
    print({k: round(float(trainer.callback_metrics[k]), 3) for k in keys if k in trainer.callback_metrics})
    return task.save_pretrained(workdir / "aligned")


def _decoder(workdir: Path, shards: Path, aligned: Path, steps: int) -> Path:
    from mmcrystal.data.datamodule import CrystalDataModule
    from mmcrystal.diffusion.conditioning import ConditionConfig
    from mmcrystal.diffusion.denoiser import DenoiserConfig
    from mmcrystal.diffusion.num_atoms import NumAtomsConfig
    from mmcrystal.tasks.base import OptimConfig
    from mmcrystal.tasks.diffusion import CrystalDiffusion

    task = CrystalDiffusion(
        denoiser=DenoiserConfig(hidden_dim=128, num_layers=4, num_freqs=16, time_dim=64, num_heads=4, max_atoms=24),
        conditions=ConditionConfig(conditions=["text"], cond_dim=128, aligned_model=str(aligned)),
        num_atoms=NumAtomsConfig(hidden_dim=128, max_atoms=24),
        optim=OptimConfig(lr=1e-3, warmup_steps=20, weight_decay=0.0), ema_decay=0.99,
    )  # fmt: skip
    data = CrystalDataModule(root=str(shards), batch_size=32, val_split="test", fields=("z", "frac", "lattice"))
    trainer = _trainer(workdir, "diffusion", steps)
    trainer.fit(task, datamodule=data)
    print({k: round(float(v), 3) for k, v in trainer.callback_metrics.items() if k.startswith("val/loss")})
    return task.save_pretrained(workdir / "decoder")


def demo(
    workdir: str = "runs/demo",
    mirror: str | None = None,
    cache_dir: str | None = None,
    limit: int = 1500,
    align_steps: int = 240,
    diffusion_steps: int = 600,
    prompt: str = "A cubic crystal of NaCl with space group Fm-3m (No. 225) and 2 atoms in the unit cell.",
    target_composition: str = "NaCl",
    target_crystal_system: str = "cubic",
    target_space_group: int = 225,
    n_samples: int = 32,
    sample_steps: int = 100,
    workers: int = 2,
) -> dict:
    """Run the whole pipeline small: prepare MP-20 -> align -> train the decoder -> sample a prompt -> evaluate.

    Args:
        workdir: Folder for everything the demo writes (shards, runs, samples, the report).
        mirror: Local folder or base URL mirroring the datasets (no network needed), e.g. ../shared/data.
        cache_dir: Download cache (default: the user cache, ~/.cache/mmcrystal/datasets).
        limit: Records per split (MP-20 val becomes the training split, MP-20 test the held-out split).
        align_steps: Optimiser steps of the crystal-text-XRD alignment.
        diffusion_steps: Optimiser steps of the text-conditioned decoder.
        prompt: The text prompt to generate from.
        target_composition: What the prompt asks for, checked by the evaluation's adherence stage.
        target_crystal_system: Crystal system the prompt asks for.
        target_space_group: Space-group number the prompt asks for.
        n_samples: Structures to generate.
        sample_steps: Reverse-diffusion steps (below 100: the few-step sampler).
        workers: Worker processes for preparation and evaluation.

    Returns:
        A summary (also written to ``<workdir>/summary.json``).
    """
    from mmcrystal.evaluation.run import evaluate
    from mmcrystal.generate import sample

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root, timings = Path(workdir), {}
    t = _stage("1/5 prepare MP-20 (captions + simulated XRD)")
    shards, train_files, test_files = _prepare(root, mirror, cache_dir, limit, workers)
    timings["prepare_s"], t = time.perf_counter() - t, _stage("2/5 align crystal, text and XRD")
    aligned = _align(root, shards, align_steps)
    timings["align_s"], t = time.perf_counter() - t, _stage("3/5 train the text-conditioned decoder")
    decoder = _decoder(root, shards, aligned, diffusion_steps)
    timings["decoder_s"], t = time.perf_counter() - t, _stage(f"4/5 sample {n_samples} crystals: {prompt!r}")
    written = sample(str(decoder), str(root / "samples"), prompt=prompt, n=n_samples, steps=sample_steps, batch_size=16)
    timings["sample_s"], t = time.perf_counter() - t, _stage("5/5 staged evaluation")
    conditions = root / "prompt_targets.csv"  # what the prompt asks for, one row per sample, for adherence
    rows = [f"{i},{target_composition},{target_crystal_system},{target_space_group}" for i in range(n_samples)]
    conditions.write_text("\n".join(["row,composition,crystal_system,space_group", *rows]) + "\n")
    # novelty against the whole MP-20 val file (the demo trained on its first `limit` rows); coverage and
    # Wasserstein distances against a seeded 200-structure subset of MP-20 test (fingerprints cost ~0.1 s each)
    evaluate(
        str(root / "samples" / "cif"), str(root / "evaluation"), reference=train_files,
        distribution_reference=test_files, distribution_reference_max=200, split="test",
        train_split="MP-20 val (the demo's training rows) as novelty reference",
        stages=["validity", "matching", "adherence", "distribution"], dataset="mp20", workers=workers,
        conditions=str(conditions),
        diffusion_steps=sample_steps, seed=0, plots=True, cache_dir=str(root / "evaluation_cache"),
    )  # fmt: skip
    timings["evaluate_s"] = time.perf_counter() - t
    print((root / "evaluation" / "report.md").read_text()[:6000])
    summary = {"workdir": str(root), "samples": written, "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "evaluation": str(root / "evaluation" / "metrics.json")}  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\ndemo finished in {sum(timings.values()):.0f} s: {json.dumps(summary['timings_s'])}")
    return summary
