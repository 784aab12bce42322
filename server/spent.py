"""Each user's budget at each party, as the coordinator can state it (``privacy.budgets`` of
``fedhh query privacy``, admins only; docs/privacy.md).

* **Local** (towards the party): the ledger the party's agent last reported, the ε each user
  may spend across runs, the most one run may ask, what every user has left at least and the
  party's cap on a run's ε_c.
* **Central** (towards this coordinator, and the analysts and parties it passes results to):
  every run in the coordinator's state file in which it received something computed from the
  party's users, composed (:func:`fedhh.core.accounting.compose`). A finished run counts with
  its ε_c at the party (its worst group there) and the run's δ; a run not finished (running,
  failed, cancelled) in which the party's reply was accepted counts with its ε₀ and δ = 0, the
  local guarantee, which holds towards everyone (its groups are never summed up), and so does a
  finished run stored before results stated their central guarantee. Runs this
  coordinator did not carry are not in its file: the party's own ledger is the account of
  those.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedhh.core.accounting import compose, party_guarantees
from fedhh.mechanisms.tasks import ErrorResult
from fedhh.protocol import encoding
from fedhh.server.state import CoordinatorState
from fedhh.server.store import RunRow, Store
from fedhh.wire.security import Identity

BUDGET_FIELDS = ("epsilon_budget", "max_epsilon", "epsilon_remaining", "max_central_epsilon")


def _epsilon0(row: RunRow) -> float:
    """The ε₀ the parties perturbed at (the launched spec's: a central target's choice)."""
    if row.spec:
        return float(encoding.decode_spec(row.spec).params.epsilon)
    return float(row.params.get("epsilon", 0.0))


def central_runs(
    store: Store, party_ids: Iterable[str]
) -> dict[str, list[tuple[str, float, float]]]:
    """Per party, (run id, ε, δ) of every run of the state file that cost its users something
    towards the coordinator (see the module docstring), oldest first."""
    out: dict[str, list[tuple[str, float, float]]] = {p: [] for p in party_ids}
    for row in sorted(store.runs(), key=lambda r: (r.created, r.run_id)):
        mine = [p for p in row.party_ids if p in out]
        if not mine:
            continue
        if row.state == "done" and row.result is not None:
            privacy = row.result.get("privacy") or {}
            if "central" in privacy:
                for pid, (eps, delta) in party_guarantees(privacy).items():
                    if pid in out:
                        out[pid].append((row.run_id, eps, delta))
            else:  # a result stored before runs stated their central guarantee: ε₀
                reports = row.result.get("cost", {}).get("reports_per_party", {})
                for pid in mine:
                    if reports.get(pid, 0) > 0:
                        out[pid].append((row.run_id, float(privacy.get("epsilon", 0.0)), 0.0))
            continue
        answered = set()
        for payload in store.replies(row.run_id).values():
            reply = encoding.decode_reply(payload)
            if not isinstance(reply.result, ErrorResult):
                answered.add(reply.party_id)
        for pid in mine:
            if pid in answered:
                out[pid].append((row.run_id, _epsilon0(row), 0.0))
    return out


def party_budgets(state: CoordinatorState, ident: Identity, row: RunRow) -> dict[str, Any]:
    """Per party of the run, each user's budget (see the module docstring), with the time of
    the agent's last report (``as_of``). Admins only, like ``query parties``; an analyst gets
    ``hidden``."""
    admin = ident.role == "admin"
    runs = central_runs(state.store, row.party_ids) if admin else {}
    out: dict[str, Any] = {}
    for p in state.party_status(list(row.party_ids)):
        pid = p["party_id"]
        if not p.get("registered"):
            out[pid] = {"registered": False}
        elif not admin:
            out[pid] = {"hidden": True}
        else:
            out[pid] = {
                **{k: p[k] for k in BUDGET_FIELDS},
                "keeps_ledger": p["epsilon_budget"] > 0,
                "as_of": p["last_seen"],
                "central_spent": compose((e, d) for _, e, d in runs[pid]).fields(),
            }
    return out
