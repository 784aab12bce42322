"""The coordinator as a pure state machine: ``start() -> requests``, ``step(reply) -> requests``.

It drives the mechanism's plan (:mod:`fedhh.mechanisms.plans`) one round at a time, wraps tasks
in numbered requests, checks every reply (run, request, party, result type, sizes and limits)
and, when the plan finishes, assembles the :class:`RunResult` with the cost and privacy
bookkeeping. A round's results reach the plan sorted by party, whatever order they came in.
Transports do not drive it directly: :class:`fedhh.protocol.driver.RunDriver` does (it buffers
a round's replies, applies deadlines and failures, counts bytes and replays stored runs).

A party that answers with an error, or that a transport declares gone (:meth:`fail_party`), is
handled by policy: ``"continue"`` goes on with the parties that answered (recorded in the
result), ``"fail"`` ends the run with the reason. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from fedhh.errors import ProtocolError
from fedhh.mechanisms.plans import PlanOutcome, Replies, Round, run_plan
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
)
from fedhh.protocol.messages import PROTOCOL_VERSION, Reply, Request, RunResult, RunSpec

POLICIES = ("continue", "fail")
MAX_REPLY_ITEMS = 1 << 20  # items of one search reply
MAX_REPLY_LEVELS = 64  # level costs of one search reply
MAX_ERROR_TEXT = 4000


@dataclass
class _Pending:
    party: int
    task: object


@dataclass
class Progress:
    """Where a run stands (for progress displays)."""

    round: int = 0
    phase: str = "starting"
    outstanding: int = 0
    done: bool = False


@dataclass
class _Costs:
    levels: list[dict] = field(default_factory=list)


class Coordinator:
    """Coordinator of one run."""

    def __init__(self, spec: RunSpec, policy: str = "continue") -> None:
        if policy not in POLICIES:
            raise ProtocolError(f"unknown failure policy {policy!r}; choose continue or fail")
        self.spec = spec
        self.params = spec.params.resolved()
        self.policy = policy
        self._plan: Generator[Round, Replies, PlanOutcome] = run_plan(
            self.params, list(spec.party_sizes)
        )
        self._pending: dict[int, _Pending] = {}
        self._replies: Replies = {}
        self._next_id = 0
        self._costs = _Costs()
        self.round = 0
        self.failed: dict[str, str] = {}
        self.result: RunResult | None = None
        self.error: str | None = None
        self.progress = Progress()
        self._started = False
        self._requests: dict[int, Request] = {}

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    # --- driving the plan ------------------------------------------------------------------
    def start(self) -> list[Request]:
        """The first round's requests."""
        if self._started:
            raise ProtocolError("the run has already started")
        self._started = True
        return self._advance(None)

    def step(self, reply: Reply) -> list[Request]:
        """Take one reply; return the next round's requests once the current round is complete."""
        pending = self.check(reply)
        del self._pending[reply.request_id]
        result = reply.result
        if isinstance(result, ErrorResult):
            self._party_failed(pending.party, f"{result.code}: {result.message}")
        else:
            self._record_cost(pending.party, result)
            self._replies[pending.party] = result
        return self._maybe_next()

    def fail_party(self, party_id: str, reason: str) -> list[Request]:
        """A transport reports that a party missed its deadline or is gone."""
        idx = self.spec.party_index(party_id)
        for rid, p in list(self._pending.items()):
            if p.party == idx:
                del self._pending[rid]
        self._party_failed(idx, reason)
        return self._maybe_next()

    def outstanding(self) -> list[Request]:
        """Requests of the current round still waiting for a reply (e.g. to resend)."""
        return [self._requests[rid] for rid in self._pending]

    # --- internals -------------------------------------------------------------------------
    def check(self, reply: Reply) -> _Pending:
        """Refuse (:class:`ProtocolError`) a reply that does not fit a pending request."""
        if self.done:
            raise ProtocolError("the run is already finished")
        if reply.version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {reply.version} is not {PROTOCOL_VERSION}")
        if reply.run_id != self.spec.run_id:
            raise ProtocolError(f"reply for run {reply.run_id!r}, not {self.spec.run_id!r}")
        pending = self._pending.get(reply.request_id)
        if pending is None:
            if reply.request_id < self._next_id:
                raise ProtocolError(f"request {reply.request_id} was already answered")
            raise ProtocolError(f"request {reply.request_id} was never sent")
        if self.spec.party_ids[pending.party] != reply.party_id:
            raise ProtocolError(
                f"request {reply.request_id} went to {self.spec.party_ids[pending.party]!r}, "
                f"reply comes from {reply.party_id!r}"
            )
        result, task = reply.result, pending.task
        if isinstance(result, ErrorResult):
            if len(result.code) > 200 or len(result.message) > MAX_ERROR_TEXT:
                raise ProtocolError("error code or message too long")
            return pending
        if isinstance(task, EstimateTask):
            if not isinstance(result, EstimateResult):
                raise ProtocolError("an estimate request needs an estimate reply")
            n = task.candidates.size
            if result.estimates.shape != (n,) or result.stderrs.shape != (n,):
                raise ProtocolError(f"estimate reply must have {n} estimates and stderrs")
        else:
            if not isinstance(result, SearchResult):
                raise ProtocolError("a search request needs a search reply")
            n = result.items.size
            if n > MAX_REPLY_ITEMS or len(result.levels) > MAX_REPLY_LEVELS:
                raise ProtocolError(
                    f"search reply: more than {MAX_REPLY_ITEMS} items or {MAX_REPLY_LEVELS} levels"
                )
            if result.estimates.shape != (n,) or result.stderrs.shape != (n,):
                raise ProtocolError("search reply: items, estimates and stderrs differ in length")
            if n and self.params.m < 64 and int(result.items.max()) >> self.params.m:
                raise ProtocolError(f"search reply holds items wider than m = {self.params.m}")
        for arr in (result.estimates, result.stderrs):
            if not np.all(np.isfinite(arr)):
                raise ProtocolError("reply holds non-finite estimates or standard errors")
        if np.any(result.stderrs < 0):
            raise ProtocolError("reply holds negative standard errors")
        return pending

    def _party_failed(self, idx: int, reason: str) -> None:
        pid = self.spec.party_ids[idx]
        self.failed[pid] = reason
        if self.policy == "fail":
            self.error = f"party {pid} failed: {reason}"
            self._pending.clear()

    def _maybe_next(self) -> list[Request]:
        if self.done or self._pending:
            self.progress.outstanding = len(self._pending)
            return []
        replies, self._replies = dict(sorted(self._replies.items())), {}
        if not replies and len(self.failed) == len(self.spec.party_ids):
            self.error = (
                f"round {self.round}: no party answered ({'; '.join(self.failed.values())})"
            )
            return []
        # A round whose addressed parties all failed (a TAPS turn) goes on without them.
        return self._advance(replies)

    def _advance(self, replies: Replies | None) -> list[Request]:
        try:
            rnd = self._plan.send(replies) if replies is not None else next(self._plan)
        except StopIteration as stop:
            self._finish(stop.value)
            return []
        self.round += 1
        requests = []
        self._requests = {}
        for idx, task in rnd.items():
            pid = self.spec.party_ids[idx]
            if pid in self.failed:
                continue
            req = Request(self.spec.run_id, self._next_id, self.round, pid, task)
            self._pending[self._next_id] = _Pending(idx, task)
            self._requests[self._next_id] = req
            self._next_id += 1
            requests.append(req)
        first = next(iter(rnd.values()))
        self.progress = Progress(self.round, _phase_of(first), len(requests), False)
        if not requests:  # every addressed party has failed before: the round is empty
            return self._maybe_next()
        return requests

    def _record_cost(self, idx: int, result: EstimateResult | SearchResult) -> None:
        pid = self.spec.party_ids[idx]
        costs: tuple[LevelCost, ...] = (
            (result.cost,) if isinstance(result, EstimateResult) else result.levels
        )
        phase = "shared" if isinstance(result, EstimateResult) else "local"
        for c in costs:
            self._costs.levels.append(
                {"party": pid, "round": self.round, "phase": phase, **c.__dict__}
            )

    def _finish(self, outcome: PlanOutcome) -> None:
        ans = outcome.answer
        levels = self._costs.levels
        reports = {pid: 0 for pid in self.spec.party_ids}
        for lv in levels:
            reports[lv["party"]] += lv["reports"]
        oracles = sorted({lv["oracle"] for lv in levels})
        p = self.params
        self.result = RunResult(
            run_id=self.spec.run_id,
            mechanism=p.mechanism,
            items=ans.items,
            estimates=ans.estimates,
            stderrs=ans.stderrs,
            contributors=ans.contributors,
            params=p.to_dict(),
            cost={
                "rounds": self.round,
                "bytes_to_parties": 0,  # counted by the driver (what the transport sends)
                "bytes_to_coordinator": 0,
                "reports_per_party": reports,
                "user_report_bytes": int(sum(lv["report_bytes"] for lv in levels)),
                "hash_evaluations": int(sum(lv["hash_evaluations"] for lv in levels)),
                "levels": levels,
            },
            privacy={
                "epsilon": p.epsilon,
                "reports_per_user": 1,
                "users_reported": int(sum(reports.values())),
                "oracles": oracles,
                "statement": (
                    f"Each user sent at most one report, made by an ε-LDP frequency oracle with "
                    f"ε = {p.epsilon:g}; everything else is post-processing, so the run is "
                    f"{p.epsilon:g}-LDP for every user."
                ),
            },
            notes=list(outcome.notes),
            failed_parties=sorted(self.failed),
        )
        self.progress = Progress(self.round, "done", 0, True)


def _phase_of(task: object) -> str:
    if isinstance(task, EstimateTask):
        return "completion" if task.group == "reserve" else "shared levels"
    return "local search"
