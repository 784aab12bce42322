"""Statistical tests: the estimates are unbiased and their MSE matches ``variance()``.

Fixed seeds; tolerances come from the variance formulas. With R repetitions over K candidates the
relative standard error of an empirical MSE is about sqrt(2/(R·K)) (squared Gaussian errors), so
R = 20 and K = 1024 give ≈ 1%: the 5% tolerance the issue asks for is a 5-sigma bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedhh.oracles import GRR, OLH, OUE, FrequencyOracle, OLHAffine, OLHPool

N_USERS = 20_000
K = 1024
REPS = 20
EPSILON = 2.0


def _population(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zipf(1.1)-distributed users over K random 40-bit candidates, 10% outside the set (⊥)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(2**40, size=2 * K, replace=False).astype(np.uint64)
    cand, outside = labels[:K], labels[K:]
    ranks = np.arange(1, K + 1, dtype=float)
    w = ranks**-1.1
    inside = rng.choice(cand, size=int(0.9 * N_USERS), p=w / w.sum())
    rest = rng.choice(outside, size=N_USERS - inside.size)
    values = rng.permutation(np.concatenate([inside, rest]))
    truth = np.array([(values == c).sum() for c in cand], dtype=np.float64)
    return values, cand, truth


VALUES, CAND, TRUTH = _population(0)
_UNIQUE, _UCOUNTS = np.unique(VALUES, return_counts=True)


def _collision_mass() -> np.ndarray:
    """Σ_{x≠v} n_x(n_x−1) for each candidate v (the seed-pool variance term)."""
    total = float(np.sum(_UCOUNTS * (_UCOUNTS - 1.0)))
    return total - TRUTH * (TRUTH - 1.0)


def _run(make: object, pool: bool = False) -> tuple[np.ndarray, FrequencyOracle]:
    errors = np.empty((REPS, K))
    oracle: FrequencyOracle | None = None
    for r in range(REPS):
        rng = np.random.default_rng(1000 + r)
        oracle = OLHPool(EPSILON, pool_size=1024, pool_seed=r) if pool else make(EPSILON)  # type: ignore[operator]
        rep = oracle.perturb(VALUES, rng, CAND)
        errors[r] = oracle.estimate(rep, CAND) - TRUTH
    assert oracle is not None
    return errors, oracle


def _exact_variance(oracle: FrequencyOracle) -> np.ndarray:
    if isinstance(oracle, OLHPool):
        return np.array(
            [
                oracle.variance(N_USERS, K + 1, c, m)
                for c, m in zip(TRUTH, _collision_mass(), strict=True)
            ]
        )
    return np.array([oracle.variance(N_USERS, K + 1, c) for c in TRUTH])


@pytest.mark.parametrize(
    ("make", "pool"),
    [(GRR, False), (OUE, False), (OLH, False), (None, True), (OLHAffine, False)],
    ids=["grr", "oue", "olh", "olh-pool", "olh-affine"],
)
def test_unbiased_and_mse_matches_variance(make: object, pool: bool) -> None:
    errors, oracle = _run(make, pool)
    var = _exact_variance(oracle)
    # Unbiased: each candidate's mean error is within 5 sigma of 0.
    z = errors.mean(axis=0) / np.sqrt(var / REPS)
    assert np.abs(z).max() < 5.0, f"max |z| = {np.abs(z).max():.2f}"
    # Pooled over candidates, the mean error is within 5 sigma too (no systematic bias).
    pooled_se = np.sqrt(var.sum() / REPS) / K
    assert abs(errors.mean()) < 5 * pooled_se + 1e-9
    # MSE within 5% of the variance formula (≈ 5 sigma, see module docstring).
    ratio = np.mean(errors**2) / var.mean()
    assert abs(ratio - 1.0) < 0.05, f"MSE / variance = {ratio:.4f}"


def test_pool_variance_exceeds_plain_by_the_collision_term() -> None:
    """The seed-pool variant costs variance where heavy values share seeds; plain OLH doesn't."""
    plain = OLH(EPSILON).variance(N_USERS, K + 1)
    pooled = OLHPool(EPSILON, pool_size=1024).variance(N_USERS, K + 1, 0, _collision_mass()[-1])
    assert pooled > 1.05 * plain
    assert OLHPool(EPSILON, pool_size=1024).variance(N_USERS, K + 1) == pytest.approx(plain)
