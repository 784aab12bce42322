"""Affine-hash OLH beyond the contract: its hash is pairwise independent with collision exactly
1/g, the decode finds a level's blocks P × {0,1}^s, the transform route and the direct route
give the same counts in both kernels and any thread count, and estimates over a level's blocks
are unbiased with the MSE the variance formula gives (fixed seeds, tolerances from it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from oracle_contract import assert_frequencies

from fedhh.core import codes as cd
from fedhh.datasets import synthetic_zipf
from fedhh.mechanisms import MechanismParams
from fedhh.oracles import OLHAffine
from fedhh.oracles.affine import hash_rows
from fedhh.oracles.affine_decode import (
    block_plan,
    block_support,
    direct_support,
    parity_hash,
    subset_words,
    support_counts,
    walsh_signs,
)
from fedhh.run.engine import simulate

KERNELS = ["numba", "numpy"]


def _level(prefixes: list[int], length: int, step: int) -> np.ndarray:
    return cd.children(np.array(prefixes, dtype=np.uint64), length, step)


def _reports(
    eps: float, values: np.ndarray, seed: int, g: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """The decode's inputs of ``values``' reports: the hash rows, z = bucket ⊕ b, t."""
    o = OLHAffine(eps, g=g)
    rep = o.perturb(values, np.random.default_rng(seed))
    rows, offsets = hash_rows(rep["seed"], o.rows)
    return rows, rep["bucket"].astype(np.uint64) ^ offsets, o.rows


@pytest.mark.parametrize(
    ("x", "y"), [(1, 2), (0, 2**63), (5, 5 + 2**32), (2**40, 2**41), (2**64 - 1, 2**64 - 2)]
)
@pytest.mark.parametrize("g", [2, 8, 64])
def test_hash_collides_with_probability_one_over_g(x: int, y: int, g: int) -> None:
    """Two keys share a bucket with probability 1/g, and each key's bucket is uniform."""
    seeds = np.random.default_rng(g).integers(0, 2**64, size=200_000, dtype=np.uint64)
    rows, offsets = hash_rows(seeds, g.bit_length() - 1)
    hx = parity_hash(rows, np.full(seeds.size, x, np.uint64)) ^ offsets
    hy = parity_hash(rows, np.full(seeds.size, y, np.uint64)) ^ offsets
    hits = int((hx == hy).sum())
    assert_frequencies(np.array([hits, seeds.size - hits]), np.array([1 / g, 1 - 1 / g]))
    assert_frequencies(np.bincount(hx.astype(np.int64), minlength=g), np.full(g, 1 / g))


def test_block_plan_finds_a_levels_blocks() -> None:
    level = _level([3, 9, 10, 200], 8, 6)  # 9 and 10 are neighbours: one run of 128
    plan = block_plan(level, 10_000, 3)
    assert plan.bits == 6 and plan.rest.size == 0
    np.testing.assert_array_equal(plan.prefixes, [3, 9, 10, 200])
    np.testing.assert_array_equal(level[plan.starts], np.array([3, 9, 10, 200], np.uint64) << 6)
    extra = np.array([5, 1 << 13, 77], dtype=np.uint64)  # consensus prefixes outside P × {0,1}^s
    plan = block_plan(np.concatenate([level, extra]), 10_000, 3)
    assert plan.bits == 6 and list(plan.rest) == [256, 257, 258]
    scattered = np.random.default_rng(0).choice(2**40, size=500, replace=False).astype(np.uint64)
    assert block_plan(scattered, 10_000, 3).bits == 0


def test_block_plan_leaves_blocks_to_the_direct_route_when_g_is_large() -> None:
    """With g = 2^12 a block of 2^6 costs more through the transform than tested directly."""
    assert block_plan(_level([1, 2], 8, 6), 1000, 12).bits == 0
    assert block_plan(_level([1, 2], 8, 16), 1000, 12).bits == 16


@pytest.mark.parametrize(("eps", "g"), [(0.5, 0), (2.0, 0), (4.0, 0), (4.0, 128)])
@pytest.mark.parametrize("kernel", KERNELS)
def test_transform_route_equals_direct_route(eps: float, g: int, kernel: str) -> None:
    """Over blocks (high keys included: prefixes near 2^64) plus stray candidates, the
    transform's counts are the direct test's, in both kernels (g = 128: signs by popcount
    instead of the table)."""
    rng = np.random.default_rng(int(eps * 10))
    top = 2**54 - 3
    level = np.concatenate(
        [_level([1, 7, 8, top], 54, 10), rng.integers(0, 2**64, 50, dtype=np.uint64)]
    )
    level = np.unique(level)[rng.permutation(np.unique(level).size)]  # any order of blocks
    inside = level[rng.integers(0, level.size, 3000)]
    values = np.concatenate([inside, rng.integers(0, 2**64, 500, dtype=np.uint64)])
    rows, z, _ = _reports(eps, values, 1, g)
    reference = direct_support(rows, z, level, kernel="numpy")
    np.testing.assert_array_equal(direct_support(rows, z, level, kernel=kernel), reference)
    np.testing.assert_array_equal(support_counts(rows, z, level, kernel=kernel), reference)
    blocks = block_support(rows, z, np.array([1, 7], np.uint64), 10, kernel=kernel)
    np.testing.assert_array_equal(
        blocks.reshape(-1), direct_support(rows, z, _level([1, 7], 54, 10), kernel="numpy")
    )


