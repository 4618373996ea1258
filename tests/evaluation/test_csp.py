"""CSP metrics: match rate and RMSE at k=1 and k=n, METRe, cRMSE."""

from __future__ import annotations

import pytest
from eval_crystals import cesium_chloride, rocksalt, write_csv

from mmcrystal.evaluation.csp import csp_metrics, evaluate_csp
from mmcrystal.evaluation.validity import validity_record


@pytest.fixture(scope="module")
def valid_mp20(mp20_structures):
    return [s for s in mp20_structures if validity_record(s)["valid"]][:20]


def test_a_set_against_itself_matches_exactly(valid_mp20):
    summary, rows = csp_metrics([[s] for s in valid_mp20], valid_mp20)
    assert summary["match_rate_k1"] == 1.0 and summary["match_rate_kn"] == 1.0
    assert summary["rmse_k1"] == pytest.approx(0.0, abs=1e-6)
    assert summary["metre"] == 1.0 and summary["crmse_k1"] == pytest.approx(0.0, abs=1e-6)
    assert all(r["match_k1"] for r in rows)


def test_noise_wrong_structures_and_best_of_n(nacl):
    noisy = nacl.copy()
    noisy.perturb(0.05)
    targets = [nacl, rocksalt(6.3, "K", "Cl")]
    generated = [[cesium_chloride(), noisy], [cesium_chloride(3.9, "K", "Cl")]]
    summary, rows = csp_metrics(generated, targets)
    assert summary["match_rate_k1"] == 0.0  # first samples are the wrong polymorph
    assert summary["match_rate_kn"] == 0.5 and 0 < rows[0]["rms_kn"] < 0.1  # second NaCl sample matches
    assert summary["crmse_k1"] == pytest.approx(0.5)  # every target unmatched: the stol penalty
    assert summary["crmse_kn"] == pytest.approx((rows[0]["rms_kn"] + 0.5) / 2)


def test_metre_credits_a_polymorph_of_another_target(nacl):
    targets = [nacl, cesium_chloride()]  # two NaCl polymorphs in the test set
    generated = [[cesium_chloride()], [nacl.copy()]]  # each sample reproduces the *other* target
    summary, _ = csp_metrics(generated, targets)
    assert summary["match_rate_k1"] == 0.0 and summary["metre"] == 1.0
    one_sample = csp_metrics([[nacl.copy()], []], targets)[0]
    assert one_sample["metre"] == 0.5  # one sample is credited to one reference only


def test_validity_gate_excludes_smact_invalid_targets():
    from pymatgen.core import Lattice, Structure

    nacl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    assert csp_metrics([[nacl2]], [nacl2], validity_gate="cdvae")[0]["match_rate_k1"] == 0.0
    assert csp_metrics([[nacl2]], [nacl2], validity_gate="none")[0]["match_rate_k1"] == 1.0


def test_evaluate_csp_files(tmp_path, nacl):
    targets = write_csv(tmp_path / "targets.csv", {"t1": nacl, "t2": rocksalt(6.3, "K", "Cl")})
    generated = write_csv(
        tmp_path / "gen.csv", {"t1__0": cesium_chloride(), "t1__1": nacl, "t2__0": rocksalt(6.35, "K", "Cl")}
    )
    payload = evaluate_csp(generated, targets, str(tmp_path / "out"), workers=0)
    m = payload["metrics"]
    assert m["match_rate_k1"] == 0.5 and m["match_rate_kn"] == 1.0 and m["k"] == 2
    assert payload["protocol"]["matcher"] == {
        "ltol": 0.3,
        "stol": 0.5,
        "angle_tol": 10.0,
        "primitive_cell": True,
        "scale": True,
        "attempt_supercell": False,
    }
    assert (tmp_path / "out" / "csp_metrics.json").exists() and (tmp_path / "out" / "csp_per_target.csv").exists()
    assert evaluate_csp(generated, targets, str(tmp_path / "k1"), k=1, workers=0)["metrics"]["match_rate_kn"] == 0.5
