"""The hash of OLH collides as the debiasing assumes. (The ε-LDP audit of every oracle, over its
whole output space or a sample of it, and the check that each sampler draws from the distribution
the audit checks, are part of the contract every oracle's tests inherit: tests/oracle_contract.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle_contract import assert_frequencies

from fedhh.oracles.hashing import HashKeys, bucket_of, collision_probability, hash32


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
    assert_frequencies(np.array([hits, seeds.size - hits]), np.array([q, 1 - q]))
    # and each key's bucket is uniform over [g]
    assert_frequencies(np.bincount(bx.astype(np.int64), minlength=g), np.full(g, 1 / g))
