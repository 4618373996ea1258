"""Matching stage: uniqueness among samples and novelty against a cached, bucketed reference index."""

from __future__ import annotations

import numpy as np
from eval_crystals import cesium_chloride, rocksalt, write_csv

from mmcrystal.evaluation import matching
from mmcrystal.evaluation.matching import (
    bucket_key,
    compact,
    find_duplicates,
    load_or_build_index,
    reduce_for_matching,
)
from mmcrystal.evaluation.protocol import DEFAULT_TOLERANCES


def _items(structures):
    return [(i, compact(reduce_for_matching(s))) for i, s in enumerate(structures)]


def test_duplicates_are_found_under_supercell_translation_and_noise(nacl):
    supercell = nacl.copy()
    supercell.make_supercell([2, 1, 1])
    shifted = nacl.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.13, 0.07, 0.31])
    noisy = nacl.copy()
    noisy.perturb(0.02)
    groups = find_duplicates(_items([nacl, supercell, shifted, noisy]), DEFAULT_TOLERANCES)
    assert groups == {0: None, 1: 0, 2: 0, 3: 0}


def test_polymorphs_are_distinct(nacl):
    groups = find_duplicates(_items([nacl, cesium_chloride(), rocksalt(5.69)]), DEFAULT_TOLERANCES)
    assert groups == {0: None, 1: None, 2: 0}


def test_bucket_keys_use_reduced_formula_and_optionally_space_group(nacl):
    assert bucket_key(nacl) == "NaCl"
    assert bucket_key(reduce_for_matching(nacl)) == "NaCl"
    assert bucket_key(nacl, by_spacegroup=True) == "NaCl|225"
    assert bucket_key(cesium_chloride(), by_spacegroup=True) == "NaCl|221"


def test_novelty_against_reference_and_index_cache(tmp_path, nacl, monkeypatch):
    ref = write_csv(tmp_path / "ref.csv", {"mp-nacl": rocksalt(5.6), "mp-kcl": rocksalt(6.3, "K", "Cl")})
    index = load_or_build_index([ref], tmp_path / "cache")
    assert index.n_structures == 2 and set(index.buckets) == {"NaCl", "KCl"}
    in_reference = reduce_for_matching(nacl)  # same prototype, different volume: matches (scale=True)
    assert index.find_match(in_reference, "NaCl", DEFAULT_TOLERANCES) == "mp-nacl"
    new = reduce_for_matching(cesium_chloride())
    assert index.find_match(new, "NaCl", DEFAULT_TOLERANCES) is None
    assert index.find_match(reduce_for_matching(rocksalt(5.0, "Li", "F")), "LiF", DEFAULT_TOLERANCES) is None

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index should come from the cache")

    monkeypatch.setattr(matching, "index_entries", no_rebuild)
    again = load_or_build_index([ref], tmp_path / "cache")
    assert again.hash == index.hash and again.n_structures == 2
    # different reduction settings are a different index (and would be rebuilt)
    assert len(list((tmp_path / "cache" / "reference_index").glob("*.pkl"))) == 1


def test_unparsable_reference_is_skipped_and_counted(tmp_path, nacl):
    path = tmp_path / "ref.csv"
    write_csv(path, {"good": nacl})
    with open(path, "a") as handle:
        handle.write('bad,"data_x\n_cell_length_a oops\n"\n')
    index = load_or_build_index([str(path)], tmp_path / "cache")
    assert index.n_structures == 1 and index.n_skipped == 1


def test_compact_round_trip(nacl):
    back = matching.from_compact(compact(nacl))
    assert np.allclose(back.lattice.matrix, nacl.lattice.matrix)
    assert [s.symbol for s in back.species] == [s.symbol for s in nacl.species]
