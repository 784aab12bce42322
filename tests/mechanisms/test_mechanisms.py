"""Mechanisms: parameters, strategies, the one-report ledger, local search and every mechanism
end to end through the protocol state machines."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fedhh.core.codes import children
from fedhh.core.items import IntCodec
from fedhh.datasets import synthetic_zipf
from fedhh.errors import DuplicateReportError, ParameterError
from fedhh.mechanisms import MECHANISMS, MechanismParams, combine
from fedhh.mechanisms.depth import go_local, heterogeneity_z, party_excess_z
from fedhh.mechanisms.local import UserLedger, top_indices
from fedhh.mechanisms.plans import Combined, phase1_plan
from fedhh.mechanisms.strategies import (
    AdaptiveStep,
    AutoOracle,
    FixedStep,
    NoPrune,
    PlannedSteps,
    StepContext,
    ThresholdPrune,
    VarianceAwareStep,
    build_strategies,
    noise_candidates,
    party_order,
    pool_size_for,
)
from fedhh.mechanisms.tasks import EstimateResult, LevelCost
from fedhh.oracles import GRR, OLH, OLHPool, noise_z
from fedhh.protocol import RunResult
from fedhh.run.engine import build_run, run_in_process, simulate
from fedhh.run.result import answer_at


def _ctx(n_prefixes: int, length: int = 8, m: int = 32, bar: float = 1000.0) -> StepContext:
    return StepContext(n_prefixes, length, m, users_left=100_000, party_size=200_000, bar=bar)


# --- parameters ------------------------------------------------------------------------------
def test_resolved_defaults_follow_the_spec() -> None:
    p = MechanismParams(
        mechanism="tap", k=16, m=48, eta=4, adaptive_depth=False, step_rule="adaptive"
    ).resolved()
    assert p.gamma == 4 and p.kappa == p.kappa1 == p.report_k == 32
    assert p.budget == 32 * 2**4
    assert p.phase1_levels == 2  # L_s = 4 + 2·4 = 12 = m/4
    assert p.prune_z == 0.0
    taps = MechanismParams(mechanism="taps").resolved()
    assert taps.prune_rule == "threshold" and taps.prune_z == 0.0  # as TAP (the study)
    consensus = MechanismParams(mechanism="taps", prune_rule="consensus").resolved()
    assert consensus.prune_z == 2.0
    shared, planned = phase1_plan(p)
    assert shared == [8, 12] and planned == 2 + 9
    # with adaptive depth every η-level may be shared; the party plans the same group sizes
    deep, planned_deep = phase1_plan(dataclasses.replace(p, adaptive_depth=True))
    assert deep == [8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48] and planned_deep == planned


def test_resolved_defaults_of_the_planner() -> None:
    p = MechanismParams(mechanism="taps", k=16, m=48).resolved()
    assert p.step_rule == "planned" and p.planned and p.phase1_levels == 1
    assert p.level_candidates == 1 << 17 and p.final_weight == 1.0
    assert p.consensus_z == 3.0
    assert p.answer_alpha == 0.25  # the noise bar on the answer (mechanisms.md §5)
    # the baselines keep PEM's search rules (fixed η, equal groups) and answer under the same
    # rule as every mechanism; answer_alpha = 0 asks for the top-k they were published with
    b = MechanismParams(mechanism="pem-local", k=16, m=48).resolved()
    assert not b.planned and b.final_weight == 1.0 and b.answer_alpha == 0.25
    top_k = MechanismParams(mechanism="pem-global", k=16, m=48, answer_alpha=0).resolved()
    assert top_k.answer_alpha == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0},
        {"epsilon": float("nan")},
        {"k": 0},
        {"m": 513},
        {"mechanism": "pem-magic"},
        {"oracle": "rappor"},
        {"eta": 0},
        {"step_rule": "greedy"},
        {"completion": 0.7},
        {"prune_z": -1.0},
        {"party_order": "random"},
        {"seed": -3},
        {"final_weight": 0.0},
        {"final_weight": float("inf")},
        {"level_candidates": 0},
        {"level_candidates": 1 << 21},
        {"consensus_z": -1.0},
        {"answer_alpha": -0.1},
        {"answer_alpha": float("nan")},
        {"answer_alpha": True},
        {"prior_by_rank": "no"},
        {"local_start": 1},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ParameterError):
        MechanismParams(**kwargs)


def test_params_dict_round_trip_and_unknown_keys() -> None:
    p = MechanismParams(mechanism="pem-global", epsilon=2.5, k=8, m=20, seed=7)
    assert MechanismParams.from_dict(p.to_dict()) == p
    with pytest.raises(ParameterError, match="unknown run parameter"):
        MechanismParams.from_dict({"mechanism": "tap", "colour": "blue"})


# --- strategies ------------------------------------------------------------------------------
def test_fixed_and_adaptive_steps() -> None:
    assert FixedStep(4).step(_ctx(32)) == 4
    assert FixedStep(4).step(_ctx(32, length=30)) == 2  # capped at m − ℓ
    rule = AdaptiveStep(budget=512)
    assert rule.step(_ctx(32)) == 4  # log2(512/32)
    assert rule.step(_ctx(2)) == 8  # small candidate sets take larger steps
    assert rule.step(_ctx(1000)) == 1  # never below one bit
    assert rule.step(_ctx(1, length=29)) == 3  # never beyond m


def test_variance_aware_step_grows_with_the_bar() -> None:
    rule = VarianceAwareStep(budget=1 << 14, oracle_for=AutoOracle(4.0))
    low, high = rule.step(_ctx(16, bar=50.0)), rule.step(_ctx(16, bar=50_000.0))
    assert 1 <= low <= high
    assert high > 1
    assert 16 * 2**high <= 4 * (1 << 14)


def test_prune_rules_and_party_order() -> None:
    est, se = np.array([5.0, -1.0, 3.0, 10.0]), np.array([2.0, 2.0, 2.0, 2.0])
    assert NoPrune().keep(est, se).all()
    np.testing.assert_array_equal(ThresholdPrune(0.0).keep(est, se), [True, False, True, True])
    np.testing.assert_array_equal(ThresholdPrune(2.0).keep(est, se), [True, False, False, True])
    assert party_order("size-desc", [5, 9, 9, 1]) == [1, 2, 0, 3]
    assert party_order("size-asc", [5, 9, 9, 1]) == [3, 0, 1, 2]
    assert party_order("given", [5, 9, 9, 1]) == [0, 1, 2, 3]


def test_build_strategies_picks_rules_by_mechanism() -> None:
    pem = build_strategies(MechanismParams(mechanism="pem-local").resolved())
    assert isinstance(pem.step, FixedStep) and isinstance(pem.prune, NoPrune)
    tap = build_strategies(
        MechanismParams(mechanism="tap", oracle="grr", step_rule="adaptive").resolved()
    )
    assert isinstance(tap.step, AdaptiveStep) and isinstance(tap.prune, ThresholdPrune)
    planned = build_strategies(MechanismParams(mechanism="tap").resolved())
    assert isinstance(planned.step, PlannedSteps)
    assert tap.oracle_for(1000) == GRR(4.0)
    auto = build_strategies(MechanismParams(mechanism="taps", epsilon=2.0).resolved())
    assert isinstance(auto.oracle_for(5), GRR) and isinstance(auto.oracle_for(5000), OLH)
    # a wide level with many reports decodes from a seed pool (cheaper, same report privacy)
    assert type(auto.oracle_for(5000, 10_000)) is OLH
    pooled = auto.oracle_for(5000, 400_000)
    assert isinstance(pooled, OLHPool) and pooled.pool_size == pool_size_for(400_000, 4096)
    assert pooled.pool_size >= 400_000 // 32


# --- ledger and helpers ----------------------------------------------------------------------
def test_ledger_hands_out_disjoint_groups_and_refuses_repeats() -> None:
    ledger = UserLedger(1000, np.random.default_rng(0), reserve_share=0.1)
    assert ledger.reserve == 100 and ledger.remaining == 900
    a, b = ledger.take(400), ledger.take(600)
    assert a.size == 400 and b.size == 500  # only 500 left outside the reserve
    r = ledger.take_reserve()
    assert r.size == 100
    seen = np.concatenate([a, b, r])
    assert np.unique(seen).size == 1000 and ledger.reports == 1000
    with pytest.raises(DuplicateReportError, match="already reported"):
        ledger.mark(a[:3])


def test_children_and_top_indices() -> None:
    np.testing.assert_array_equal(
        children(np.array([1, 3], np.uint64), 2, 2), [4, 5, 6, 7, 12, 13, 14, 15]
    )
    vals = np.array([3.0, 9.0, 9.0, 1.0, 5.0])
    np.testing.assert_array_equal(top_indices(vals, 3), [1, 2, 4])
    np.testing.assert_array_equal(top_indices(vals, 3, vals < 9), [4, 0, 3])


def test_combine_sums_with_missing_as_zero() -> None:
    a = (np.array([1, 2], np.uint64), np.array([10.0, 20.0]), np.array([3.0, 4.0]))
    b = (np.array([2, 3], np.uint64), np.array([5.0, 7.0]), np.array([4.0, 1.0]))
    c = combine([a, b])
    np.testing.assert_array_equal(c.items, [1, 2, 3])
    np.testing.assert_allclose(c.estimates, [10.0, 25.0, 7.0])
    np.testing.assert_allclose(c.stderrs, [3.0, math.sqrt(32.0), 1.0])
    np.testing.assert_array_equal(c.contributors, [1, 2, 1])


def test_noise_bar_keeps_the_items_above_z_standard_errors() -> None:
    items = np.array([5, 6, 7, 8], np.uint64)
    c = Combined(items, np.array([50.0, 45.0, 30.0, -1.0]), np.full(4, 10.0), np.ones(4, np.int64))
    z = noise_z(1000, 0.05)  # Φ̄⁻¹(0.05 / 1000) ≈ 3.89
    assert 3.8 < z < 4.0
    kept = c.above_noise(0.05, 1000)
    np.testing.assert_array_equal(kept.items, [5, 6])
    np.testing.assert_array_equal(kept.estimates, [50.0, 45.0])
    assert c.above_noise(0.0, 1000) is c  # α = 0: the answer as it is
    assert noise_z(10, 20.0) == -math.inf  # α ≥ N: no bar
    # a shared last level counts once, the parties' own last levels add up
    assert noise_candidates([(True, 4096)] * 8) == 4096
    assert noise_candidates([(False, 4096)] * 8) == 8 * 4096
    assert noise_candidates([]) == 1


@pytest.mark.parametrize("mechanism", ["tap", "taps", "pem-local", "pem-global"])
def test_noise_bar_is_post_processing_of_the_top_k(mechanism: str) -> None:
    """Same seed, same reports: the answer with the bar is the top-k answer's items above
    z·SE, z = Φ̄⁻¹(α/N) with N the candidates of the last levels (ε small for k, so the
    top-k holds noise)."""
    ds = synthetic_zipf(60_000, 4, m=24, n_items=3000, s=1.1, split="dirichlet", seed=3)
    base = MechanismParams(mechanism=mechanism, epsilon=1.0, k=16, m=24, seed=4)
    top_k = simulate(ds.parties, ds.codec, dataclasses.replace(base, answer_alpha=0.0))
    cut = simulate(ds.parties, ds.codec, dataclasses.replace(base, answer_alpha=0.05))
    assert len(top_k.items) == 16
    levels = top_k.cost["levels"]
    last: dict = {}
    for lv in levels:
        if lv["length"] == 24:
            last[lv["party"]] = (lv["phase"] == "shared", lv["candidates"])
    z = noise_z(noise_candidates(last.values()), 0.05)
    keep = top_k.estimates > z * top_k.stderrs
    assert 0 < keep.sum() < 16  # the bar cuts something here, and not everything
    np.testing.assert_array_equal(cut.items, top_k.items[keep])
    np.testing.assert_array_equal(cut.estimates, top_k.estimates[keep])
    assert cut.privacy == top_k.privacy and cut.cost["levels"] == levels
    # and the result of the top-k run, answered at α afterwards, is the run made at α
    again = answer_at(top_k, 0.05)
    np.testing.assert_array_equal(again.items, cut.items)
    np.testing.assert_array_equal(again.stderrs, cut.stderrs)
    np.testing.assert_array_equal(again.contributors, cut.contributors)
    assert again.params["answer_alpha"] == 0.05 and answer_at(top_k, 0.0) is top_k


# --- mechanisms end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def federation():
    # steep Zipf: the top-k are well separated, so group sampling cannot swap ranks
    return synthetic_zipf(
        200_000, 4, m=20, n_items=500, s=2.0, split="dirichlet", alpha=0.3, seed=5
    )


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_mechanism_exact_at_huge_epsilon(federation, mechanism: str) -> None:
    k = 8
    params = MechanismParams(mechanism=mechanism, epsilon=30.0, k=k, m=20, eta=3, seed=1)
    res = simulate(federation.parties, federation.codec, params)
    truth = federation.top_k(k)
    assert set(res.items.tolist()) == set(truth.tolist())
    counts = federation.count_of(res.items)
    # at ε = 30 the oracle is exact; the only error is the group sampling (scaled counts)
    assert np.all(np.abs(res.estimates - counts) <= 6 * res.stderrs + 1e-6)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_no_user_reports_twice(federation, mechanism: str) -> None:
    params = MechanismParams(
        mechanism=mechanism, epsilon=2.0, k=8, m=20, completion=0.1 if mechanism == "taps" else 0.0
    )
    spec, parties = build_run(federation.parties, federation.codec, params)
    res = run_in_process(spec, parties)
    for pid, party in parties.items():
        assert party.ledger.reports == res.cost["reports_per_party"][pid]
        assert party.ledger.reports <= party.codes.size
        assert party.ledger.reported.sum() == party.ledger.reports  # each user at most once
    assert res.privacy["users_reported"] <= federation.n_users
    assert res.privacy["reports_per_user"] == 1


def test_same_seed_same_result(federation) -> None:
    params = MechanismParams(mechanism="taps", epsilon=2.0, k=8, m=20, seed=11)
    a = simulate(federation.parties, federation.codec, params)
    b = simulate(federation.parties, federation.codec, params)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.estimates, b.estimates)
    c = simulate(
        federation.parties, federation.codec, MechanismParams(**{**params.to_dict(), "seed": 12})
    )
    assert not np.array_equal(a.estimates, c.estimates)


def test_cost_bookkeeping(federation) -> None:
    p = MechanismParams(mechanism="pem-global", epsilon=2.0, k=8, m=20, eta=4)
    res = simulate(federation.parties, federation.codec, p)
    shared, _ = phase1_plan(p.resolved())
    assert res.cost["rounds"] == len(shared)
    assert len(res.cost["levels"]) == len(shared) * federation.n_parties
    assert res.cost["bytes_to_parties"] > 0 and res.cost["bytes_to_coordinator"] > 0
    assert sum(res.cost["reports_per_party"].values()) == federation.n_users
    taps = simulate(
        federation.parties, federation.codec, MechanismParams(mechanism="taps", m=20, k=8)
    )
    assert taps.cost["rounds"] < res.cost["rounds"] + federation.n_parties


def test_party_with_too_few_users_is_refused() -> None:
    parties = [np.arange(100, dtype=np.uint64), np.arange(3, dtype=np.uint64)]
    with pytest.raises(ParameterError, match="party-1 has 3 users"):  # the driver's admission
        simulate(
            parties,
            IntCodec(20),
            MechanismParams(mechanism="tap", m=20, k=4, step_rule="fixed", eta=2),
        )


def _shared_levels(result: RunResult, parties: int = 8) -> int:
    """Shared levels a run estimated (each is one cost entry per party)."""
    return sum(1 for lv in result.cost["levels"] if lv["phase"] == "shared") // parties


def test_adaptive_depth_stays_global_on_iid_and_goes_local_on_non_iid() -> None:
    iid = synthetic_zipf(200_000, 8, m=32, split="iid", seed=3)
    skew = synthetic_zipf(200_000, 8, m=32, split="dirichlet", alpha=0.1, seed=3)
    p = MechanismParams(mechanism="tap", epsilon=4.0, k=16, m=32)
    r_iid = simulate(iid.parties, iid.codec, p)
    r_skew = simulate(skew.parties, skew.codec, p)
    assert _shared_levels(r_iid) > _shared_levels(r_skew) == 1
    all_levels = len(phase1_plan(p.resolved())[0])
    n_shared = _shared_levels(r_iid)
    assert r_iid.cost["rounds"] == n_shared + (0 if n_shared == all_levels else 1)


def _level_replies(
    shares: list[float], counts: np.ndarray, se: float, rng: np.random.Generator
) -> dict[int, EstimateResult]:
    """One shared level's replies: party i estimates shares[i]·counts with N(0, se²) noise."""
    cost = LevelCost(17, 17, counts.size, 1000, "olh", 0, 0)
    return {
        i: EstimateResult(
            w * counts + rng.normal(0.0, se, counts.size), np.full(counts.size, se), cost
        )
        for i, w in enumerate(shares)
    }


