"""Local search inside one party (docs/mechanisms.md §4–6): exactness at huge ε, the decode
budget of every level, and which of the TAPS prior's items a party ranks into its report."""

from __future__ import annotations

import numpy as np
import pytest

from fedhh.datasets import synthetic_zipf
from fedhh.mechanisms import MechanismParams
from fedhh.mechanisms.local import UserLedger, local_search
from fedhh.mechanisms.strategies import build_strategies


def _population(seed: int = 0, n: int = 40_000, m: int = 24) -> np.ndarray:
    ds = synthetic_zipf(n, 1, m=m, n_items=300, s=1.2, split="iid", seed=seed)
    return ds.parties[0]


def test_local_search_exact_at_huge_epsilon() -> None:
    codes = _population()
    params = MechanismParams(mechanism="pem-local", epsilon=30.0, k=8, m=24).resolved()
    ledger = UserLedger(codes.size, np.random.default_rng(1))
    strat = build_strategies(params)
    res = local_search(
        codes, ledger, params, strat, np.random.default_rng(2), 3, np.arange(8, dtype=np.uint64)
    )
    vals, counts = np.unique(codes, return_counts=True)
    truth = set(vals[np.argsort(-counts, kind="stable")[:8]].tolist())
    assert truth <= set(res.items[:16].tolist())
    assert ledger.reports == codes.size  # every user reported exactly once over the levels


def test_candidate_sets_stay_within_budget_without_branching() -> None:
    """All users hold one item: |P| stays tiny, the adaptive step grows, |C| ≤ B."""
    codes = np.full(20_000, 0xABCDE1, dtype=np.uint64)
    for rule in ({"step_rule": "adaptive", "budget": 256}, {"level_candidates": 256}):
        params = MechanismParams(mechanism="tap", epsilon=4.0, k=4, m=24, **rule).resolved()
        strat = build_strategies(params)
        ledger = UserLedger(codes.size, np.random.default_rng(0))
        res = local_search(
            codes, ledger, params, strat, np.random.default_rng(1), 8, np.array([0xAB], np.uint64)
        )
        assert all(lv.candidates <= 256 for lv in res.levels)
        assert len(res.levels) < 16  # larger steps than one bit
        assert res.items[0] == 0xABCDE1
        assert ledger.reports == codes.size


def _prior_search(prior_by_rank: bool, consensus_z: float) -> set[int]:
    """One TAPS party's Phase II from the prefix 0xA1 (its own items 0xA101–0xA103) with the
    prior {0x3C05, 0xA102}: 0x3C05 is held by 10% of the party but lies outside its search
    (its estimate here: z ≈ 32)."""
    rng = np.random.default_rng(3)
    held = np.repeat(
        np.array([0xA101, 0xA102, 0xA103, 0x3C05], np.uint64), [3000, 2500, 2500, 2000]
    )
    codes = rng.permutation(np.concatenate([held, rng.integers(0, 1 << 16, 10_000, np.uint64)]))
    params = MechanismParams(
        mechanism="taps",
        epsilon=4.0,
        k=2,
        m=16,
        prior_by_rank=prior_by_rank,
        consensus_z=consensus_z,
    ).resolved()
    res = local_search(
        codes,
        UserLedger(codes.size, np.random.default_rng(1)),
        params,
        build_strategies(params),
        np.random.default_rng(2),
        8,
        np.array([0xA1], np.uint64),
        prior_items=np.array([0x3C05, 0xA102], np.uint64),
    )
    return set(res.items.tolist())


@pytest.mark.parametrize(
    ("prior_by_rank", "consensus_z", "outside"),
    [
        (True, 50.0, True),  # ranked in
        (False, 50.0, False),  # not significant at z = 50, and not ranked
        (False, 3.0, True),  # significant at z = 3
    ],
)
def test_which_prior_items_a_party_ranks_into_its_report(
    prior_by_rank: bool, consensus_z: float, outside: bool
) -> None:
    """docs/mechanisms.md §6: the top-k' is ranked over the party's own search (every candidate
    with ``prior_by_rank``); a prior item the search did not reach (0x3C05) is reported only
    above consensus_z·SE, one it found (0xA102) is ranked as any other."""
    items = _prior_search(prior_by_rank, consensus_z)
    assert {0xA101, 0xA102, 0xA103} <= items
    assert (0x3C05 in items) is outside


def test_a_search_pruned_to_the_prior_takes_one_last_level_with_every_user_left() -> None:
    """Consensus pruning (docs/mechanisms.md §6) that leaves no open prefix of the party's own:
    the prior's items are what is left to estimate, so the next level goes to m with every user
    left instead of spreading them over levels that would estimate only the prior's prefixes."""
    codes = _population(seed=4, m=48)
    params = MechanismParams(
        mechanism="taps", epsilon=2.0, k=4, m=48, prune_rule="consensus", prune_z=0.0
    ).resolved()
    ledger = UserLedger(codes.size, np.random.default_rng(1))
    prior = np.unique(codes)[:6]
    res = local_search(
        codes,
        ledger,
        params,
        build_strategies(params),
        np.random.default_rng(2),
        4,
        np.arange(16, dtype=np.uint64),
        prior_items=prior,
        prune_bar=float(codes.size) * 2,  # no candidate of the party's own can reach it
    )
    assert [lv.length for lv in res.levels][-1] == 48
    assert len(res.levels) == 2  # the first level, then straight to m
    assert res.levels[1].candidates == prior.size  # the prior's items alone
    assert res.levels[1].reports == codes.size - res.levels[0].reports  # every user left
    assert ledger.remaining == 0
    assert set(res.items.tolist()) <= set(prior.tolist())
