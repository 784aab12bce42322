"""The level planner: its invariants (users, candidate budget, lengths); runs follow it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedhh.datasets import synthetic_zipf
from fedhh.errors import ParameterError
from fedhh.mechanisms import MechanismParams
from fedhh.mechanisms.levels import (
    balanced_steps,
    max_step,
    next_group,
    plan_levels,
    split_users,
)
from fedhh.mechanisms.plans import phase1_plan
from fedhh.run.engine import simulate


@settings(max_examples=300, deadline=None)
@given(
    users=st.integers(0, 10**7),
    n_levels=st.integers(1, 40),
    weight=st.floats(0.1, 10.0),
)
@example(users=453, n_levels=16, weight=0.10000000000000002)  # the division rounds up to 30
def test_split_users_sums_to_the_users(users: int, n_levels: int, weight: float) -> None:
    split = split_users(users, n_levels, weight)
    assert len(split) == n_levels and sum(split) == users and min(split) >= 0
    # every level but the last gets the same share; the last gets final_weight times it
    if n_levels > 1:
        assert len(set(split[:-1])) == 1
        assert 0 <= split[-1] - weight * split[0] < n_levels + weight
    assert next_group(users, n_levels, weight) == split[0]


@settings(max_examples=400, deadline=None)
@given(
    m=st.integers(2, 64),
    start=st.integers(0, 63),
    n_prefixes=st.integers(1, 4096),
    n_keep=st.integers(1, 256),
    budget_bits=st.integers(8, 20),
    users=st.integers(0, 10**7),
    weight=st.floats(0.25, 4.0),
)
def test_plan_invariants(
    m: int,
    start: int,
    n_prefixes: int,
    n_keep: int,
    budget_bits: int,
    users: int,
    weight: float,
) -> None:
    if start >= m:
        with pytest.raises(ParameterError):
            plan_levels(start, m, n_prefixes, n_keep, users, 1 << budget_bits, weight)
        return
    budget = 1 << budget_bits
    plan = plan_levels(start, m, n_prefixes, n_keep, users, budget, weight)
    # lengths increase from the start to m, every level adds at least one bit
    assert plan.lengths[-1] == m and plan.start == start
    assert all(s >= 1 for s in plan.steps) and sum(plan.steps) == m - start
    # the users of the levels sum to the users available
    assert sum(plan.users) == users and len(plan.users) == len(plan.lengths)
    # every level's candidate set is within the decode budget (a level of one bit is the least a
    # level can do); levels after the first extend the prefixes a level keeps
    for j, s in enumerate(plan.steps):
        n = n_prefixes if j == 0 else n_keep
        assert n * 2**s <= budget or s == 1
    # the fewest levels: one level fewer could not cover the bits within the budget
    later = max_step(n_keep, budget)
    first = max_step(n_prefixes, budget)
    fewest = 1 + max(0, -(-(m - start - first) // later))
    assert len(plan.lengths) <= fewest


def test_balanced_steps() -> None:
    assert balanced_steps(36, [12, 12, 12]) == [12, 12, 12]
    assert balanced_steps(31, [12, 12, 12]) == [11, 10, 10]
    with pytest.raises(ParameterError):
        balanced_steps(40, [12, 12, 12])


def test_phase1_plan_follows_the_planner() -> None:
    p = MechanismParams(mechanism="tap", m=48, k=16).resolved()
    shared, planned = phase1_plan(p)
    assert shared[-1] == 48 and planned == len(shared)
    assert 2 ** shared[0] <= (p.level_candidates or 0)
    # the baselines keep PEM's fixed η
    g = MechanismParams(mechanism="pem-global", m=48, k=16, eta=8).resolved()
    assert phase1_plan(g)[0] == [12, 20, 28, 36, 44, 48]


@pytest.mark.parametrize("mechanism", ["tap", "taps"])
def test_runs_follow_the_plan(mechanism: str) -> None:
    """Every party's levels use all its users, and no level decodes more than the budget allows
    for the prefixes it extends."""
    ds = synthetic_zipf(60_000, 4, m=32, split="dirichlet", alpha=0.3, seed=3)
    budget = 1 << 12
    params = MechanismParams(
        mechanism=mechanism, epsilon=3.0, k=8, m=32, level_candidates=budget, seed=2
    )
    res = simulate(ds.parties, ds.codec, params)
    levels = res.cost["levels"]
    sizes = ds.party_sizes
    for i, pid in enumerate(sorted({lv["party"] for lv in levels})):
        mine = [lv for lv in levels if lv["party"] == pid]
        assert sum(lv["reports"] for lv in mine) == sizes[i]
        kappa = params.resolved().kappa or 0
        prior = int(np.ceil(params.prior_factor * params.k))
        for lv in mine:
            # a level extends at most κ kept prefixes (+ the party's own starts and the TAPS prior)
            assert lv["candidates"] <= 3 * kappa * 2 ** lv["step"] + prior
            assert lv["candidates"] <= budget * 3 + prior


def test_horizon_from_length_buckets_takes_the_tails_lower_bound() -> None:
    """Items of at most 6 bytes fall in buckets ≤ 3 (⌈bytes / 2⌉): they have ended by
    8·(6 + 1) = 56 bits. A noisy tail passes by its lower bound (estimate − SE ≤ 1%), not by its
    upper bound; a tail that holds users beyond that keeps the horizon at m."""
    from fedhh.mechanisms.levels import horizon_bits, length_buckets

    assert list(length_buckets(np.array([0, 1, 2, 3, 6, 7]))) == [0, 1, 1, 2, 3, 4]
    n = 10_000
    counts = np.array([0.0, 2_000, 5_000, 3_000, 150, 0, 0, 0, 0])  # W = 16 bytes
    se = np.full(counts.size, 60.0)  # tail after bucket 3: 150 ± 60·2 users, 1% = 100
    assert horizon_bits(counts, se, n, 128) == 56
    # the upper bound waits until the tail's noise alone is under 1%: 3 buckets of 60 → 104 > 100
    assert horizon_bits(counts, se, n, 128, z=1.0) == 8 * (2 * 6 + 1)
    counts[5:] = 2_000  # a fifth of the users hold items over 8 bytes
    assert horizon_bits(counts, se, n, 128) == 128