def test_party_excess_finds_the_item_one_party_holds_and_the_chi2_misses() -> None:
    rng = np.random.default_rng(11)
    sizes = [1000] * 8
    counts = np.zeros(20_000)
    counts[:50] = np.linspace(400.0, 100.0, 50)  # items every party holds in proportion
    replies = _level_replies([1 / 8] * 8, counts, 1.0, rng)
    est = np.sum([r.estimates for r in replies.values()], axis=0)
    se = np.full(counts.size, math.sqrt(8.0))
    top = top_indices(est, 32)
    p = MechanismParams(mechanism="tap", k=16)
    bar = noise_z(8 * counts.size, p.excess_alpha)  # Φ̄⁻¹(0.01 / 160,000) ≈ 5.3
    # Homogeneous: each excess is ≈ N(0, 1), the largest of 160,000 near 4.5, below the bar.
    assert 3.5 < party_excess_z(replies, est, se, sizes) < bar
    assert not go_local(p, replies, top, est, se, sizes)
    # Party 0 alone holds candidate 10,000 at 8 SE: the sum sees it at 8/√8 ≈ 2.8 SE, not kept.
    replies[0].estimates[10_000] += 8.0
    est[10_000] += 8.0
    assert 10_000 not in top
    assert heterogeneity_z(replies, top, est, sizes) < p.heterogeneity
    assert party_excess_z(replies, est, se, sizes) > bar
    assert go_local(p, replies, top, est, se, sizes)
    assert not go_local(dataclasses.replace(p, excess_alpha=0.0), replies, top, est, se, sizes)


