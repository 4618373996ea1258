"""End to end: `evaluate` on constructed samples (every stage), skipped records, resumption after an interruption."""

from __future__ import annotations

import csv
import json

import pytest
from eval_crystals import bcc_sodium, cesium_chloride, chlorine_crystal, rocksalt, write_csv
from pymatgen.core import Lattice, Structure

from mmcrystal.evaluation.run import EvaluationConfig, evaluate, run_evaluation
from mmcrystal.evaluation.stability import RelaxConfig


def _samples():
    noisy = rocksalt()
    noisy.perturb(0.01)
    return {
        "nacl": rocksalt(),
        "nacl_copy": noisy,  # duplicate of "nacl"
        "cscl": cesium_chloride(),  # novel polymorph, above the hull
        "overlap": Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]),
        "nacl2": Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]),
        "kcl": rocksalt(6.29, "K", "Cl"),  # in the reference set
        "kbr": rocksalt(6.6, "K", "Br"),  # no elemental Br reference (ASE has no simple Br crystal): no hull
    }


@pytest.fixture
def files(tmp_path):
    samples = write_csv(tmp_path / "samples.csv", _samples())
    with open(samples, "a") as handle:
        handle.write('broken,"data_broken\n_cell_length_a nonsense\n"\n')
    refs = {
        "ref-nacl": rocksalt(5.6),
        "ref-na": bcc_sodium(),
        "ref-cl": chlorine_crystal(),
        "ref-kcl": rocksalt(6.3, "K", "Cl"),
    }
    reference = write_csv(tmp_path / "reference.csv", refs)
    conditions = tmp_path / "conditions.csv"
    conditions.write_text("id,composition,space_group\nnacl,NaCl,225\ncscl,NaCl,225\n")
    return samples, reference, str(conditions)


def _rows(path):
    return {r["id"]: r for r in csv.DictReader(open(path))}


def test_evaluate_all_stages(tmp_path, files):
    samples, reference, conditions = files
    payload = evaluate(
        samples, str(tmp_path / "out"), reference=[reference], conditions=conditions, relax=False,
        elemental_prototypes=True, workers=0, chunk_size=3, cache_dir=str(tmp_path / "cache"), seed=7,
        diffusion_steps=1000, guidance_scale=2.0, plots=False,
    )  # fmt: skip
    m, protocol = payload["metrics"], payload["protocol"]
    assert m["validity"]["n_samples"] == 8 and m["validity"]["n_skipped"] == 1
    assert m["validity"]["invalid_reasons"] == {"overlap": 1, "smact": 1}
    assert payload["run"]["skipped"][0]["id"] == "broken"
    rows = _rows(tmp_path / "out" / "per_structure.csv")
    assert rows["broken"]["status"] == "skipped" and rows["broken"]["skip_reason"].startswith("unparsable")
    assert rows["nacl_copy"]["unique"] == "False" and rows["nacl_copy"]["duplicate_of"] == "nacl"
    assert rows["kcl"]["novel"] == "False" and rows["kcl"]["reference_match"] == "ref-kcl"
    assert rows["cscl"]["novel"] == "True" and rows["cscl"]["unique"] == "True"
    assert abs(float(rows["kcl"]["e_above_hull"])) < 0.01 and float(rows["cscl"]["e_above_hull"]) > 0.05
    assert rows["kbr"]["hull_status"] == "no_hull: missing Br" and rows["kbr"]["e_above_hull"] == ""
    assert rows["overlap"]["e_final"] == "" and rows["overlap"]["unique"] == ""  # invalid samples stop at stage 1
    assert m["stability"]["n_no_hull"] == 1 and m["stability"]["n_sun@0.1"] == 0
    assert m["adherence"]["space_group_match"] == {"rate": 0.5, "n": 2}
    assert m["distribution"]["coverage"]["n_generated"] == 8
    assert m["cost"]["potential_calls"]["samples"]["n_single_point"] == 5
    assert protocol["seed"] == 7 and protocol["diffusion_steps"] == 1000 and protocol["guidance_scale"] == 2.0
    assert protocol["energy_model"]["name"] == "CHGNet" and protocol["relaxation"] == {"relax": False}
    assert protocol["hull"]["kind"] == "self-consistent" and protocol["hull"]["hash"]
    assert {"Na", "Cl", "K"} <= set(protocol["hull"]["elements_with_endpoints"])  # K from ASE's bcc prototype
    assert protocol["matcher"]["stol"] == 0.3 and protocol["reference"]["n_structures"] == 4
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["validity"]["n_samples"] == 8
    assert "## validity" in (tmp_path / "out" / "report.md").read_text()


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_recomputing(tmp_path, files):
    samples, reference, _ = files

    def config(out):
        return EvaluationConfig(
            samples=samples, out=str(tmp_path / out), reference=[reference], relax=RelaxConfig(relax=False),
            stages=("validity", "matching", "stability"), elemental_prototypes=False, workers=0, chunk_size=3,
            cache_dir=str(tmp_path / "cache"), plots=False,
        )  # fmt: skip

    def stop_after_first(number):
        if number == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_evaluation(config("resumed"), on_chunk_done=stop_after_first)
    first_chunk = tmp_path / "resumed" / "chunks" / "chunk_000000.pkl"
    assert first_chunk.exists() and not (tmp_path / "resumed" / "metrics.json").exists()
    mtime = first_chunk.stat().st_mtime_ns

    computed = []
    resumed = run_evaluation(config("resumed"), on_chunk_done=computed.append)
    assert resumed["run"]["chunks_reused"] == 1 and resumed["run"]["chunks_computed"] == 2
    assert computed == [1, 2] and first_chunk.stat().st_mtime_ns == mtime  # chunk 0 was not recomputed
    clean = run_evaluation(config("clean"))
    for stage in ("validity", "matching", "stability"):
        a, b = resumed["metrics"][stage], clean["metrics"][stage]
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert _rows(tmp_path / "resumed" / "per_structure.csv") == {
        k: {**v, "location": v["location"]} for k, v in _rows(tmp_path / "clean" / "per_structure.csv").items()
    }


