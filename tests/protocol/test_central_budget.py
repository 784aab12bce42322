"""Budgets in central terms (fedhh.protocol.admission, docs/privacy.md): a central target gets
the largest ε₀ whose ε_c at the smallest planned group meets it, within the run's ε and the
parties' ledgers, chosen once and kept; a party's cap on ε_c refuses a run before any work,
in-process and at the party's own admission (the gRPC agent and the Flower ClientApp)."""

from __future__ import annotations

import dataclasses

import pytest

from fedhh.core.privacy import shuffle_epsilon
from fedhh.datasets import synthetic_zipf
from fedhh.errors import ParameterError
from fedhh.mechanisms import MechanismParams
from fedhh.mechanisms.levels import LENGTH_SHARE
from fedhh.protocol.admission import (
    PartyAdmission,
    admit_run,
    choose_epsilon,
    fresh_budget,
    smallest_group,
)
from fedhh.protocol.limits import Limits
from fedhh.protocol.messages import RunSpec
from fedhh.run.engine import build_run, simulate

SIZES = (20_000, 12_000, 8_000)


def _params(**kw: object) -> MechanismParams:
    base: dict[str, object] = dict(mechanism="taps", k=8, m=24, seed=2, epsilon=8.0)
    return MechanismParams(**{**base, **kw})  # type: ignore[arg-type]


def test_the_chosen_eps0_is_the_largest_that_meets_the_target_and_is_kept() -> None:
    p = _params(central_epsilon=0.8, central_delta=1e-8)
    chosen = choose_epsilon(p, SIZES)
    floor = min(smallest_group(p, n) for n in SIZES)
    eps0 = chosen.epsilon
    assert 0.01 < eps0 < 8.0 and chosen.central_epsilon == 0.8
    assert shuffle_epsilon(floor, eps0, 1e-8) <= 0.8 < shuffle_epsilon(floor, eps0 + 0.001, 1e-8)
    assert choose_epsilon(chosen, SIZES) == chosen  # admitting the chosen run again keeps it
    # the run's ε bounds it, and so does the tightest party ledger
    assert choose_epsilon(dataclasses.replace(p, epsilon=1.5), SIZES).epsilon == 1.5
    views = {"a": fresh_budget(40, 2.0), "b": fresh_budget(40, 3.0), "c": None}
    got = admit_run(p, ["a", "b", "c"], SIZES, Limits(), budgets=views)
    assert got.epsilon == min(2.0, eps0)
    # no target: ε₀ is the run's ε
    assert admit_run(_params(), ["a", "b", "c"], SIZES, Limits()).epsilon == 8.0
    with pytest.raises(ParameterError, match="meets the central target"):
        choose_epsilon(_params(central_epsilon=1e-4), SIZES)
    with pytest.raises(ParameterError, match="central_epsilon"):
        _params(central_epsilon=0.0)


def test_the_smallest_planned_group() -> None:
    p = _params().resolved()
    from fedhh.mechanisms.layout import layout_of
    from fedhh.mechanisms.levels import split_users

    planned = layout_of(p).planned
    assert smallest_group(p, 10_000) == min(split_users(10_000, planned, p.final_weight or 1.0))
    # wide items: the item-length level, 2% of the users, is the smallest
    wide = _params(m=256).resolved()
    assert smallest_group(wide, 10_000) == int(LENGTH_SHARE * 10_000) == 200
    # a completion reserve
    reserve = _params(completion=0.01).resolved()
    assert smallest_group(reserve, 10_000) == 100


def test_simulate_with_a_central_target_meets_it_at_every_group() -> None:
    ds = synthetic_zipf(40_000, 3, m=24, n_items=2000, s=1.2, split="dirichlet", seed=1)
    p = _params(central_epsilon=1.0)
    res = simulate(ds.parties, ds.codec, p)
    eps0 = res.params["epsilon"]
    assert eps0 < 8.0 and res.privacy["epsilon"] == eps0
    groups = res.privacy["central"]["groups"]
    sizes = [int(n) for n in res.cost["reports_per_party"].values()]
    floor = min(smallest_group(p, n) for n in sizes)
    assert min(g["users"] for g in groups) >= floor  # the plan kept to its floor here
    assert res.privacy["central"]["epsilon"] <= 1.0
    assert all(g["epsilon"] == eps0 for g in groups)


def test_a_party_cap_on_the_central_epsilon_refuses_before_any_work() -> None:
    ds = synthetic_zipf(30_000, 3, m=24, n_items=2000, s=1.2, split="dirichlet", seed=1)
    p = _params(epsilon=4.0)
    views = {f"party-{i}": fresh_budget(40, 10, max_central=0.05) for i in range(3)}
    with pytest.raises(ParameterError, match=r"ε_c = .* over its maximum of 0.05 per run"):
        simulate(ds.parties, ds.codec, p, budgets=views)
    # the party's own admission (its agent, its Flower ClientApp) refuses alike
    spec, _ = build_run(ds.parties, ds.codec, p)
    with pytest.raises(ParameterError, match="party-1's smallest group"):
        PartyAdmission(max_central=0.05).admit(spec, "party-1")
    PartyAdmission(max_central=2.0).admit(spec, "party-1")  # a cap it meets


def test_a_spec_whose_eps0_was_not_chosen_is_refused() -> None:
    """A driving side that built the spec from the analyst's ε instead of the admitted one
    would send the parties the wrong ε₀: the parties and the driver refuse it."""
    ds = synthetic_zipf(30_000, 3, m=24, n_items=2000, s=1.2, split="dirichlet", seed=1)
    spec, _ = build_run(ds.parties, ds.codec, _params(central_epsilon=0.5))
    wrong = RunSpec(
        spec.run_id,
        dataclasses.replace(spec.params, epsilon=8.0),
        spec.party_ids,
        spec.party_sizes,
        spec.codec,
    )
    with pytest.raises(ParameterError, match="does not meet its central target"):
        PartyAdmission().admit(wrong, "party-0")