def test_a_party_with_its_own_heavy_item_takes_it_local() -> None:
    """IID parties, but party 0 gives 15% of its users one item of its own (1.9% of all): at
    ε = 1 the χ² test alone keeps every level shared and the item is lost in the sum; the
    excess test starts Phase II after the first level and party 0 finds it."""
    iid = synthetic_zipf(200_000, 8, m=32, split="iid", seed=3)
    parties = [p.copy() for p in iid.parties]
    item = np.uint64(0xABCDE123)
    assert not any((p == item).any() for p in parties)
    parties[0][: parties[0].size * 15 // 100] = item
    p = MechanismParams(mechanism="tap", epsilon=1.0, k=16, m=32)
    with_excess = simulate(parties, iid.codec, p)
    chi2_only = simulate(parties, iid.codec, dataclasses.replace(p, excess_alpha=0.0))
    assert _shared_levels(with_excess) == 1 < _shared_levels(chi2_only)
    assert item in set(with_excess.items.tolist())
    assert item not in set(chi2_only.items.tolist())


def test_party_search_tree_is_inspectable(federation) -> None:
    params = MechanismParams(mechanism="taps", epsilon=3.0, k=8, m=20, seed=2)
    spec, parties = build_run(federation.parties, federation.codec, params)
    res = run_in_process(spec, parties)
    trie = parties[spec.party_ids[0]].trie
    assert len(trie) > 0
    leaves = trie.frontier(20)
    assert leaves.size > 0 and np.isfinite(trie.get_stat("estimate", leaves)).all()
    reported = set(res.items.tolist())
    assert reported & set(trie.label[leaves].tolist())
    for node in leaves[:5]:  # every alive leaf hangs under alive ancestors with estimates
        p = int(trie.parent[node])
        while p >= 0:
            assert trie.alive[p]
            p = int(trie.parent[p])
    assert trie.export()["label"]


def test_completion_fills_only_the_items_a_party_did_not_report() -> None:
    from fedhh.mechanisms.plans import complete

    items = np.array([5, 7, 9], np.uint64)
    by_party = {
        0: (np.array([9, 5], np.uint64), np.array([90.0, 50.0]), np.array([3.0, 4.0])),
        1: (np.zeros(0, np.uint64), np.zeros(0), np.zeros(0)),
    }
    cost = LevelCost(32, 0, 3, 10, "grr", 0, 10)
    replies = {
        0: EstimateResult(np.array([1.0, 2.0, 3.0]), np.ones(3), cost),
        1: EstimateResult(np.array([10.0, 20.0, 30.0]), np.full(3, 2.0), cost),
    }
    fill = complete(by_party, replies, items, "fill")
    np.testing.assert_allclose(fill.estimates, [60.0, 22.0, 120.0])
    np.testing.assert_allclose(fill.stderrs**2, [20.0, 5.0, 13.0])
    np.testing.assert_array_equal(fill.contributors, [2, 2, 2])
    fresh = complete(by_party, replies, items, "sum")  # reserve estimates only
    np.testing.assert_allclose(fresh.estimates, [11.0, 22.0, 33.0])
