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

What a party reports is checked against what the coordinator knows: a malformed reply (wrong
shapes, non-finite numbers) raises :class:`ProtocolError` and changes nothing; a well-formed
reply whose figures cannot be true for its party (more reports than its users, estimates or
standard errors beyond what the level's oracle can produce from them, cost fields out of range)
raises :class:`~fedhh.errors.ImplausibleReply`, and the transport fails the party under the
policy (:func:`check_figures`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from fedhh.core import codes as cd
from fedhh.core.privacy import events_of, privacy_block
from fedhh.errors import ImplausibleReply, ProtocolError, ProtocolLimit
from fedhh.mechanisms.layout import Rounds, layout_of
from fedhh.mechanisms.params import MAX_LEVEL_CANDIDATES, MechanismParams
from fedhh.mechanisms.plans import PlanOutcome, Replies, Round, run_plan
from fedhh.mechanisms.strategies import level_oracles
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
)
from fedhh.oracles import ORACLES, FrequencyOracle, variation_profiles
from fedhh.protocol.messages import PROTOCOL_VERSION, Reply, Request, RunResult, RunSpec

POLICIES = ("continue", "fail")
MAX_REPLY_ITEMS = MAX_LEVEL_CANDIDATES  # items of one search reply: at most a level's candidates
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
    rounds: Rounds | None = None  # the rounds the run takes: bounded until its shared levels end


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
            self.params, list(spec.party_sizes), spec.ended_rule
        )
        self._pending: dict[int, _Pending] = {}
        self._replies: Replies = {}
        self._next_id = 0
        self._costs = _Costs()
        self.round = 0
        self.failed: dict[str, str] = {}
        self.result: RunResult | None = None
        self.error: str | None = None
        self._layout = layout_of(self.params)
        self._rounds = self._layout.rounds(len(spec.party_ids), spec.ended_rule)
        self.progress = Progress(rounds=self._rounds)
        self._started = False
        self._requests: dict[int, Request] = {}
        self._reports = [0] * len(spec.party_ids)  # reports each party has declared so far

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

    def step(self, reply: Reply, checked: bool = False) -> list[Request]:
        """Take one reply; return the next round's requests once the current round is complete.
        ``checked``: :meth:`check` passed on it already (the driver checks each reply when it
        arrives), so it is not checked again."""
        known = self._pending.get(reply.request_id) if checked else None
        pending = known if known is not None else self.check(reply)
        del self._pending[reply.request_id]
        result = reply.result
        if isinstance(result, ErrorResult):
            self._party_failed(pending.party, f"{result.code}: {result.message}")
        else:
            self._record_cost(pending.party, result, pending.task)
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
            n = cd.count(task.candidates)
            if result.estimates.shape != (n,) or result.stderrs.shape != (n,):
                raise ProtocolError(f"estimate reply must have {n} estimates and stderrs")
        else:
            if not isinstance(result, SearchResult):
                raise ProtocolError("a search request needs a search reply")
            n = cd.count(result.items)
            if n > MAX_REPLY_ITEMS or len(result.levels) > MAX_REPLY_LEVELS:
                raise ProtocolLimit(
                    f"search reply: more than {MAX_REPLY_ITEMS} items or {MAX_REPLY_LEVELS} levels"
                )
            if result.estimates.shape != (n,) or result.stderrs.shape != (n,):
                raise ProtocolError("search reply: items, estimates and stderrs differ in length")
            if n and result.item_bits != self.params.m:
                raise ProtocolError(
                    f"search reply holds items of {result.item_bits} bits, not m = {self.params.m}"
                )
        for arr in (result.estimates, result.stderrs):
            if not np.all(np.isfinite(arr)):
                raise ProtocolError("reply holds non-finite estimates or standard errors")
        if np.any(result.stderrs < 0):
            raise ProtocolError("reply holds negative standard errors")
        n_users = self.spec.party_sizes[pending.party]
        declared = check_figures(result, task, n_users, self.params)
        if self._reports[pending.party] + declared > n_users:
            raise ImplausibleReply(
                f"party {reply.party_id} declares {self._reports[pending.party] + declared:,} "
                f"reports in this run but has {n_users:,} users"
            )
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
        phase = _phase_of(first)
        if phase != "shared levels" and not self._rounds.exact:  # the shared levels are over
            total = self.round - 1 + self._layout.local_rounds(len(self.spec.party_ids))
            self._rounds = Rounds(total, total)
        self.progress = Progress(self.round, phase, len(requests), False, self._rounds)
        if not requests:  # every addressed party has failed before: the round is empty
            return self._maybe_next()
        return requests

    def _record_cost(self, idx: int, result: EstimateResult | SearchResult, task: object) -> None:
        pid = self.spec.party_ids[idx]
        costs = costs_of(result)
        self._reports[idx] += sum(c.reports for c in costs)
        if isinstance(task, EstimateTask) and task.group == "reserve":
            phase = "completion"
        else:
            phase = "shared" if isinstance(result, EstimateResult) else "local"
        for c in costs:
            self._costs.levels.append(
                {
                    "party": pid,
                    "round": self.round,
                    "phase": "length" if c.length == 0 else phase,
                    **c.__dict__,
                }
            )

    def _finish(self, outcome: PlanOutcome) -> None:
        ans = outcome.answer
        levels = self._costs.levels
        reports = {pid: 0 for pid in self.spec.party_ids}
        for lv in levels:
            reports[lv["party"]] += lv["reports"]
        p = self.params
        self.result = RunResult(
            run_id=self.spec.run_id,
            mechanism=p.mechanism,
            items=ans.items,
            estimates=ans.estimates,
            stderrs=ans.stderrs,
            contributors=np.asarray(ans.contributors, dtype=np.int64),
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
            privacy=privacy_block(
                events_of(levels, p.epsilon, variation_profiles(p.epsilon)),
                p.epsilon,
                p.central_delta,
            ),
            notes=list(outcome.notes),
            failed_parties=sorted(self.failed),
        )
        self.progress = Progress(self.round, "done", 0, True, Rounds(self.round, self.round))


