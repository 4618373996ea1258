"""CrystalGenerator and `mmcrystal sample`: guidance 0 is unconditional, atom counts predicted or honoured, CSP keeps
the composition, streaming to disk, and resuming deleted or interrupted batches with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from encoders import TextConfig
from mmcrystal.data.datamodule import load_manifest
from mmcrystal.diffusion import AtomTypeConfig, DenoiserConfig, DiffusionConfig, NumAtomsConfig
from mmcrystal.diffusion.conditioning import ConditionConfig
from mmcrystal.generate import (
    CrystalDiffusionModel,
    CrystalGenerator,
    DiffusionModelConfig,
    model_fingerprint,
    normalization_from_manifest,
    sample,
    write_samples,
)
from mmcrystal.tasks.diffusion import CrystalDiffusion

TINY = DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=2, time_dim=8, num_heads=2)
HEAD = NumAtomsConfig(hidden_dim=16, num_layers=2, max_atoms=12)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory, mp40_tiny):
    """An (untrained) text + band-gap decoder exported with `save_pretrained`."""
    torch.manual_seed(0)
    conditions = ConditionConfig(conditions=["text", "properties"], cond_dim=16, properties=["band_gap"],
                                 text=TextConfig(model_name="tiny-random"))  # fmt: skip
    task = CrystalDiffusion(denoiser=TINY, conditions=conditions, num_atoms=HEAD, manifest_root=str(mp40_tiny))
    return task.save_pretrained(tmp_path_factory.mktemp("decoder") / "pretrained")


def _same(a: list, b: list) -> None:
    assert [s.composition for s in a] == [s.composition for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.lattice.matrix.tolist() == y.lattice.matrix.tolist()
        assert x.frac_coords.tolist() == y.frac_coords.tolist()


def test_guidance_zero_equals_unconditional_sampling(decoder):
    generator = CrystalGenerator.from_pretrained(decoder)
    common = dict(n=3, steps=4, seed=3, num_atoms=[2, 4, 3], batch_size=2)
    unconditional = generator.sample(**common)
    scale_zero = generator.sample(prompt="a cubic oxide", properties={"band_gap": 2.0}, guidance=0.0, **common)
    guided = generator.sample(prompt="a cubic oxide", properties={"band_gap": 2.0}, guidance=2.0, **common)
    assert [len(s) for s in unconditional] == [2, 4, 3]
    for u, z in zip(unconditional, scale_zero, strict=True):
        assert u.species == z.species
        torch.testing.assert_close(torch.tensor(u.frac_coords), torch.tensor(z.frac_coords), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(u.lattice.matrix), torch.tensor(z.lattice.matrix), atol=1e-4, rtol=0)
    assert any(u.frac_coords.tolist() != g.frac_coords.tolist() for u, g in zip(unconditional, guided, strict=True))
    _same(generator.sample(**common), unconditional)  # same seed, same crystals


def test_atom_counts_predicted_from_the_condition_or_honoured(decoder):
    generator = CrystalGenerator.from_pretrained(decoder)
    last = generator.model.num_atoms.mlp[-1]
    with torch.no_grad():  # make the head certain of 7 atoms for any condition
        last.weight.zero_()
        last.bias.fill_(-30.0)
        last.bias[6] = 30.0
    predicted = generator.sample(prompt="a layered sulfide", n=3, steps=2)
    assert [len(s) for s in predicted] == [7, 7, 7]
    assert [len(s) for s in generator.sample(prompt="a layered sulfide", n=2, steps=2, num_atoms=4)] == [4, 4]
    assert [len(s) for s in generator.sample(prompt="x", n=3, steps=2, num_atoms=[1, 2, 5])] == [1, 2, 5]
    # no condition at all: the training split's histogram of atom counts
    histogram = generator.model.normalization["num_atoms_histogram"]
    support = {int(k) for k, v in histogram.items() if v and int(k) <= HEAD.max_atoms}
    assert {len(s) for s in generator.sample(n=6, steps=2)} <= support


def test_csp_composition_prompt_keeps_the_composition(mp40_tiny):
    torch.manual_seed(0)
    config = DiffusionModelConfig(
        denoiser=TINY,
        diffusion=DiffusionConfig(types=AtomTypeConfig(fixed_composition=True)),
        conditions=ConditionConfig(conditions=["composition"], cond_dim=16),
        num_atoms=HEAD,
        normalization=normalization_from_manifest(load_manifest(str(mp40_tiny))),
    )
    generator = CrystalGenerator(CrystalDiffusionModel(config))
    structures = generator.sample(composition="SrTiO3", n=3, steps=3, guidance=1.0)
    assert [s.composition.formula for s in structures] == ["Sr1 Ti1 O3"] * 3
    doubled = generator.sample(composition="SrTiO3", n=2, steps=3, num_atoms=10)
    assert [s.composition.formula for s in doubled] == ["Sr2 Ti2 O6"] * 2
    with pytest.raises(ValueError, match="formula units"):
        generator.sample(composition="SrTiO3", n=1, steps=2, num_atoms=7)
    with pytest.raises(ValueError, match="composition"):
        generator.sample(n=1, steps=2)


def test_few_step_sampler_below_100_steps(decoder):
    generator = CrystalGenerator.from_pretrained(decoder)
    few, full = generator.sampler(50, 2.0, 8).config, generator.sampler(1000, {"text": 1.5}, 8).config
    assert few.num_steps == 50 and few.lattice_eta == 1.0 and few.guidance.scale == 2.0
    assert few.guidance.mode == "joint" and few.guidance.always == []
    assert full.num_steps == 1000 and full.lattice_eta == 1.0 and full.corrector_steps == 1
    generator.sampler_settings = {"lattice_eta": 0.0, "corrector_steps": 0}  # e.g. the pre-2026-12 few-step lattice
    few = generator.sampler(50, 2.0, 8).config
    assert few.lattice_eta == 0.0 and few.corrector_steps == 0 and few.num_steps == 50
    generator.sampler_settings = {"num_steps": 10, "corector_steps": 0}  # steps come from `steps`; a typo
    with pytest.raises(ValueError, match=r"\['corector_steps', 'num_steps'\] are not SamplerConfig fields"):
        generator.sampler(50, 2.0, 8)
    generator.sampler_settings = {"corrector_steps": 2.0, "step_lr": 1}  # JSON numbers: converted to the field types
    few = generator.sampler(50, 2.0, 8).config
    assert few.corrector_steps == 2 and isinstance(few.corrector_steps, int) and isinstance(few.step_lr, float)
    for bad in ({"corrector_steps": 1.5}, {"step_lr": "small"}):
        generator.sampler_settings = bad
        with pytest.raises(ValueError, match="must be a"):
            generator.sampler(50, 2.0, 8)
    # a mapping scales the named conditions; the other given ones (here all of the model's) stay at 1
    assert full.guidance.mode == "per_condition" and full.guidance.scales == {"text": 1.5, "properties": 1.0}


def test_requests_the_model_cannot_honour_raise(decoder):
    generator = CrystalGenerator.from_pretrained(decoder)
    with pytest.raises(ValueError, match="unknown properties"):
        generator.sample(properties={"density": 3.0}, n=1, steps=2)
    with pytest.raises(ValueError, match="not a whole number of NaCl formula units"):
        generator.sample(composition="NaCl", num_atoms=3, n=1, steps=2)  # a de novo model holds the composition
    with pytest.raises(ValueError, match="not a chemical formula"):
        generator.sample(composition="Nacl2x", n=1, steps=2)
    with pytest.raises(ValueError, match="xrd"):
        generator.sample(xrd=torch.rand(64), n=1, steps=2)


def _snapshot(out) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("progress.json", "manifest.json"))
    return {str(p.relative_to(out)): p.read_text() for p in files}


def test_sample_command_streams_batches_and_resumes_deleted_ones(decoder, tmp_path):
    request = dict(prompt="a cubic perovskite", properties={"band_gap": 1.5}, n=8, batch_size=4, steps=3, seed=5)
    summary = sample(str(decoder), str(tmp_path / "run"), **request)
    out = tmp_path / "run"
    assert summary["complete"] and summary["num_batches"] == 2 and summary["skipped_batches"] == []
    assert len(list((out / "cif").glob("*.cif"))) == 8 and len(list((out / "extxyz").glob("*.extxyz"))) == 2
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"sample_{i:06d}" for i in range(8)]
    first = lines[0]
    assert first["prompt"] == "a cubic perovskite" and first["conditions"]["properties"] == {"band_gap": 1.5}
    assert first["seed"] == 5 and first["steps"] == 3 and first["guidance"] == 2.0 and first["formula"]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["batches_done"] == [0, 1] and progress["samples_done"] == 8
    reference = _snapshot(out)
    for i in range(4, 8):  # delete the second batch's files
        (out / "cif" / f"sample_{i:06d}.cif").unlink()
    (out / "extxyz" / "batch_00001.extxyz").unlink()
    again = sample(str(decoder), str(out), **request)
    assert again["skipped_batches"] == [0] and again["complete"]
    assert _snapshot(out) == reference
    with pytest.raises(ValueError, match="another request"):
        sample(str(decoder), str(out), **{**request, "seed": 6})


def test_interrupted_run_resumes_and_completes(decoder, tmp_path):
    request = dict(prompt="a rock-salt chloride", n=8, batch_size=4, steps=3, seed=1)
    sample(str(decoder), str(tmp_path / "reference"), **request)
    out = tmp_path / "interrupted"

    def stop(structures, index):
        raise KeyboardInterrupt(f"stopped after batch {index}")

    with pytest.raises(KeyboardInterrupt):
        write_samples(CrystalGenerator.from_pretrained(decoder), out, model_id=model_fingerprint(decoder),
                      callback=stop, **request)  # fmt: skip
    progress = json.loads((out / "progress.json").read_text())
    assert progress["batches_done"] == [0] and not progress["complete"]
    summary = sample(str(decoder), str(out), **request)
    assert summary["complete"] and summary["skipped_batches"] == [0]
    assert _snapshot(out) == _snapshot(tmp_path / "reference")


def test_sample_through_the_console_script(decoder, tmp_path):
    from mmcrystal.cli import main

    main(["sample", "--model", str(decoder), "--out", str(tmp_path / "cli"), "--prompt", "a cubic crystal",
          "--n", "2", "--batch_size", "2", "--steps", "2", "--properties", '{"band_gap": 0.5}',
          "--guidance", '{"text": 3, "properties": 1.5}'])  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "cli" / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["conditions"]["properties"] == {"band_gap": 0.5}
    assert lines[0]["guidance"] == {"text": 3.0, "properties": 1.5}
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 2 and len(manifest["batches"]) == 1
    with pytest.raises(ValueError, match="--model"):
        sample(out=str(tmp_path / "nothing"))
    # sampler settings over the defaults are recorded with the request (and so refuse a folder of other settings)
    main(["sample", "--model", str(decoder), "--out", str(tmp_path / "no_corrector"), "--prompt", "a cubic crystal",
          "--n", "2", "--batch_size", "2", "--steps", "2", "--sampler", '{"corrector_steps": 0}'])  # fmt: skip
    progress = json.loads((tmp_path / "no_corrector" / "progress.json").read_text())
    assert progress["request"]["sampler"] == {"corrector_steps": 0}
    with pytest.raises(ValueError, match="another request"):
        sample(str(decoder), str(tmp_path / "no_corrector"), prompt="a cubic crystal", n=2, batch_size=2, steps=2)


def test_pretrained_folders_of_the_old_module_path_still_load(decoder, tmp_path):
    """Folders written before the split record `mmcrystal.generate.DiffusionModelConfig`."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(decoder, old)
    meta = json.loads((old / "config.json").read_text())
    assert meta["config"]["class_path"] == "mmcrystal.generation.model.DiffusionModelConfig"
    meta["config"]["class_path"] = "mmcrystal.generate.DiffusionModelConfig"
    (old / "config.json").write_text(json.dumps(meta))
    request = dict(prompt="a cubic crystal", n=2, steps=2, seed=4)
    _same(
        CrystalGenerator.from_pretrained(old).sample(**request),
        CrystalGenerator.from_pretrained(decoder).sample(**request),
    )
