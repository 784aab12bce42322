"""The party agent's privacy ledger: the ε each of its users has spent across runs.

* A run is *admitted* when its first request arrives: refused (before any report is made) if it
  asks more than ``max_epsilon`` or if any user could go over ``budget``, i.e. if the most any
  user has spent, plus the ε of every admitted run not settled yet, plus this run's ε exceeds it.
  The ledger also holds the party's cap on a run's central ε_c (``max_central``), which the
  party's admission checks (:class:`~fedhh.protocol.admission.PartyAdmission`) and which the
  ledger's state tells the coordinator, so it refuses an over-cap run when it is started.
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
from fedhh.core.privacy import DEFAULT_BUDGET, DEFAULT_MAX_EPSILON
from fedhh.protocol.admission import BudgetView, fresh_budget


class PrivacyLedger:
    """Per-user ε of one party's users (indices 0..n_users-1)."""

    def __init__(
        self,
        store: AgentStore,
        n_users: int,
        budget: float = DEFAULT_BUDGET,
        max_epsilon: float = DEFAULT_MAX_EPSILON,
        max_central: float = 0.0,
    ) -> None:
        fresh_budget(budget, max_epsilon, max_central)  # the same checks as every other party's
        self.store = store
        self.budget = float(budget)
        self.max_epsilon = float(max_epsilon)
        self.max_central = float(max_central)  # the most ε_c one run may reach (0: no cap)
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

    def admit(self, run_id: str, epsilon: float, party_id: str = "") -> None:
        """Admit a run (again: no-op) or raise as :meth:`BudgetView.check`."""
        with self.lock:
            if run_id in self.runs:
                return
            self._view().check(party_id, epsilon)
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

    def view(self) -> BudgetView:
        with self.lock:
            return self._view()

    def _view(self) -> BudgetView:
        return BudgetView(
            self.budget,
            self.max_epsilon,
            self._committed(),
            tuple(sorted(self._open())),
            self.max_central,
        )

    def state(self) -> dict[str, Any]:
        """The fields of the wire's ``PrivacyBudget``."""
        return self.view().fields()