def costs_of(result: EstimateResult | SearchResult) -> tuple[LevelCost, ...]:
    """The levels a reply declares (an estimate's own and those its party ran before it)."""
    if isinstance(result, EstimateResult):
        return (*result.pre_levels, result.cost)
    return result.levels


def check_figures(
    result: EstimateResult | SearchResult, task: object, n_users: int, params: MechanismParams
) -> int:
    """Check a well-formed reply's figures against its party's ``n_users``; returns the reports
    it declares. Raises :class:`ImplausibleReply` for figures no honest party can produce:

    * every level: 0 ≤ reports ≤ n_users, a known oracle that the run's oracle rule gives such
      a level (:func:`~fedhh.mechanisms.strategies.level_oracles`), 1 ≤ candidates ≤ 2^20,
      lengths and steps within m, hash evaluations and report bytes at most what that oracle
      declares for that many reports over that many candidates (``decode_evaluations``,
      ``report_bytes``);
    * an estimate reply: its level is the task's (length, candidates);
    * estimates and standard errors: a debiased support count of n_g reports lies in
      [−n_g·q, n_g·(1−q)]/(p − q) and is scaled by n_users/n_g, so every scaled estimate lies
      within n_users·max(q, 1 − q)/(p − q) of zero and every standard error below
      n_users/(p − q), with (p, q) of a level's oracle (the loosest of the reply's levels, since
      a search may report items it kept from an earlier level).
    """
    costs = costs_of(result)
    m = params.m
    oracles: list[FrequencyOracle] = []  # each level's, as the run's rule gives it
    for c in costs:
        problem = ""
        o = None
        if 1 <= c.candidates <= MAX_LEVEL_CANDIDATES:
            o = level_oracles(params, c.candidates + 1, n_users).get(c.oracle)
        if not 0 <= c.reports <= n_users:
            problem = f"{c.reports:,} reports from a party of {n_users:,} users"
        elif c.oracle not in ORACLES:
            problem = f"unknown oracle {c.oracle!r}"
        elif not 1 <= c.candidates <= MAX_LEVEL_CANDIDATES:
            problem = f"{c.candidates:,} candidates"
        elif o is None:
            problem = (
                f"oracle {c.oracle!r}, not what oracle = {params.oracle} gives a level of "
                f"{c.candidates:,} candidates"
            )
        elif not (0 <= c.length <= m and 0 <= c.step <= m):
            problem = f"length {c.length} or step {c.step} outside 0..{m}"
        elif not 0 <= c.hash_evaluations <= o.decode_evaluations(c.reports, c.candidates):
            problem = f"{c.hash_evaluations:,} hash evaluations"
        elif not 0 <= c.report_bytes <= c.reports * o.report_bytes(c.candidates):
            problem = f"{c.report_bytes:,} report bytes for {c.reports:,} reports"
        if problem:
            raise ImplausibleReply(f"implausible level cost: {problem}")
        assert o is not None
        oracles.append(o)
    if isinstance(result, EstimateResult):
        assert isinstance(task, EstimateTask)
        if (result.cost.length, result.cost.candidates) != (task.length, cd.count(task.candidates)):
            raise ImplausibleReply("the estimate's level cost is not that of its task")
    if result.estimates.size == 0:
        return sum(c.reports for c in costs)
    if not costs:
        raise ImplausibleReply("a search reply with items but no level")
    factor = se_factor = 0.0
    for c, o in zip(costs, oracles, strict=True):
        p, q = o.probabilities(c.candidates + 1)
        factor = max(factor, max(q, 1 - q) / (p - q))
        se_factor = max(se_factor, 1 / (p - q))
    slack = 1 + 1e-9
    bound = n_users * factor * slack + 1e-6
    if float(np.max(np.abs(result.estimates))) > bound:
        raise ImplausibleReply(
            f"estimates up to {float(np.max(np.abs(result.estimates))):.4g} from a party of "
            f"{n_users:,} users (at most {bound:.4g} at ε = {params.epsilon:g})"
        )
    if float(np.max(result.stderrs)) > n_users * se_factor * slack + 1e-6:
        raise ImplausibleReply(
            f"standard errors up to {float(np.max(result.stderrs)):.4g} from a party of "
            f"{n_users:,} users"
        )
    return sum(c.reports for c in costs)


def _phase_of(task: object) -> str:
    if isinstance(task, EstimateTask):
        return "completion" if task.group == "reserve" else "shared levels"
    return "local search"
