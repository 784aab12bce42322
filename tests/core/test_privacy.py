"""The central guarantee (fedhh.core.privacy, docs/privacy.md): the shuffling bound against the
published example of Feldman, McMillan and Talwar (FOCS 2021: n = 10⁵, ε₀ = 4, δ = 10⁻⁶ gives
≈ 0.17 numerically and 0.5378 in closed form), against a brute-force sum of the same mixtures,
and against the exact δ of shuffled binary randomized response at small n (which it must bound);
and the privacy block every run carries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedhh.core.privacy import (
    privacy_block,
    shuffle_delta,
    shuffle_epsilon,
    shuffle_epsilon_closed_form,
)
from fedhh.datasets import synthetic_zipf
from fedhh.errors import ParameterError
from fedhh.mechanisms import MechanismParams
from fedhh.run.engine import simulate


def test_the_published_example() -> None:
    assert round(shuffle_epsilon(100_000, 4.0, 1e-6), 2) == 0.17
    assert round(shuffle_epsilon_closed_form(100_000, 4.0, 1e-6), 4) == 0.5378


def test_brute_force_sum_of_the_mixtures() -> None:
    """δ(ε) = E_C[Σ_a max(0, P_C(a) − e^ε·Q_C(a))], every (c, a) summed out explicitly."""
    n, eps0 = 30, 1.0
    alpha = math.exp(eps0) / (1 + math.exp(eps0))
    for eps in (0.05, 0.2, 0.5, 0.9):
        total = 0.0
        for c in range(n):
            a = np.arange(c + 2)
            b = stats.binom.pmf(a, c, 0.5)
            b_shift = stats.binom.pmf(a - 1, c, 0.5)
            p = alpha * b + (1 - alpha) * b_shift
            q = (1 - alpha) * b + alpha * b_shift
            total += (
                stats.binom.pmf(c, n - 1, math.exp(-eps0))
                * np.maximum(0, p - math.exp(eps) * q).sum()
            )
        assert shuffle_delta(n, eps0, eps) == pytest.approx(total, rel=1e-9, abs=1e-15)


def _shuffled_rr_delta(n: int, eps0: float, eps: float) -> float:
    """The exact δ(ε) of n users' binary randomized response, shuffled (the count of 1s), for
    the neighbouring inputs that differ in one user's bit, worst case over the others' bits."""
    keep = math.exp(eps0) / (1 + math.exp(eps0))
    worst = 0.0
    for ones in range(n):  # how many of the other n − 1 users hold a 1
        others = np.convolve(
            stats.binom.pmf(np.arange(ones + 1), ones, keep),
            stats.binom.pmf(np.arange(n - ones), n - 1 - ones, 1 - keep),
        )
        p0 = np.convolve(others, [keep, 1 - keep])  # the user holds 0 (reports 0 w.p. keep)
        p1 = np.convolve(others, [1 - keep, keep])
        for a, b in ((p0, p1), (p1, p0)):
            worst = max(worst, float(np.maximum(0, a - math.exp(eps) * b).sum()))
    return worst


@pytest.mark.parametrize("n, eps0", [(5, 1.0), (12, 2.0), (40, 1.5)])
def test_bounds_shuffled_randomized_response(n: int, eps0: float) -> None:
    for eps in np.linspace(0.0, eps0, 9)[:-1]:
        exact = _shuffled_rr_delta(n, eps0, float(eps))
        assert exact <= shuffle_delta(n, eps0, float(eps)) + 1e-12
    # and ε_c at δ is at least the randomized response's own
    eps_c = shuffle_epsilon(n, eps0, 1e-3)
    assert _shuffled_rr_delta(n, eps0, eps_c) <= 1e-3 + 1e-12


def test_grows_with_eps0_falls_with_n_and_never_exceeds_eps0() -> None:
    for eps0 in (0.5, 2.0, 4.0, 8.0):
        values = [shuffle_epsilon(n, eps0, 1e-8) for n in (100, 10**4, 10**6)]
        assert values == sorted(values, reverse=True) and values[0] <= eps0
        assert values[-1] <= shuffle_epsilon_closed_form(10**6, eps0, 1e-8) + 1e-4
    assert shuffle_epsilon(10**5, 2.0, 1e-8) < shuffle_epsilon(10**5, 4.0, 1e-8)
    assert shuffle_epsilon(1, 2.0, 1e-8) == pytest.approx(2.0, abs=1e-3)  # nobody to hide among
    with pytest.raises(ParameterError):
        shuffle_epsilon(0, 2.0, 1e-8)
    with pytest.raises(ParameterError):
        shuffle_epsilon(100, 2.0, 0.0)


def test_every_run_carries_the_guarantee_per_group_and_recipient() -> None:
    ds = synthetic_zipf(40_000, 4, m=24, n_items=2000, s=1.2, split="dirichlet", seed=1)
    p = MechanismParams(mechanism="taps", epsilon=2.0, k=8, m=24, seed=2, central_delta=1e-6)
    res = simulate(ds.parties, ds.codec, p)
    block = res.privacy
    groups = block["central"]["groups"]
    levels = [lv for lv in res.cost["levels"] if lv["reports"] > 0]
    assert [(g["party"], g["users"]) for g in groups] == [
        (lv["party"], lv["reports"]) for lv in levels
    ]
    for g in groups:  # the tighter bound of the two, named; never above FMT's
        fmt = shuffle_epsilon(g["users"], 2.0, 1e-6)
        by = g["central_epsilon_by_bound"]
        assert by["fmt"] == fmt and g["central_epsilon"] == by[g["bound"]] == min(by.values())
        assert g["central_epsilon"] <= fmt < 2.0
    # TAPS chooses GRR, OUE or OLH per level: each gives its profile, and it wins here
    assert {g["bound"] for g in groups} == {"variation-ratio"}
    worst = max(g["central_epsilon"] for g in groups)
    assert block["central"]["epsilon"] == worst and block["central"]["delta"] == 1e-6
    assert block["recipients"]["party"] == {"epsilon": 2.0, "delta": 0.0}
    assert block["recipients"]["analyst"] == {"epsilon": worst, "delta": 1e-6}
    assert block["users_reported"] == sum(lv["reports"] for lv in levels) == 40_000
    assert f"({worst:.3g}, 1e-06)-DP" in block["statement"]
    assert privacy_block([], 2.0)["central"]["epsilon"] == 0.0
    with pytest.raises(ParameterError, match="central_delta"):
        MechanismParams(central_delta=0.5)
