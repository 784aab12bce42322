"""Run bounds and the coordinator's check of what parties report (fedhh.protocol.limits,
fedhh.protocol.coordinator.check_figures): honest replies always pass, even at small ε over
wide candidate sets; absurd ones never do; a deadline stops a party between levels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedhh.core.items import IntCodec
from fedhh.errors import DeadlinePassed, ImplausibleReply, ParameterError, ParameterLimit
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.strategies import level_oracles, oracle_choice
from fedhh.mechanisms.tasks import EstimateResult
from fedhh.protocol import Party, Reply, RunDriver, RunSpec, limits
from fedhh.run.engine import simulate

CODES = [np.random.default_rng(i).zipf(1.4, 400).clip(max=4000).astype(np.uint64) for i in range(3)]


def test_limits_refuse_before_work() -> None:
    ok = MechanismParams(mechanism="taps", k=8, m=16, level_candidates=1 << 12)
    widest = limits.level_candidates(ok) + 100
    lim = limits.Limits(max_k=100, max_candidates=widest, max_memory_mb=300)
    limits.check_run(ok, ["a", "b"], [1000, 1000], lim)
    with pytest.raises(ParameterLimit, match="limit of 100"):
        limits.check_run(dataclasses.replace(ok, k=101), ["a"], None, lim)
    with pytest.raises(ParameterLimit, match="candidate limit"):
        limits.check_run(dataclasses.replace(ok, kappa=1 << 17), ["a"], None, lim)
    with pytest.raises(ParameterLimit, match="may decode"):
        limits.check_run(dataclasses.replace(ok, level_candidates=1 << 13), ["a"], None, lim)
    with pytest.raises(ParameterError, match="more than the 20 users"):
        limits.check_run(dataclasses.replace(ok, k=21), ["a", "b"], [10, 10], lim)
    with pytest.raises(ParameterLimit, match="MB at party b"):
        limits.check_run(ok, ["a", "b"], [1000, 10_000_000], lim)
    # the estimate grows with the users and with the candidates
    assert limits.run_memory(ok, 10_000) < limits.run_memory(ok, 1_000_000)
    wide = dataclasses.replace(ok, oracle="oue", level_candidates=1 << 16)
    assert limits.run_memory(ok, 10_000) < limits.run_memory(wide, 10_000)


@pytest.mark.parametrize("oracle", ["grr", "oue", "olh", "auto"])
@pytest.mark.parametrize("epsilon", [0.1, 2.0])
def test_honest_replies_pass_the_figure_checks(oracle: str, epsilon: float) -> None:
    """Small ε over many candidates gives estimates far beyond ± the party's users: they are
    still what the oracle can produce, and every reply is taken (the top-k answer, so that it
    is not empty where nothing clears the noise bar)."""
    for mechanism in ("pem-global", "taps"):
        params = MechanismParams(
            mechanism=mechanism,
            k=4,
            m=12,
            eta=3,
            oracle=oracle,
            epsilon=epsilon,
            seed=1,
            answer_alpha=0.0,
        )
        result = simulate(CODES, IntCodec(12), params)
        assert result.items.size and sum(result.cost["reports_per_party"].values()) == 1200


def _driver_and_reply() -> tuple[RunDriver, EstimateResult, int]:
    params = MechanismParams(mechanism="pem-global", k=4, m=12, eta=3, oracle="grr", seed=1)
    spec = RunSpec("r", params, ("p0",), (400,), "int:12")
    driver = RunDriver(spec)
    sent = driver.start()
    reply = Party(spec, "p0", CODES[0]).handle(sent[0].request)
    assert reply is not None and isinstance(reply.result, EstimateResult)
    driver.check(reply)  # the honest reply fits
    return driver, reply.result, sent[0].request_id


def test_absurd_figures_are_implausible() -> None:
    driver, good, rid = _driver_and_reply()

    def reply(**change) -> Reply:  # type: ignore[no-untyped-def]
        cost = dataclasses.replace(good.cost, **change.pop("cost", {}))
        return Reply("r", rid, "p0", dataclasses.replace(good, cost=cost, **change))

    n = good.estimates.size
    for bad in (
        reply(cost={"reports": 10**15}),
        reply(cost={"reports": -1}),
        reply(cost={"oracle": "nope"}),
        reply(cost={"oracle": "oue"}),  # a known oracle, but not the run's (grr)
        reply(cost={"candidates": n + 1}),
        reply(cost={"length": 99}),
        reply(cost={"hash_evaluations": 1 << 60}),
        reply(cost={"report_bytes": 1 << 60}),
        reply(estimates=np.full(n, 1e300)),
        reply(estimates=np.full(n, -1e12)),
        reply(stderrs=np.full(n, 1e30)),
    ):
        with pytest.raises(ImplausibleReply):
            driver.check(bad)


@pytest.mark.parametrize("oracle", ["auto", "olh-pool", "grr"])
def test_level_oracles_bound_every_group_of_the_party(oracle: str) -> None:
    """The coordinator's bound oracle of a level (the run's rule for the party's largest group)
    names whatever any smaller group of the party uses and costs it at least as much."""
    params = MechanismParams(oracle=oracle, epsilon=2.0, pool_size=64).resolved()
    choice = oracle_choice(params)
    for d in (3, 40, 3000):
        bounds = level_oracles(params, d, 500_000)
        for n in (0, 10, 300, 5_000, 20_000, 300_000, 500_000):
            o = choice(d, n)
            assert o.name in bounds, (d, n, o)
            b = bounds[o.name]
            assert b.decode_evaluations(n, d - 1) >= o.decode_evaluations(n, d - 1)
            assert b.report_bytes(d - 1) == o.report_bytes(d - 1)
            assert b.probabilities(d) == o.probabilities(d)


def test_a_deadline_stops_a_party_between_levels() -> None:
    params = MechanismParams(mechanism="pem-local", k=4, m=12, eta=2, seed=1)
    spec = RunSpec("r", params, ("p0",), (400,), "int:12")
    sent = RunDriver(spec).start()
    party = Party(spec, "p0", CODES[0])
    calls = []

    def checkpoint() -> None:
        calls.append(1)
        if len(calls) > 2:  # the deadline passes during the local search
            raise DeadlinePassed("late")

    party.checkpoint = checkpoint
    with pytest.raises(DeadlinePassed):
        party.handle(sent[0].request)
    assert len(calls) == 3  # stopped at the start of the second level
    fresh = Party(spec, "p0", CODES[0]).handle(sent[0].request)  # no deadline: answers
    assert fresh is not None and fresh.result.levels
