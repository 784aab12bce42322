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
   last reported at the coordinator).

Every side raises the same error with the same message for the same run, so a refused run reads
alike whatever transport carried it: :class:`~fedhh.errors.ParameterError` (INVALID_ARGUMENT on
gRPC) for an infeasible run or an ε over the per-run maximum, :class:`~fedhh.errors.ParameterLimit`
for a bound, :class:`~fedhh.errors.BudgetExceeded` for the budget (both RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedhh.errors import BudgetExceeded, LimitError, ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import EstimateTask
from fedhh.protocol import limits
from fedhh.protocol.messages import Request, RunSpec, check_feasible

SLACK = 1e-9  # ε sums are floats: a run that lands exactly on the budget is admitted
DEFAULT_BUDGET = 40.0  # ε each user of a party may spend across runs, unless its operator says
DEFAULT_MAX_EPSILON = 10.0  # ε one run may ask of a party's users, likewise


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
        )

    def fields(self) -> dict[str, Any]:
        """The fields of the wire's ``PrivacyBudget``."""
        return {
            "budget": self.budget,
            "max_epsilon": self.max_epsilon,
            "committed": self.committed,
            "admitted_runs": list(self.admitted_runs),
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


def fresh_budget(
    budget: float = DEFAULT_BUDGET, max_epsilon: float = DEFAULT_MAX_EPSILON
) -> BudgetView:
    """The ledger of a party whose users have spent nothing yet (checked like an agent's)."""
    if not (math.isfinite(budget) and budget > 0):
        raise ParameterError(f"--epsilon-budget must be a number > 0, got {budget}")
    if not (math.isfinite(max_epsilon) and 0 < max_epsilon <= budget):
        raise ParameterError(
            f"--max-epsilon must be in (0, --epsilon-budget = {budget:g}], got {max_epsilon}"
        )
    return BudgetView(float(budget), float(max_epsilon))


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
    for pid, n in known:
        if hosted is None or pid in hosted:
            limits.check_memory(p, pid, n, bounds)
    for pid in party_ids:
        view = (budgets or {}).get(pid)
        if view is not None:
            view.check(pid, p.epsilon, (pending or {}).get(pid, 0.0))
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

    def admit(self, spec: RunSpec, party_id: str) -> None:
        """Admit ``spec`` at ``party_id`` (its ledger records the run) or raise."""
        sizes = list(spec.party_sizes)
        p = admit_run(spec.params, spec.party_ids, sizes, self.bounds, hosted=[party_id])
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
