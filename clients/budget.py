"""The party agent's privacy ledger: the ε each of its users has spent across runs.

* A run is *admitted* when its first request arrives: refused (before any report is made) if it
  asks more than ``max_epsilon`` or if any user could go over ``budget``, i.e. if the most any
  user has spent, plus the ε of every admitted run not settled yet, plus this run's ε exceeds it.
* A run is *settled* when the coordinator says it is over for this party: its ε is added to the
  users who reported in it (every user of a data party, which answers with all of them; the
  users whose report the agent stored, for a device party) and it no longer counts as open.

Both steps are stored before anything depends on them, so a restarted agent keeps its ledger.
The coordinator learns the ledger's state from the agent's register and heartbeat calls and
refuses a run that would exceed it when it is started (the analyst sees the remaining budget).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fedhh.clients.store import AgentStore
from fedhh.errors import BudgetExceeded, ParameterError

DEFAULT_BUDGET = 40.0
DEFAULT_MAX_EPSILON = 10.0
_SLACK = 1e-9


class PrivacyLedger:
    """Per-user ε of one party's users (indices 0..n_users-1)."""

    def __init__(
        self,
        store: AgentStore,
        n_users: int,
        budget: float = DEFAULT_BUDGET,
        max_epsilon: float = DEFAULT_MAX_EPSILON,
    ) -> None:
        if not (np.isfinite(budget) and budget > 0):
            raise ParameterError(f"--epsilon-budget must be a number > 0, got {budget}")
        if not (np.isfinite(max_epsilon) and 0 < max_epsilon <= budget):
            raise ParameterError(
                f"--max-epsilon must be in (0, --epsilon-budget = {budget:g}], got {max_epsilon}"
            )
        self.store = store
        self.budget = float(budget)
        self.max_epsilon = float(max_epsilon)
        self.lock = threading.Lock()
        blob = store.meta("spent")
        stored = np.frombuffer(blob, dtype="<f8").astype(np.float64) if blob else np.zeros(0)
        self.spent = np.zeros(max(n_users, stored.size), dtype=np.float64)
        self.spent[: stored.size] = stored  # a user's ε stays even if the party shrank
        self.n_users = n_users
        self.runs = store.budget_runs()

    def _open(self) -> dict[str, float]:
        return {r: eps for r, (eps, settled) in self.runs.items() if not settled}

    def committed(self) -> float:
        """The most ε any user may have spent once every admitted run is settled."""
        with self.lock:
            return self._committed()

    def _committed(self) -> float:
        top = float(self.spent.max()) if self.spent.size else 0.0
        return top + sum(self._open().values())

    def remaining(self) -> float:
        return max(0.0, self.budget - self.committed())

    def admit(self, run_id: str, epsilon: float) -> None:
        """Admit a run (again: no-op) or raise :class:`BudgetExceeded`."""
        with self.lock:
            if run_id in self.runs:
                return
            if epsilon > self.max_epsilon + _SLACK:
                raise BudgetExceeded(
                    f"run {run_id} asks ε = {epsilon:g}, over this party's maximum of "
                    f"{self.max_epsilon:g} per run"
                )
            committed = self._committed()
            if committed + epsilon > self.budget + _SLACK:
                raise BudgetExceeded(
                    f"run {run_id} (ε = {epsilon:g}) could take this party's users to "
                    f"ε = {committed + epsilon:g}, over its privacy budget of {self.budget:g} "
                    f"({max(0.0, self.budget - committed):g} left)"
                )
            self.store.admit_run(run_id, float(epsilon))
            self.runs[run_id] = (float(epsilon), False)

    def settle(self, run_id: str, users: np.ndarray | None) -> None:
        """Charge the run's ε to ``users`` (indices; None: every user) and close it."""
        with self.lock:
            entry = self.runs.get(run_id)
            if entry is None or entry[1]:
                return
            spent = self.spent.copy()
            if users is None:
                spent[: self.n_users] += entry[0]
            else:
                spent[np.asarray(users, dtype=np.int64)] += entry[0]
            self.store.settle_run(run_id, spent)
            self.spent = spent
            self.runs[run_id] = (entry[0], True)

    def open_runs(self) -> list[str]:
        with self.lock:
            return sorted(self._open())

    def state(self) -> dict[str, Any]:
        """The fields of the wire's ``PrivacyBudget``."""
        with self.lock:
            return {
                "budget": self.budget,
                "max_epsilon": self.max_epsilon,
                "committed": self._committed(),
                "admitted_runs": sorted(self._open()),
            }
