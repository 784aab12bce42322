"""Admission: the one check a run passes before any party works on it, on every transport.

A run is admitted by the side that drives it (:func:`admit_run`, called by
:class:`~fedhh.protocol.driver.RunDriver` and by the gRPC coordinator when a run is started) and
again by each party that answers it (:class:`PartyAdmission`, called by
:class:`~fedhh.protocol.host.PartyHost` at the run's first request), in this order:

1. **resource limits** of the parameters alone (:func:`~fedhh.protocol.limits.check_params`:
   k, the candidates one level may decode);
2. **feasibility**: every party has a user for each level it takes part in
   (:func:`~fedhh.protocol.messages.check_feasible`), and k is at most the federation's users;
3. **memory** of the run at each party this side bounds (``hosted``);
4. **privacy budget**: the run's ε against each party's maximum per run and against what its
   users have left (:class:`BudgetView`; the party's own ledger at the party, the ledger state it
   last reported at the coordinator), and the central ε_c of the run's smallest planned group
   against a party's cap on it (``max_central``; :func:`central_at_floor`).

A run with a central target (``central_epsilon``) first gets its ε₀ here
(:func:`choose_epsilon`): the largest ε₀, at most the run's ``epsilon`` and what the parties'
ledgers allow, whose ε_c at every party's smallest planned group (:func:`smallest_group`) meets
the target. The choice is written into the run's ``epsilon`` (admitting the chosen run again
keeps it), so every side that builds the run's spec from the admitted parameters sends the
parties the same ε₀.

Every side raises the same error with the same message for the same run, so a refused run reads
alike whatever transport carried it: :class:`~fedhh.errors.ParameterError` (INVALID_ARGUMENT on
gRPC) for an infeasible run or an ε over the per-run maximum, :class:`~fedhh.errors.ParameterLimit`
for a bound, :class:`~fedhh.errors.BudgetExceeded` for the budget (both RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedhh.core.accounting import compose, party_guarantees
from fedhh.core.privacy import DEFAULT_BUDGET, DEFAULT_MAX_EPSILON, shuffle_epsilon
from fedhh.errors import BudgetExceeded, LimitError, ParameterError
from fedhh.mechanisms.layout import layout_of
from fedhh.mechanisms.levels import LENGTH_SHARE, split_users
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import EstimateTask
from fedhh.protocol import limits
from fedhh.protocol.messages import Request, RunSpec, check_feasible

SLACK = 1e-9  # ε sums are floats: a run that lands exactly on the budget is admitted


@dataclass(frozen=True)
class BudgetView:
    """What a party's privacy ledger says: ``budget`` (the ε each user may spend across runs;
    0: the party keeps no ledger), ``max_epsilon`` (the most one run may ask), ``committed``
    (the most any user may have spent once every admitted run is settled) and the admitted runs
    not settled yet."""

    budget: float
    max_epsilon: float
    committed: float = 0.0
    admitted_runs: tuple[str, ...] = ()
    max_central: float = 0.0  # the most ε_c one run may reach at the party (0: no cap)

    @classmethod
    def of(cls, fields: Mapping[str, Any] | None) -> BudgetView | None:
        """From the fields of the wire's ``PrivacyBudget`` (None or no budget: no ledger)."""
        if not fields or not float(fields.get("budget") or 0.0):
            return None
        return cls(
            float(fields["budget"]),
            float(fields.get("max_epsilon") or 0.0),
            float(fields.get("committed") or 0.0),
            tuple(str(r) for r in fields.get("admitted_runs", ())),
            float(fields.get("max_central") or 0.0),
        )

    def fields(self) -> dict[str, Any]:
        """The fields of the wire's ``PrivacyBudget``."""
        return {
            "budget": self.budget,
            "max_epsilon": self.max_epsilon,
            "committed": self.committed,
            "admitted_runs": list(self.admitted_runs),
            "max_central": self.max_central,
        }

    def left(self, pending: float = 0.0) -> float:
        """The ε left for a new run, less ``pending`` (runs not admitted by the party yet)."""
        return max(0.0, self.budget - self.committed - pending)

    def check(self, party_id: str, epsilon: float, pending: float = 0.0) -> None:
        """Refuse a run of ``epsilon`` at this party (``pending``: the ε of the party's other
        runs that its ledger does not count yet)."""
        who = f"party {party_id}" if party_id else "this party"
        if epsilon > self.max_epsilon + SLACK:
            raise ParameterError(
                f"ε = {epsilon:g} is over {who}'s maximum of {self.max_epsilon:g} per run"
            )
        left = self.left(pending)
        if epsilon > left + SLACK:
            raise BudgetExceeded(
                f"a run with ε = {epsilon:g} would exceed {who}'s privacy budget "
                f"({left:g} of {self.budget:g} left)"
            )


MIN_EPSILON = 0.01  # the least ε₀ a central target may lead to
EPSILON_STEP = 0.001  # a chosen ε₀ is a multiple of this (rounded down)


