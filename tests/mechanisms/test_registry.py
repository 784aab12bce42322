"""The mechanism registry (issue 21): every mechanism declares its party modes and has a plan,
levels and rounds, the layers ask it instead of testing names, and the rounds it predicts are the
rounds a run takes (a bound, tightened once the shared levels end, while adaptive depth decides)."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from fedhh.datasets import synthetic_urls, synthetic_zipf
from fedhh.errors import ParameterError
from fedhh.mechanisms import MECHANISMS, REGISTRY, MechanismParams, mechanism_of
from fedhh.mechanisms.layout import Rounds, layout_of, rounds_of
from fedhh.mechanisms.params import KEEP_PER_K
from fedhh.mechanisms.tasks import EstimateTask, SearchTask
from fedhh.protocol import Progress, Request, RunResult
from fedhh.protocol.limits import level_candidates
from fedhh.protocol.messages import check_feasible
from fedhh.run.engine import build_run, expected_rounds, run_in_process

ROOT = Path(__file__).resolve().parents[2]

# the variants whose rounds differ: adaptive depth (planned and η-levels), fixed depth, no
# Phase I, the completion round
VARIANTS = [
    {},
    {"adaptive_depth": False},
    {"step_rule": "fixed"},
    {"step_rule": "fixed", "adaptive_depth": False},
    {"phase1_levels": 0, "adaptive_depth": False},
    {"completion": 0.1},
]


@pytest.fixture(scope="module")
def feds():
    """Two small federations: IID (adaptive depth stays shared) and skewed (it goes local)."""
    return {
        "iid": synthetic_zipf(40_000, 4, m=24, split="iid", seed=3),
        "skew": synthetic_zipf(40_000, 4, m=24, split="dirichlet", alpha=0.1, seed=3),
    }


def _run(fed, params: MechanismParams) -> tuple[RunResult, int, list[Progress], list[Request]]:
    """One in-process run: its result, parties, the progress it showed and every request."""
    spec, parties = build_run(fed.parties, fed.codec, params)
    requests: list[Request] = []
    for party in parties.values():
        handle = party.handle

        def record(req: Request, handle=handle) -> object:
            requests.append(req)
            return handle(req)

        party.handle = record  # type: ignore[method-assign]
    seen: list[Progress] = []
    res = run_in_process(spec, parties, progress=lambda p: seen.append(dataclasses.replace(p)))
    return res, len(spec.party_ids), seen, requests


# --- the declarations ------------------------------------------------------------------------
def test_every_declared_mechanism_answers() -> None:
    assert tuple(REGISTRY) == MECHANISMS
    for name, mech in REGISTRY.items():
        assert mech.name == name and mechanism_of(name) is mech
        assert MechanismParams(mechanism=name).mech is mech
        assert mech.estimates or mech.search is not None  # parties do something
        assert mech.search in (None, "pem", "phase2")
        assert not mech.pools_users or (mech.search == "pem" and not mech.estimates)
        assert not mech.passes_prior or mech.search == "phase2"  # the prior feeds Phase II
        assert not mech.completion_round or mech.passes_prior
        for m in (20, 48):
            p = MechanismParams(mechanism=name, k=8, m=m)
            lay = layout_of(p)
            assert lay.planned >= 1 and lay.party_levels >= lay.planned
            assert bool(lay.shared) == mech.estimates
            assert all(a < b for a, b in zip(lay.shared, lay.shared[1:], strict=False))
            assert not lay.shared or lay.shared[-1] <= m
            assert lay.widest == level_candidates(p) >= 2 ** (lay.shared[0] if lay.shared else 1)
            r = rounds_of(p, 5)
            assert 1 <= r.fewest <= r.most == expected_rounds(p, 5)
    with pytest.raises(ParameterError, match="unknown mechanism"):
        mechanism_of("pem-glob")


def test_what_the_mechanisms_declare() -> None:
    pem, local, glob, tap, taps = (REGISTRY[n] for n in MECHANISMS)
    assert [m.pools_users for m in (pem, local, glob, tap, taps)] == [1, 0, 0, 0, 0]
    assert [m.estimates for m in (pem, local, glob, tap, taps)] == [0, 0, 1, 1, 1]
    searches = ["pem", "pem", None, "phase2", "phase2"]
    assert [m.search for m in (pem, local, glob, tap, taps)] == searches
    assert [m.passes_prior for m in (pem, local, glob, tap, taps)] == [0, 0, 0, 0, 1]
    assert [m.baseline for m in (pem, local, glob, tap, taps)] == [1, 1, 1, 0, 0]
    # the completion reserve is one more group a TAPS party needs; TAP ignores completion
    for name, extra in (("taps", 1), ("tap", 0)):
        p = MechanismParams(mechanism=name, k=4, m=20, step_rule="fixed", eta=2, completion=0.2)
        lay = layout_of(p)
        assert lay.reserve == bool(extra) and lay.party_levels == lay.planned + extra
        check_feasible(p, ["a"], [lay.party_levels])
        with pytest.raises(ParameterError, match="fewer than the"):
            check_feasible(p, ["a"], [lay.party_levels - 1])


def test_no_mechanism_is_told_apart_by_its_name() -> None:
    """The layers ask the registry; names are compared only where they are declared."""
    test = re.compile(r"mechanism\s*(==|!=)|mechanism\s+(not\s+)?in\s+[(\[{]|BASELINES")
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for d in ("fedhh", "server", "clients")
        for p in sorted((ROOT / d).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if test.search(line) and "wire/v1" not in str(p)
    ]
    assert found == []


# --- plans ask for what the mechanism declares, and take the rounds it predicts ---------------
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_rounds_predicted_are_rounds_run(feds, mechanism: str) -> None:
    mech = REGISTRY[mechanism]
    for extra in VARIANTS:
        for name, fed in feds.items():
            p = MechanismParams(mechanism=mechanism, epsilon=4.0, k=8, m=24, seed=2, **extra)
            res, n_parties, seen, requests = _run(fed, p)
            rounds = res.cost["rounds"]
            bound = rounds_of(p, n_parties)
            where = f"{mechanism} {extra} {name}: {rounds} rounds, predicted {bound}"
            assert bound.fewest <= rounds <= bound.most == expected_rounds(p, fed.n_parties), where
            if bound.exact:
                assert rounds == bound.most, where
            # the display never shows a round past its total, and is exact once shared ends
            assert all(s.rounds is not None and s.round <= s.rounds.most for s in seen), where
            past = [s for s in seen if s.phase not in ("starting", "shared levels")]
            assert all(s.rounds == Rounds(rounds, rounds) for s in past), where
            _check_requests(mech, p, requests, n_parties, where)


def _check_requests(mech, p: MechanismParams, requests: list[Request], n: int, where: str) -> None:
    by_round: dict[int, list[Request]] = {}
    for req in requests:
        by_round.setdefault(req.round, []).append(req)
    for reqs in by_round.values():
        tasks = [r.task for r in reqs]
        if isinstance(tasks[0], SearchTask):
            assert all(t.mode == mech.search for t in tasks), where
            assert len(tasks) == (1 if mech.passes_prior else n), where
        else:
            assert all(isinstance(t, EstimateTask) for t in tasks), where
            reserve = [t for t in tasks if t.group == "reserve"]
            assert mech.estimates or reserve, where
            assert not reserve or (mech.completion_round and p.completion > 0), where
    searches = [r.task for r in requests if isinstance(r.task, SearchTask)]
    assert mech.passes_prior or not any(t.prior_items.size for t in searches), where


def test_adaptive_depth_bounds_the_rounds_where_the_old_total_was_wrong(feds) -> None:
    """TAPS with adaptive depth on skewed parties goes local after its first shared level: 1 + 4
    turns. The old total counted every planned level as shared (2 rounds): "round 5/2"."""
    p = MechanismParams(mechanism="taps", epsilon=4.0, k=8, m=24, seed=2)
    res, _, seen, _ = _run(feds["skew"], p)
    assert layout_of(p).shared == (17, 24)
    assert res.cost["rounds"] == 5 and rounds_of(p, 4) == Rounds(2, 5)
    assert expected_rounds(p, 4) == 5
    # the display: a bound during the shared levels, exact from the first turn on
    labels = [s.rounds.label(s.round) for s in seen if s.rounds]
    assert labels == ["round 1/≤5", *(f"round {r}/5" for r in range(2, 6)), "round 5/5"]
    iid, _, _, _ = _run(feds["iid"], p)
    assert iid.cost["rounds"] == 2  # shared to m: no Phase II


@pytest.mark.parametrize("mechanism", ["tap", "taps"])
def test_wide_text_rounds_are_within_the_bounds(mechanism: str) -> None:
    """Zero-padded text wider than 64 bits: the shared levels may end as soon as every kept
    prefix has ended, which the bounds allow (``ended_rule``)."""
    urls = synthetic_urls(30_000, 3, n_items=300, s=1.2, seed=4)
    p = MechanismParams(mechanism=mechanism, epsilon=8.0, k=8, m=256, seed=1)
    spec, _ = build_run(urls.parties, urls.codec, p)
    assert spec.ended_rule
    res, n_parties, seen, _ = _run(urls, p)
    bound = rounds_of(p, n_parties, ended_rule=True)
    assert bound.fewest <= res.cost["rounds"] <= bound.most
    assert bound.fewest <= rounds_of(p, n_parties).fewest
    assert seen[-1].rounds == Rounds(res.cost["rounds"], res.cost["rounds"])


def test_round_labels() -> None:
    assert Rounds(3, 3).label(2) == "round 2/3"
    assert Rounds(2, 6).label(1) == "round 1/≤6"


# --- κ = 2k in one place; resolved parameters made once ----------------------------------------
def test_widths_default_to_2k_in_one_place() -> None:
    p = MechanismParams(k=5)
    assert KEEP_PER_K == 2 and (p.n_keep, p.n_keep1, p.n_report) == (10, 10, 10)
    r = p.resolved()
    assert (r.kappa, r.kappa1, r.report_k, r.budget) == (10, 10, 10, 10 * 2**p.eta)
    q = MechanismParams(k=5, kappa=7, kappa1=3, report_k=9, prior_factor=1.5)
    assert (q.n_keep, q.n_keep1, q.n_report, q.n_prior) == (7, 3, 9, 8)


def test_resolved_is_made_once_and_stays_right() -> None:
    p = MechanismParams(mechanism="tap", k=8, m=24, prune_z=2, heterogeneity=3)
    r = p.resolved()
    assert p.resolved() is r and r.resolved() is r
    assert r == p._resolve() and r.to_dict() == p._resolve().to_dict()
    assert "_resolved" not in p.to_dict() and p == MechanismParams(**p.to_dict())
    assert type(r.prune_z) is int and type(r.heterogeneity) is int  # given values stay as given
    # a changed copy resolves afresh, an equal one to an equal copy
    other = dataclasses.replace(p, k=4)
    assert other.resolved().kappa == 8 and r.kappa == 16
    assert MechanismParams(mechanism="tap", k=8, m=24, prune_z=2.0).resolved() == r
    back = pickle.loads(pickle.dumps(p))
    assert back == p and back.resolved() == r


def test_layouts_are_cached_and_equal_to_a_fresh_derivation() -> None:
    from fedhh.mechanisms.layout import _layout

    p = MechanismParams(mechanism="taps", k=8, m=32)
    lay = layout_of(p)
    assert layout_of(MechanismParams(mechanism="taps", k=8, m=32)) is lay
    fresh = _layout.__wrapped__(p.mech, p.resolved())
    assert fresh == lay
    assert lay.shared == (17, 25, 32) and lay.planned == 3 and not lay.reserve
    assert lay.widest == (1 << 17) + p.n_prior


def test_every_registered_mechanism_has_a_plan() -> None:
    from fedhh.mechanisms.plans import PLANS
    from fedhh.mechanisms.registry import MECHANISMS, REGISTRY

    assert set(PLANS) == set(REGISTRY) and MECHANISMS == tuple(REGISTRY)