@pytest.mark.parametrize("prefixes", [[5], list(range(40, 48))])
def test_thread_count_does_not_change_the_counts(prefixes: list[int]) -> None:
    """Threads over the reports (one prefix) or over the prefixes (eight) give the same."""
    level = _level(prefixes, 20, 12)
    rng = np.random.default_rng(3)
    rows, z, _ = _reports(2.0, level[rng.integers(0, level.size, 400_000)], 2)
    one = support_counts(rows, z, level, threads=1, kernel="numba")
    two = support_counts(rows, z, level, threads=2, kernel="numba")
    np.testing.assert_array_equal(one, two)
    assert int(one.sum()) > 0


def test_oracle_support_takes_the_transform_route() -> None:
    """``OLHAffine.support`` on a level equals the direct test of its reports."""
    o = OLHAffine(2.0)
    level = _level([2, 3, 11], 10, 8)
    rng = np.random.default_rng(4)
    rep = o.perturb(level[rng.integers(0, level.size, 5000)], rng)
    rows, offsets = hash_rows(rep["seed"], o.rows)
    z = rep["bucket"].astype(np.uint64) ^ offsets
    np.testing.assert_array_equal(o.support(rep, level).counts, direct_support(rows, z, level))


def test_level_estimates_are_unbiased_with_the_formulas_variance() -> None:
    """20 runs of 20,000 users over a level of 4 prefixes × 2^8 extensions (Zipf(1.1), 10% of
    the users outside it): each candidate's mean error is within 5σ of 0 and the MSE within 5%
    of the variance formula (its relative standard error is √(2/(R·K)) ≈ 1%: 5σ)."""
    n, reps, eps = 20_000, 20, 2.0
    level = _level([6, 17, 18, 40], 6, 8)
    rng = np.random.default_rng(0)
    w = np.arange(1, level.size + 1, dtype=float) ** -1.1
    inside = rng.choice(level, size=int(0.9 * n), p=w / w.sum())
    outside = _level([50, 51], 6, 8)[rng.integers(0, 512, n - inside.size)]
    values = np.concatenate([inside, outside])
    truth = np.array([(values == c).sum() for c in level], dtype=np.float64)
    o = OLHAffine(eps)
    assert block_plan(level, n, o.rows).bits == 8
    errors = np.array(
        [
            o.estimate(o.perturb(values, np.random.default_rng(100 + r)), level) - truth
            for r in range(reps)
        ]
    )
    var = o.variance(n, level.size + 1, truth)
    zs = errors.mean(axis=0) / np.sqrt(var / reps)
    assert np.abs(zs).max() < 5.0
    assert abs(errors.mean()) < 5 * np.sqrt(var.sum() / reps) / level.size
    assert abs(np.mean(errors**2) / var.mean() - 1.0) < 0.05


def test_compiled_histograms_agree_in_int32_and_int64_and_with_or_without_the_sign_table() -> None:
    """The kernel's four variants (int32 rows below n·g = 2^31, int64 above; signs from the
    table or by popcount) make the same histograms."""
    kernels = pytest.importorskip("fedhh.oracles.affine_kernels")
    level = _level([3, 4], 12, 9)
    rows, z, t = _reports(2.0, level[np.random.default_rng(6).integers(0, level.size, 5000)], 7)
    rows_p = np.ascontiguousarray(rows >> np.uint64(9))
    words = subset_words(rows & np.uint64(511))
    prefixes = np.array([3, 4], dtype=np.uint64)
    out = []
    for signs in (walsh_signs(1 << t), np.zeros((0, 1 << t), dtype=np.int32)):
        for dtype in (np.int32, np.int64):
            hist = np.zeros((2, 512), dtype=dtype)
            kernels.block_histograms(rows_p, z, words, prefixes, signs, hist)
            kernels.walsh_hadamard(hist)
            out.append(hist.astype(np.int64))
    for hist in out[1:]:
        np.testing.assert_array_equal(hist, out[0])
    np.testing.assert_array_equal(out[0] >> t, block_support(rows, z, prefixes, 9, kernel="numpy"))


@pytest.mark.parametrize("mechanism", ["tap", "taps"])
def test_a_run_with_olh_affine_at_every_level_finds_the_top_k(mechanism: str) -> None:
    """End to end through the protocol: every level of the run is olh-affine (the coordinator
    accepts its declared costs) and at ε = 4 the answer is the true top k."""
    ds = synthetic_zipf(200_000, 4, m=20, n_items=500, s=2.0, split="dirichlet", alpha=0.3, seed=5)
    params = MechanismParams(mechanism=mechanism, epsilon=4.0, k=8, m=20, oracle="olh-affine")
    res = simulate(ds.parties, ds.codec, dataclasses.replace(params, seed=1))
    assert {lv["oracle"] for lv in res.cost["levels"]} == {"olh-affine"}
    assert set(res.items.tolist()) == set(ds.top_k(8).tolist())