def smallest_group(params: MechanismParams, users: int) -> int:
    """The smallest group of users a party of ``users`` reports in, as the run is planned
    (our rule, docs/privacy.md): the item-length level's ⌈2%·n⌉ when items are wider than 64
    bits (whether or not they turn out to be text), the completion reserve ⌊ρ·n⌋ when there is
    one, and the smallest share of the split of the rest over the planned levels. Levels a
    party re-plans later, and device groups that close short, can be smaller; the result's
    privacy block states the groups as they were."""
    p = params.resolved()
    lay = layout_of(p)
    n = int(users)
    reserve = math.floor(p.completion * n) if lay.reserve else 0
    length = math.ceil(LENGTH_SHARE * n) if p.m > 64 and lay.wide_rules else 0
    main = max(0, n - reserve - length)
    shares = split_users(main, max(1, lay.planned), float(p.final_weight or 1.0))
    return max(1, min([*shares, *(g for g in (reserve, length) if g > 0)]))


def central_at_floor(params: MechanismParams, users: int, epsilon: float | None = None) -> float:
    """ε_c (FMT's bound, which holds for every oracle) at the party's smallest planned group."""
    p = params.resolved()
    eps = p.epsilon if epsilon is None else epsilon
    return shuffle_epsilon(smallest_group(p, users), float(eps), float(p.central_delta))


def check_central(params: MechanismParams, party_id: str, users: int, cap: float) -> None:
    """Refuse a run whose ε_c at the party's smallest planned group is over ``cap`` (0: none)."""
    if cap <= 0:
        return
    eps_c = central_at_floor(params, users)
    if eps_c > cap + SLACK:
        who = f"party {party_id}" if party_id else "this party"
        raise ParameterError(
            f"ε = {params.epsilon:g} gives ε_c = {eps_c:.3g} (δ = {params.central_delta:g}) "
            f"at {who}'s smallest group of {smallest_group(params, users):,} users, over its "
            f"maximum of {cap:g} per run"
        )


def largest_epsilon(floor: int, target: float, delta: float, most: float) -> float | None:
    """The largest ε₀ ≤ ``most``, a multiple of 0.001 and at least 0.01, whose ε_c (FMT's
    bound, which holds for every oracle) at a group of ``floor`` users is at most ``target``
    at ``delta``; None if even ε₀ = 0.01 misses it (ε_c grows with ε₀: a bisection)."""

    def meets(eps0: float) -> bool:
        return shuffle_epsilon(floor, eps0, delta) <= target + SLACK

    hi = math.floor(most / EPSILON_STEP + SLACK) * EPSILON_STEP
    if hi >= MIN_EPSILON and meets(hi):
        return round(hi, 3)
    if hi < MIN_EPSILON or not meets(MIN_EPSILON):
        return None
    lo_k, hi_k = round(MIN_EPSILON / EPSILON_STEP), round(hi / EPSILON_STEP)  # lo meets, hi not
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if meets(mid * EPSILON_STEP):
            lo_k = mid
        else:
            hi_k = mid
    return round(lo_k * EPSILON_STEP, 3)


def choose_epsilon(
    params: MechanismParams,
    sizes: Sequence[int],
    allowed: float = math.inf,
) -> MechanismParams:
    """The run with the largest ε₀ ≤ min(``epsilon``, ``allowed``), a multiple of 0.001, whose
    ε_c at every party's smallest planned group is at most the central target (unchanged
    without a target); ParameterError if even ε₀ = 0.01 misses it."""
    target = params.central_epsilon
    if target is None or not sizes:
        return params
    floor = min(smallest_group(params, n) for n in sizes)
    delta = float(params.resolved().central_delta)
    most = min(params.epsilon, allowed)
    eps0 = largest_epsilon(floor, target, delta, most)
    if eps0 is None:
        raise ParameterError(
            f"no ε₀ from {MIN_EPSILON:g} to {max(most, MIN_EPSILON):g} meets the central "
            f"target ε_c ≤ {target:g} (δ = {delta:g}) at the smallest group of {floor:,} users"
        )
    return dataclasses.replace(params, epsilon=eps0)


