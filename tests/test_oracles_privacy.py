"""ε-LDP audits: P[y|x] ≤ e^ε·P[y|x'] over the whole output space, and the samplers really draw
from the distributions those audits check (empirical frequencies within 5 sigma).

GRR and OUE are enumerated exactly for domains of at most 8 symbols. OLH's output is (seed, y):
the seed is drawn independently of the value, so the ratio reduces to P[y|seed,x]/P[y|seed,x'];
that is checked exactly for every one of 500 sampled seeds (and holds for every seed by
construction: each factor is p or (1−p)/(g−1), whose ratio is e^ε).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedhh.oracles import GRR, OLH, OUE, OLHPool
from fedhh.oracles.hashing import HashKeys, bucket_of, collision_probability, hash32

EPSILONS = [0.5, 1.0, 2.0, 4.0]
TOL = 1e-12


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("d", range(2, 9))
def test_grr_ratio_bound_exact(eps: float, d: int) -> None:
    o = GRR(eps)
    probs = np.array([[o.output_probability(y, x, d) for y in range(d)] for x in range(d)])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    ratio = probs[:, None, :] / probs[None, :, :]
    assert ratio.max() <= math.exp(eps) * (1 + TOL)
    assert ratio.max() == pytest.approx(math.exp(eps))  # the bound is tight


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("d", range(2, 9))
def test_oue_ratio_bound_exact(eps: float, d: int) -> None:
    o = OUE(eps)
    outputs = np.array(list(itertools.product([0, 1], repeat=d)), dtype=np.uint8)
    probs = np.array([[o.output_probability(b, x) for b in outputs] for x in range(d)])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, None, :] / probs[None, :, :]).max() <= math.exp(eps) * (1 + TOL)


@pytest.mark.parametrize("eps", [0.5, 1.0, 3.0])
def test_olh_ratio_bound_for_sampled_seeds(eps: float) -> None:
    o = OLH(eps)
    seeds = np.random.default_rng(11).integers(0, 2**64, size=500, dtype=np.uint64)
    domain = [0, 1, 2, 3, 2**32, 2**40 + 5, 2**63, 2**64 - 1]
    worst = 0.0
    for seed in seeds:
        probs = np.array(
            [[o.output_probability(int(seed), y, x) for y in range(o.g)] for x in domain]
        )
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        worst = max(worst, float((probs[:, None, :] / probs[None, :, :]).max()))
    assert worst <= math.exp(eps) * (1 + TOL)


def _assert_frequencies(counts: np.ndarray, probs: np.ndarray) -> None:
    n = counts.sum()
    sigma = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) <= 5 * sigma + 1e-9), (counts, n * probs)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_grr_sampler_matches_declared_distribution(eps: float) -> None:
    o = GRR(eps)
    cand = np.array([10, 20, 30, 40, 50], dtype=np.uint64)
    d = cand.size + 1
    for x, value in enumerate([10, 20, 30, 40, 50, 77]):  # 77 is outside C: symbol ⊥ = 5
        rng = np.random.default_rng(x)
        rep = o.perturb(np.full(60_000, value, dtype=np.uint64), rng, cand)
        counts = np.bincount(rep["symbol"], minlength=d)
        _assert_frequencies(counts, np.array([o.output_probability(y, x, d) for y in range(d)]))


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_oue_sampler_matches_declared_joint_distribution(eps: float) -> None:
    o = OUE(eps)
    cand = np.array([3, 9, 27], dtype=np.uint64)
    d = cand.size + 1
    outputs = np.array(list(itertools.product([0, 1], repeat=d)), dtype=np.uint8)
    for x, value in enumerate([3, 9, 27, 81]):
        rng = np.random.default_rng(100 + x)
        rep = o.perturb(np.full(80_000, value, dtype=np.uint64), rng, cand)
        bits = np.unpackbits(rep["bits"], axis=1, count=d)
        code = bits @ (1 << np.arange(d - 1, -1, -1))
        counts = np.bincount(code, minlength=2**d)
        _assert_frequencies(counts, np.array([o.output_probability(b, x) for b in outputs]))


@pytest.mark.parametrize("oracle", [OLH(1.0), OLH(3.0), OLHPool(1.0, pool_size=256)])
def test_olh_sampler_keeps_with_p_and_spreads_uniformly(oracle: OLH | OLHPool) -> None:
    rng = np.random.default_rng(5)
    values = np.full(100_000, 2**47 + 12345, dtype=np.uint64)
    rep = oracle.perturb(values, rng)
    if isinstance(oracle, OLHPool):
        keys = oracle.pool_keys.take(rep["seed_index"].astype(np.int64))
    else:
        keys = HashKeys.from_seeds(rep["seed"])
    true_bucket = bucket_of(hash32(keys, values), oracle.g).astype(np.int64)
    shift = (rep["bucket"].astype(np.int64) - true_bucket) % oracle.g
    p = oracle.probabilities()[0]
    probs = np.array([p] + [(1 - p) / (oracle.g - 1)] * (oracle.g - 1))
    _assert_frequencies(np.bincount(shift, minlength=oracle.g), probs)


@pytest.mark.parametrize(
    ("x", "y"),
    [(1, 2), (0, 2**63), (5, 5 + 2**32), (2**40, 2**41), (2**64 - 1, 2**64 - 2)],
)
@pytest.mark.parametrize("g", [2, 3, 8, 55])
def test_hash_collision_probability(x: int, y: int, g: int) -> None:
    """Pairs that differ only in high bits collide with probability Σ|I_y|²/2^64 ≈ 1/g."""
    seeds = np.random.default_rng(g).integers(0, 2**64, size=200_000, dtype=np.uint64)
    keys = HashKeys.from_seeds(seeds)
    bx = bucket_of(hash32(keys, np.full(seeds.size, x, np.uint64)), g)
    by = bucket_of(hash32(keys, np.full(seeds.size, y, np.uint64)), g)
    q = collision_probability(g)
    assert q == pytest.approx(1 / g, rel=1e-6)
    hits = int((bx == by).sum())
    _assert_frequencies(np.array([hits, seeds.size - hits]), np.array([q, 1 - q]))
    # and each key's bucket is uniform over [g]
    _assert_frequencies(np.bincount(bx.astype(np.int64), minlength=g), np.full(g, 1 / g))
