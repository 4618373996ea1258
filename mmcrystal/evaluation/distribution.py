"""Stage 5, distribution and diversity: CDVAE coverage, Wasserstein distances, diversity-collapse indicators.

Coverage (Xie et al., ICLR 2022, "CDVAE"): with Euclidean distances between structure fingerprints and between
standardised composition fingerprints (`mmcrystal.evaluation.fingerprints`),

- COV-R (recall) = fraction of reference structures that have some sample within ``struct_cutoff`` in structure
  distance AND within ``comp_cutoff`` in composition distance (both conditions on the nearest neighbour in each
  space, as CDVAE computes them);
- COV-P (precision) = number of samples with such a reference neighbour / number of generated samples (all of
  them, including those whose fingerprint failed, as CDVAE).

As in CDVAE, coverage is not restricted to the validity survivors: fingerprints are computed for every
structurally valid sample (SMACT-invalid ones included; overlapping atoms make CrystalNN meaningless, so those
have no fingerprint and only count in the COV-P denominator). The Wasserstein distances use valid samples only.

Cutoffs per dataset (CDVAE): MP-20 0.4 / 10, Carbon-24 and Perov-5 0.2 / 4. Composition fingerprints are
standardised with the mean and standard deviation of the reference set's fingerprints (CDVAE used fixed
training-set statistics of matminer's Magpie features; those constants are not reused here).

Wasserstein distances (``scipy.stats.wasserstein_distance``) of density (g/cm^3) and of number of elements between
valid samples (CDVAE: 1,000 random valid samples) and the reference set.

Diversity collapse: the spread of pairwise structure-fingerprint distances among samples (mean, std, 5th
percentile), the mean nearest-neighbour distance, the fraction of samples with a near-identical fingerprint
neighbour (distance < 1e-3), and the StructureMatcher duplicate rate from the uniqueness stage. Compare against the
same numbers of the reference set: a collapsed model has far smaller distances and many duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "COVERAGE_CUTOFFS",
    "coverage",
    "wasserstein_metrics",
    "diversity_indicators",
    "cutoffs_for",
]

# dataset -> (structure cutoff, composition cutoff), from CDVAE's evaluation settings.
COVERAGE_CUTOFFS: dict[str, tuple[float, float]] = {
    "mp20": (0.4, 10.0),
    "carbon24": (0.2, 4.0),
    "perov5": (0.2, 4.0),
}


def cutoffs_for(dataset: str | None) -> tuple[float, float]:
    """Coverage cutoffs of a dataset name (``mp_20``, ``MP-20``, ``perov5`` ...); MP-20's when unknown."""
    key = (dataset or "mp20").lower().replace("_", "").replace("-", "")
    return COVERAGE_CUTOFFS.get(key, COVERAGE_CUTOFFS["mp20"])


def _min_distances(a: np.ndarray, b: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Nearest distances: for each row of a to b, and for each row of b to a. Blocked to bound memory."""
    from scipy.spatial.distance import cdist

    a_to_b = np.full(len(a), np.inf)
    b_to_a = np.full(len(b), np.inf)
    for start in range(0, len(a), block):
        d = cdist(a[start : start + block], b)  # (block, M)
        a_to_b[start : start + block] = d.min(axis=1)
        b_to_a = np.minimum(b_to_a, d.min(axis=0))
    return a_to_b, b_to_a


def coverage(
    gen_struct: np.ndarray,
    gen_comp: np.ndarray,
    ref_struct: np.ndarray,
    ref_comp: np.ndarray,
    struct_cutoff: float = 0.4,
    comp_cutoff: float = 10.0,
    n_generated: int | None = None,
) -> dict[str, float]:
    """COV-R and COV-P (module docstring).

    Args:
        gen_struct: (N, 61) structure fingerprints of samples whose fingerprint could be computed.
        gen_comp: (N, C) raw composition fingerprints of the same samples.
        ref_struct: (M, 61) reference structure fingerprints.
        ref_comp: (M, C) reference composition fingerprints (also give the standardisation statistics).
        struct_cutoff: Structure-fingerprint distance cutoff.
        comp_cutoff: Standardised composition-fingerprint distance cutoff.
        n_generated: Denominator of COV-P (all generated samples); defaults to N.
    """
    n_generated = len(gen_struct) if n_generated is None else n_generated
    if len(gen_struct) == 0 or len(ref_struct) == 0:
        return {"cov_recall": 0.0, "cov_precision": 0.0}
    mean, std = ref_comp.mean(axis=0), ref_comp.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    g_comp, r_comp = (gen_comp - mean) / std, (ref_comp - mean) / std
    s_gen, s_ref = _min_distances(gen_struct, ref_struct)
    c_gen, c_ref = _min_distances(g_comp, r_comp)
    recall = float(np.mean((s_ref <= struct_cutoff) & (c_ref <= comp_cutoff)))
    precision = float(np.sum((s_gen <= struct_cutoff) & (c_gen <= comp_cutoff)) / max(n_generated, 1))
    return {
        "cov_recall": recall,
        "cov_precision": precision,
        "struct_cutoff": struct_cutoff,
        "comp_cutoff": comp_cutoff,
        "n_generated": int(n_generated),
        "n_with_fingerprint": len(gen_struct),
        "n_reference": len(ref_struct),
    }


def wasserstein_metrics(
    gen_density: Sequence[float],
    ref_density: Sequence[float],
    gen_n_elements: Sequence[int],
    ref_n_elements: Sequence[int],
) -> dict[str, float]:
    """``wdist_density`` (g/cm^3) and ``wdist_num_elems`` between samples and reference."""
    from scipy.stats import wasserstein_distance

    if len(gen_density) == 0 or len(ref_density) == 0:
        return {"wdist_density": float("nan"), "wdist_num_elems": float("nan")}
    return {
        "wdist_density": float(wasserstein_distance(gen_density, ref_density)),
        "wdist_num_elems": float(wasserstein_distance(gen_n_elements, ref_n_elements)),
    }


def diversity_indicators(fingerprints: np.ndarray, max_pairs_rows: int = 2000, seed: int = 0) -> dict[str, float]:
    """Pairwise structure-fingerprint distance spread of a set (subsampled to ``max_pairs_rows`` rows)."""
    from scipy.spatial.distance import pdist, squareform

    fps = np.asarray(fingerprints, dtype=float)
    if len(fps) < 2:
        return {"pairwise_mean": float("nan"), "pairwise_std": float("nan")}
    if len(fps) > max_pairs_rows:
        fps = fps[np.random.default_rng(seed).choice(len(fps), max_pairs_rows, replace=False)]
    d = pdist(fps)
    square = squareform(d)
    np.fill_diagonal(square, np.inf)
    nearest = square.min(axis=1)
    return {
        "pairwise_mean": float(d.mean()),
        "pairwise_std": float(d.std()),
        "pairwise_p05": float(np.percentile(d, 5)),
        "nn_mean": float(nearest.mean()),
        "near_identical_rate": float(np.mean(nearest < 1e-3)),
        "n": len(fps),
    }