def test_max_chunks_stops_and_a_rerun_finishes(tmp_path, files):
    samples, _, _ = files
    cfg = EvaluationConfig(
        samples=samples, out=str(tmp_path / "out"), stages=("validity",), workers=0, chunk_size=3, max_chunks=1,
        cache_dir=str(tmp_path / "cache"), plots=False,
    )  # fmt: skip
    partial = run_evaluation(cfg)
    assert partial["run"] == {"chunks_total": 3, "chunks_reused": 0, "chunks_computed": 1, "complete": False}
    cfg.max_chunks = None
    done = run_evaluation(cfg)
    assert done["run"]["chunks_reused"] == 1 and done["metrics"]["validity"]["n_samples"] == 8


def test_settings_change_invalidates_chunks(tmp_path, files):
    samples, _, _ = files
    cfg = EvaluationConfig(
        samples=samples, out=str(tmp_path / "out"), stages=("validity",), workers=0, chunk_size=3,
        cache_dir=str(tmp_path / "cache"), plots=False,
    )  # fmt: skip
    run_evaluation(cfg)
    cfg.validity = type(cfg.validity)(min_distance=0.3)
    again = run_evaluation(cfg)
    assert again["run"]["chunks_reused"] == 0 and again["run"]["chunks_computed"] == 3
    assert again["metrics"]["validity"]["invalid_reasons"] == {"overlap": 1, "smact": 1}  # 0.25 Å < 0.3 Å


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        evaluate("x.csv", str(tmp_path), stages=["validity", "vibes"])


def test_worker_processes_give_the_same_results(tmp_path, files):
    samples, reference, _ = files

    def run(workers, out):
        return evaluate(
            samples, str(tmp_path / out), reference=[reference], stages=["validity", "matching"], workers=workers,
            chunk_size=2, cache_dir=str(tmp_path / "cache"), plots=False,
        )  # fmt: skip

    serial, parallel = run(0, "serial"), run(2, "parallel")
    assert parallel["run"]["chunks_computed"] == 4
    assert parallel["metrics"]["matching"] == serial["metrics"]["matching"]
    assert _rows(tmp_path / "serial" / "per_structure.csv") == _rows(tmp_path / "parallel" / "per_structure.csv")


def test_property_model_adherence_and_record(tmp_path, files):
    from eval_crystals import VolumePerAtomModel

    samples, _, _ = files
    conditions = tmp_path / "property.csv"
    per_atom = rocksalt().volume / 8
    conditions.write_text(f"id,property\nnacl,{per_atom + 0.1}\nkcl,{per_atom}\n")
    cfg = EvaluationConfig(
        samples=samples, out=str(tmp_path / "out"), stages=("validity", "adherence"), conditions=str(conditions),
        property_tolerance=0.5, workers=0, cache_dir=str(tmp_path / "cache"), plots=False,
    )  # fmt: skip
    payload = run_evaluation(cfg, property_model=VolumePerAtomModel())
    assert payload["metrics"]["adherence"]["property_within_tol"] == {"mean": 0.5, "n": 2}
    assert payload["protocol"]["adherence"]["property_model"].endswith("VolumePerAtomModel")


def test_report_plots_include_xrd_of_valid_samples(tmp_path, files):
    samples, reference, _ = files
    evaluate(
        samples, str(tmp_path / "out"), reference=[reference], stages=["validity", "matching"], workers=0,
        cache_dir=str(tmp_path / "cache"), plots=True,
    )  # fmt: skip
    out = tmp_path / "out"
    assert (out / "xrd_examples.png").read_bytes()[:4] == b"\x89PNG"
    assert "xrd_examples.png" in (out / "report.md").read_text()