def budgets_after(
    views: Mapping[str, BudgetView | None],
    epsilon: float,
    reports: Mapping[str, int],
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per party, its users' budget once a run of ``epsilon`` is settled (the parties with
    ``reports`` spent it): the result document's ``privacy.budgets``, as ``query privacy``
    shows it to an admin (what every user of the party has left at least), and with the run's
    ``privacy`` block what the run cost them towards the coordinator (``central_spent``: this
    run's ε_c at the party, the only run this side has carried)."""
    central = party_guarantees(privacy or {})
    out: dict[str, dict[str, Any]] = {}
    for pid, v in views.items():
        if v is None:
            out[pid] = {"keeps_ledger": False}
            continue
        spent = float(epsilon) if reports.get(pid, 0) > 0 else 0.0
        out[pid] = {
            "epsilon_budget": v.budget,
            "max_epsilon": v.max_epsilon,
            "epsilon_remaining": max(0.0, v.left() - spent),
            "max_central_epsilon": v.max_central,
            "keeps_ledger": True,
        }
        if privacy is not None:
            runs = [central[pid]] if pid in central else []
            out[pid]["central_spent"] = compose(runs).fields()
    return out


def fresh_budget(
    budget: float = DEFAULT_BUDGET,
    max_epsilon: float = DEFAULT_MAX_EPSILON,
    max_central: float = 0.0,
) -> BudgetView:
    """The ledger of a party whose users have spent nothing yet (checked like an agent's)."""
    if not (math.isfinite(budget) and budget > 0):
        raise ParameterError(f"--epsilon-budget must be a number > 0, got {budget}")
    if not (math.isfinite(max_epsilon) and 0 < max_epsilon <= budget):
        raise ParameterError(
            f"--max-epsilon must be in (0, --epsilon-budget = {budget:g}], got {max_epsilon}"
        )
    if not (math.isfinite(max_central) and max_central >= 0):
        raise ParameterError(f"--max-central-epsilon must be a number ≥ 0, got {max_central}")
    return BudgetView(float(budget), float(max_epsilon), max_central=float(max_central))


def admit_run(
    params: MechanismParams,
    party_ids: Sequence[str],
    sizes: Sequence[int | None],
    bounds: limits.Limits,
    *,
    budgets: Mapping[str, BudgetView | None] | None = None,
    pending: Mapping[str, float] | None = None,
    hosted: Collection[str] | None = None,
) -> MechanismParams:
    """Admit a run or raise (see the module docstring); returns its resolved parameters.

    ``sizes``: each party's users, None for a party not known yet (then what needs it waits for
    a later call); ``budgets``: the ledgers of the parties that keep one; ``pending``: per party
    the ε of its other runs its ledger does not count yet; ``hosted``: the parties whose memory
    this side bounds (None: all of them)."""
    if len(party_ids) != len(sizes):
        raise ParameterError(f"{len(party_ids)} parties but {len(sizes)} user counts")
    p = params.resolved()
    limits.check_params(p, bounds)
    known = [(pid, int(n)) for pid, n in zip(party_ids, sizes, strict=True) if n is not None]
    if len(known) == len(party_ids):
        check_feasible(p, [pid for pid, _ in known], [n for _, n in known])
        limits.check_k(p, sum(n for _, n in known))
        pend = pending or {}
        caps = [
            min(v.max_epsilon, v.left(pend.get(pid, 0.0)))
            for pid, v in (budgets or {}).items()
            if v is not None
        ]
        p = choose_epsilon(p, [n for _, n in known], min(caps, default=math.inf))
    for pid, n in known:
        if hosted is None or pid in hosted:
            limits.check_memory(p, pid, n, bounds)
    size_of = dict(known)
    for pid in party_ids:
        view = (budgets or {}).get(pid)
        if view is not None:
            view.check(pid, p.epsilon, (pending or {}).get(pid, 0.0))
            if pid in size_of:
                check_central(p, pid, size_of[pid], view.max_central)
    return p


class Ledger(Protocol):
    """A party's privacy ledger (the agent's is :class:`fedhh.clients.budget.PrivacyLedger`)."""

    def admit(self, run_id: str, epsilon: float, party_id: str) -> None:
        """Record the run (again: nothing) or raise as :meth:`BudgetView.check`."""
        ...


@dataclass
class PartyAdmission:
    """A party's side of admission: its own limits and (when it keeps one) its ledger."""

    bounds: limits.Limits = field(default_factory=limits.Limits)
    ledger: Ledger | None = None
    max_central: float = 0.0  # the most ε_c a run may reach at this party (0: no cap)

    def admit(self, spec: RunSpec, party_id: str) -> None:
        """Admit ``spec`` at ``party_id`` (its ledger records the run) or raise."""
        sizes = list(spec.party_sizes)
        p = admit_run(spec.params, spec.party_ids, sizes, self.bounds, hosted=[party_id])
        if p.epsilon != spec.params.epsilon:  # the driving side did not choose ε₀ (a bug)
            raise ParameterError(
                f"the run's ε = {spec.params.epsilon:g} does not meet its central target "
                f"(ε₀ ≤ {p.epsilon:g} would)"
            )
        if party_id in spec.party_ids:
            n = spec.party_sizes[spec.party_ids.index(party_id)]
            check_central(p, party_id, n, self.max_central)
        if self.ledger is not None:
            self.ledger.admit(spec.run_id, p.epsilon, party_id)

    def check_request(self, request: Request) -> None:
        """Refuse a request over this party's limits before any work."""
        if isinstance(request.task, EstimateTask):
            limits.check_candidates(int(request.task.candidates.shape[0]), self.bounds)


def refusal_code(exc: Exception) -> str:
    """The error code of a party's reply refusing a run: budget, a bound, or anything else."""
    if isinstance(exc, BudgetExceeded):
        return "budget-exceeded"
    if isinstance(exc, LimitError):
        return "resource-exhausted"
    return "refused"
