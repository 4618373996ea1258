"""Decoder updates in the design loop (`DecoderFineTuner`): the decoder learns its hits, only the denoiser and
atom-count head move, updates are seeded, and a resumed run that replays them ends with the uninterrupted weights."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from pymatgen.core import Structure

from mmcrystal.data.batch import collate_samples
from mmcrystal.design.decoder_update import DecoderFineTuner
from mmcrystal.finetune.data import structure_sample
from mmcrystal.generate import CrystalGenerator

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture()
def generator(tiny_decoder) -> CrystalGenerator:
    return CrystalGenerator.from_pretrained(tiny_decoder)


@pytest.fixture(scope="module")
def hits(shared_data) -> tuple[list, list[dict]]:
    frame = pd.read_csv(shared_data / "mp_20" / "test.csv.gz", nrows=40)
    frame = frame[[len(Structure.from_str(c, fmt="cif")) <= 12 for c in frame["cif"]]].head(6)
    structures = [Structure.from_str(c, fmt="cif") for c in frame["cif"]]
    return structures, [{"band_gap": float(v), "hit": True} for v in frame["band_gap"]]


def _loss(model, structures, rows) -> float:
    """Mean training loss over the hits with fixed noise (8 draws)."""
    batch = collate_samples([structure_sample(s, str(i), {"band_gap": r["band_gap"]})
                             for i, (s, r) in enumerate(zip(structures, rows, strict=True))], ["band_gap"])  # fmt: skip
    with torch.no_grad():
        return sum(float(model.losses(batch, torch.Generator().manual_seed(k))["loss"]) for k in range(8)) / 8


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_update_learns_the_hits_and_moves_only_denoiser_and_head(generator, hits):
    structures, rows = hits
    model = generator.model
    before, state = _loss(model, structures, rows), _state(model)
    tuner = DecoderFineTuner(steps=30, lr=3e-3, batch_size=6, seed=0)
    assert tuner(generator, structures, rows) is generator
    after = _loss(model, structures, rows)
    assert after < 0.9 * before, (before, after)
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, state[k])}
    assert changed == {"denoiser", "num_atoms"}  # the condition encoder keeps its meaning
    assert not model.training and tuner.updates == 1 and len(tuner.buffer) == len(structures)
    assert tuner.history[0]["loss_last"] < tuner.history[0]["loss_first"] * 1.5
    assert all(v == {"band_gap": r["band_gap"]} for (_, v, _), r in zip(tuner.buffer, rows, strict=True))


def test_updates_are_seeded_and_a_round_without_hits_changes_nothing(generator, hits):
    structures, rows = hits
    twin = CrystalGenerator(copy.deepcopy(generator.model))
    start = _state(generator.model)
    DecoderFineTuner(steps=3, lr=1e-3, seed=5)(generator, structures, rows)
    DecoderFineTuner(steps=3, lr=1e-3, seed=5)(twin, structures, rows)
    for key, value in generator.model.state_dict().items():
        assert torch.equal(value, twin.model.state_dict()[key]), key
    other = CrystalGenerator(copy.deepcopy(twin.model))
    other.model.load_state_dict(start)
    DecoderFineTuner(steps=3, lr=1e-3, seed=6)(other, structures, rows)
    twin_state = twin.model.state_dict()
    assert any(not torch.equal(v, twin_state[k]) for k, v in other.model.state_dict().items())  # another seed
    idle, frozen = DecoderFineTuner(), _state(twin.model)
    idle(twin, [], [])
    assert idle.updates == 0 and all(torch.equal(v, frozen[k]) for k, v in twin.model.state_dict().items())
    with pytest.raises(ValueError, match="positive"):
        DecoderFineTuner(steps=0)


def test_design_run_with_decoder_updates_resumes_to_the_same_decoder(tmp_path, tiny_decoder, shared_data):
    from mmcrystal.design.config import PropertyObjective
    from mmcrystal.design.run import load_design_config, run_design

    reference, held_out = tmp_path / "reference.csv", tmp_path / "held_out.csv"
    mp20 = shared_data / "mp_20"
    pd.read_csv(mp20 / "train_partial" / "opryan90_train_named_subset.csv", nrows=40).to_csv(reference, index=False)
    pd.read_csv(mp20 / "test.csv.gz", nrows=40).to_csv(held_out, index=False)
    cfg = load_design_config(CONFIGS / "tiny" / "design.yaml", reference=[str(reference)],
                             cache_dir=str(tmp_path / "cache"), oracle={"property_reference": [str(held_out)]},
                             screen={"require_novel": False, "require_smact": False},
                             strategy={"finetune_decoder": True, "decoder_steps": 3, "decoder_lr": 1e-3},
                             budget={"max_rounds": 3, "samples_per_round": 8, "oracle_per_round": 3,
                                     "max_oracle_calls": 9})  # fmt: skip
    # a window every oracle value falls in: hits are the S.U.N. candidates, so updates happen
    cfg = replace(cfg, objectives=[PropertyObjective(name="band_gap", low=-100.0, high=100.0)])
    full = CrystalGenerator.from_pretrained(tiny_decoder)
    run_design(replace(cfg, out=str(tmp_path / "full")), generator=full, report=False)
    state = json.loads((tmp_path / "full" / "state.json").read_text())
    assert state["round"] == 3 and sum(h["hits"] for h in state["history"]) > 0

    def stop_after_first(k, summary):
        if k == 0:
            raise KeyboardInterrupt

    cut = replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        run_design(cut, generator=CrystalGenerator.from_pretrained(tiny_decoder), on_round_end=stop_after_first,
                   report=False)  # fmt: skip
    resumed = CrystalGenerator.from_pretrained(tiny_decoder)  # a fresh process: the decoder as it was exported
    run_design(cut, generator=resumed, report=False)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for k in range(3):
        name = f"rounds/round_{k:04d}.jsonl"
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text()
    untouched = CrystalGenerator.from_pretrained(tiny_decoder).model.state_dict()
    assert any(not torch.equal(v, untouched[k]) for k, v in full.model.state_dict().items())
