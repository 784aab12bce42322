"""Composition of a user's runs (fedhh.core.accounting, docs/privacy.md): basic composition by
hand, the optimal composition (dp_accounting's privacy loss distributions) against a figure
computed by hand and against Kairouz, Oh and Viswanath's optimal homogeneous composition
written out here, never above basic composition, and monotone in the runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedhh.core import accounting
from fedhh.core.accounting import (
    BASIC,
    PLD,
    compose,
    homogeneous_delta,
    homogeneous_epsilon,
    party_guarantees,
)
from fedhh.errors import ParameterError


def brute_force_delta(eps: tuple[float, ...], delta: float, eps_total: float) -> float:
    """δ at ``eps_total`` of runs of (εᵢ, δ) composed, summed over every outcome: each run is
    the worst (εᵢ, δ) mechanism (an outcome that gives the input away with probability δ,
    else randomized response with p = e^εᵢ/(1 + e^εᵢ))."""
    total = 0.0
    for signs in itertools.product((1, -1), repeat=len(eps)):
        loss = [s * e for e, s in zip(eps, signs, strict=True)]  # each run's privacy loss
        p_x = math.prod(1 / (1 + math.exp(-x)) for x in loss)
        p_y = math.prod(1 / (1 + math.exp(x)) for x in loss)
        total += max(0.0, p_x - math.exp(eps_total) * p_y)
    return 1 - (1 - delta) ** len(eps) * (1 - total)


def test_basic_composition_by_hand() -> None:
    got = compose([(0.5, 1e-8)] * 4, method=BASIC)
    assert (got.epsilon, got.delta, got.runs, got.method) == (2.0, pytest.approx(4e-8), 4, BASIC)
    got = compose([(0.25, 1e-8), (1.0, 1e-9), (0.5, 0.0)], method=BASIC)
    assert got.epsilon == 1.75 and got.delta == pytest.approx(1.1e-8)
    none = compose([], method=BASIC)
    assert (none.epsilon, none.delta, none.runs) == (0.0, 0.0, 0)
    with pytest.raises(ParameterError):
        compose([(-1.0, 0.0)])
    with pytest.raises(ParameterError):
        compose([(1.0, 0.0)], method="rdp")


def test_two_pure_runs_by_hand() -> None:
    """Two runs of (1, 0): the privacy loss is 2 with probability p², 0 or −2 else, so for
    ε' < 2, δ(ε') = p² − e^ε'·q² = (e² − e^ε')/(1 + e)², i.e. at δ = 0.1
    ε' = ln(e² − 0.1·(1 + e)²) = 1.7928 (basic composition: 2)."""
    by_hand = math.log(math.e**2 - 0.1 * (1 + math.e) ** 2)
    assert by_hand == pytest.approx(1.7928, abs=1e-4)
    assert homogeneous_epsilon(2, 1.0, 0.0, 0.1) == pytest.approx(by_hand, abs=1e-8)
    got = compose([(1.0, 0.0)] * 2, slack=0.1, method=PLD)
    assert got.method == PLD and got.delta == pytest.approx(0.1)
    assert by_hand - 1e-9 <= got.epsilon <= by_hand + 1e-3  # pessimistic rounding: above


@pytest.mark.parametrize(("eps", "k"), [(0.1, 100), (0.3, 40), (1.0, 40)])
def test_optimal_homogeneous_composition(eps: float, k: int) -> None:
    """k runs of (ε, 10⁻⁸) at δ = k·10⁻⁸ + 10⁻⁶: the PLD gives KOV's optimum to its rounding,
    below the advanced composition theorem and basic composition (ε = 0.1, k = 100: 4.775
    against 5.756 and 10)."""
    slack = 1e-6
    got = compose([(eps, 1e-8)] * k, slack=slack, method=PLD)
    optimum = homogeneous_epsilon(k, eps, 1e-8, k * 1e-8 + slack)
    assert optimum - 1e-9 <= got.epsilon <= optimum + 2e-3
    advanced = math.sqrt(2 * k * math.log(1 / slack)) * eps + k * eps * math.tanh(eps / 2)
    assert got.epsilon <= min(advanced, k * eps) + 1e-9
    if (eps, k) == (0.1, 100):
        assert got.epsilon == pytest.approx(4.775, abs=2e-3) and advanced == pytest.approx(
            5.756, abs=1e-3
        )


def test_the_closed_form_and_the_pld_against_every_outcome() -> None:
    """Kairouz, Oh and Viswanath's closed form is the sum over every outcome of 6 runs of one
    (ε, δ); the PLD of 6 different runs is at least the exact ε of their sum (an upper bound)
    and within its rounding of it."""
    for eps_total in (0.0, 0.5, 1.3, 2.9):
        want = brute_force_delta((0.6,) * 6, 1e-6, eps_total)
        assert homogeneous_delta(6, 0.6, 1e-6, eps_total) == pytest.approx(want, rel=1e-9)
    runs = (0.2, 0.35, 0.5, 0.6, 0.8, 1.1)
    target = 6 * 1e-6 + 1e-3
    lo, hi = 0.0, sum(runs)
    for _ in range(60):  # the exact ε of the composition at the target, by bisection
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if brute_force_delta(runs, 1e-6, mid) <= target else (mid, hi)
    got = compose([(e, 1e-6) for e in runs], slack=1e-3, method=PLD)
    assert hi - 1e-9 <= got.epsilon <= hi + 1e-3 and got.epsilon < sum(runs)


def test_never_above_basic_and_monotone_in_the_runs() -> None:
    rng = np.random.default_rng(7)
    runs = [(float(e), 1e-8) for e in rng.uniform(0.05, 1.2, 12)]
    for method in (PLD, BASIC):
        figures = [compose(runs[:j], method=method) for j in range(len(runs) + 1)]
        eps = [f.epsilon for f in figures]
        assert eps == sorted(eps) and eps[0] == 0.0  # one more run never costs less
        assert all(f.epsilon <= f.basic_epsilon + 1e-12 for f in figures)
        assert [f.delta for f in figures] == sorted(f.delta for f in figures)
    # the optimal composition gains on basic composition once runs are many and small
    small = compose([(0.05, 1e-8)] * 200, method=PLD)
    assert small.epsilon < 0.6 * small.basic_epsilon


def test_basic_composition_without_the_extra_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting, "pld_available", lambda: False)
    got = compose([(0.5, 1e-8)] * 3)
    assert got.method == BASIC and got.epsilon == 1.5
    assert "pip install 'fedhh[accounting]'" in accounting.METHODS[got.method]
    assert compose([(0.5, 1e-8)] * 3, method=None).fields()["basic"] == {
        "epsilon": 1.5,
        "delta": pytest.approx(3e-8),
    }


def test_a_runs_guarantee_at_each_party_is_its_worst_group() -> None:
    block = {
        "central": {
            "delta": 1e-7,
            "groups": [
                {"party": "a", "central_epsilon": 0.2},
                {"party": "a", "central_epsilon": 0.5},
                {"party": "b", "central_epsilon": 0.3},
            ],
        }
    }
    assert party_guarantees(block) == {"a": (0.5, 1e-7), "b": (0.3, 1e-7)}
    assert party_guarantees({}) == {}
