"""The run driver: the one loop that every transport uses to run a :class:`Coordinator`.

A transport (the in-process engine, the gRPC coordinator service, the Flower ServerApp) only
moves bytes and maps its failures; the driver does the rest, with no I/O, threads or clocks
(the transport passes ``now`` where deadlines matter):

* it encodes each request once (:mod:`fedhh.protocol.encoding`): the transport sends exactly
  these bytes, and the result's byte costs count them;
* it takes replies in any order, checks each against its request at once (a bad one raises
  :class:`ProtocolError` and changes nothing) and buffers the round; when every request of the
  round has a reply or a failure, it feeds them to the coordinator in request order, and the
  coordinator hands the plan the results sorted by party, so arrival order never matters;
* deadlines: :meth:`RunDriver.expired` lists the requests waiting longer than the run's deadline;
  the transport fails them with :meth:`RunDriver.fail`, and the failure policy decides;
* admission: a driver admits its run when it is made
  (:func:`~fedhh.protocol.admission.admit_run`: the limits it is given, feasibility, and the
  parties' budgets when it is given them), so no transport can start a run it should refuse;
* replay: :meth:`RunDriver.replay` rebuilds a run from a :class:`RunRecord` (the stored requests,
  replies and failures), checking that the replayed requests are byte-identical to the stored.

A run that ends without a result raises :class:`~fedhh.errors.RunFailed` from
:meth:`RunDriver.outcome`, on every transport. See docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol

from fedhh.errors import ParameterError, ProtocolError, RunFailed
from fedhh.protocol.admission import BudgetView, admit_run
from fedhh.protocol.coordinator import Coordinator
from fedhh.protocol.encoding import decode_reply, encode
from fedhh.protocol.limits import Limits
from fedhh.protocol.messages import Reply, Request, RunResult, RunSpec


class Sent:
    """A request as the transport sends it: the message and its protobuf bytes."""

    def __init__(self, request: Request) -> None:
        self.request, self.payload = request, encode(request)
        self.request_id, self.party_id = request.request_id, request.party_id


class RunRecord(Protocol):
    """What a transport stored of a run, by request id (for :meth:`RunDriver.replay`)."""

    def requests(self) -> Mapping[int, bytes]: ...

    def replies(self) -> Mapping[int, bytes]: ...

    def failures(self) -> Mapping[int, str]: ...


class RunDriver:
    """One run: its coordinator and the replies and failures of the current round."""

    def __init__(
        self,
        spec: RunSpec,
        policy: str = "continue",
        deadline: float = math.inf,
        *,
        bounds: Limits | None = None,
        budgets: Mapping[str, BudgetView | None] | None = None,
    ) -> None:
        """Admit the run (``bounds``: the driving side's limits, default :class:`Limits`;
        ``budgets``: the parties' ledgers as that side knows them) and start its coordinator."""
        admitted = admit_run(
            spec.params, spec.party_ids, spec.party_sizes, bounds or Limits(), budgets=budgets
        )
        if admitted.epsilon != spec.params.epsilon:  # its ε₀ is chosen before the spec is made
            raise ParameterError(
                f"the run's ε = {spec.params.epsilon:g} does not meet its central target "
                f"(ε₀ ≤ {admitted.epsilon:g} would)"
            )
        self.spec = spec
        self.deadline = deadline
        self.coord = Coordinator(spec, policy)
        self.current: dict[int, Sent] = {}
        self.events: dict[int, Reply | str] = {}  # a reply, or the reason of a failure
        self.sent_at: dict[int, float] = {}
        self.bytes_out = 0
        self.bytes_in = 0
        self.started: float | None = None

    @property
    def done(self) -> bool:
        return self.coord.done

    def start(self, now: float = 0.0) -> list[Sent]:
        """The first round's requests (``now``: the transport's clock, for deadlines and the
        run's wall time)."""
        self.started = now
        return self._send(self.coord.start(), now)

    def waiting(self) -> list[Sent]:
        """Requests of the current round with neither a reply nor a failure yet."""
        return [s for rid, s in self.current.items() if rid not in self.events]

    def expired(self, now: float) -> list[Sent]:
        """Waiting requests sent at least ``deadline`` seconds before ``now``."""
        return [s for s in self.waiting() if now - self.sent_at[s.request_id] >= self.deadline]

    def receive(
        self, payload: bytes, now: float = 0.0, reply: Reply | None = None, checked: bool = False
    ) -> list[Sent]:
        """Take one reply's bytes; returns the next round's requests once the round is complete.
        A reply that does not fit its request raises :class:`ProtocolError` (nothing changes).
        A transport that decoded (``reply``) and checked (:meth:`check`) it already says so: each
        reply is decoded once and checked once."""
        if reply is None:
            reply = decode_reply(payload)
        if not checked:
            self.check(reply)
        self.bytes_in += len(payload)
        return self._event(reply.request_id, reply, now)

    def check(self, reply: Reply) -> Sent:
        """The request ``reply`` answers, if it may (else :class:`ProtocolError`)."""
        sent = self.current.get(reply.request_id)
        if sent is not None and reply.request_id in self.events:
            event = self.events[reply.request_id]
            if isinstance(event, str):
                raise ProtocolError(f"request {reply.request_id} failed already: {event}")
            raise ProtocolError(f"request {reply.request_id} was already answered")
        self.coord.check(reply)
        assert sent is not None  # the coordinator knows only the current round's requests
        return sent

    def fail(self, request_id: int, reason: str, now: float = 0.0) -> list[Sent]:
        """The transport gives up on a request (deadline, node gone, undecodable reply)."""
        if request_id not in self.current or request_id in self.events:
            raise ProtocolError(f"request {request_id} is not waiting for a reply")
        return self._event(request_id, reason, now)

    def outcome(self, now: float | None = None) -> RunResult:
        """The run's result, its cost completed with what the driver counted (the bytes sent and
        received) and, given ``now`` on the clock :meth:`start` was given, ``wall_seconds``;
        :class:`RunFailed` if it ended without one."""
        if self.coord.error is not None:
            raise RunFailed(f"run {self.spec.run_id} failed: {self.coord.error}")
        result = self.coord.result
        if result is None:
            raise RunFailed(f"run {self.spec.run_id} has not finished")
        cost = {
            **result.cost,
            "bytes_to_parties": self.bytes_out,
            "bytes_to_coordinator": self.bytes_in,
        }
        if now is not None and self.started is not None:
            cost["wall_seconds"] = now - self.started
        return dataclasses.replace(result, cost=cost)

    # --- internals -------------------------------------------------------------------------
    def _send(self, requests: list[Request], now: float) -> list[Sent]:
        sent = [Sent(r) for r in requests]
        self.current = {s.request_id: s for s in sent}
        self.events = {}
        self.sent_at = {s.request_id: now for s in sent}
        self.bytes_out += sum(len(s.payload) for s in sent)
        return sent

    def _event(self, request_id: int, event: Reply | str, now: float) -> list[Sent]:
        self.events[request_id] = event
        if any(rid not in self.events for rid in self.current):
            return []
        new: list[Request] = []
        for rid in sorted(self.current):
            if self.coord.done:
                break
            ev = self.events[rid]
            if isinstance(ev, str):
                new.extend(self.coord.fail_party(self.current[rid].party_id, ev))
            else:
                new.extend(self.coord.step(ev, checked=True))  # checked when it arrived
        return self._send(new, now)

    @classmethod
    def replay(
        cls,
        spec: RunSpec,
        policy: str,
        deadline: float,
        record: RunRecord,
        now: float = 0.0,
        bounds: Limits | None = None,
    ) -> tuple[RunDriver, list[Sent]]:
        """Rebuild a run round by round from what was stored. Returns the driver and the
        requests the replay made that were not stored yet (the transport stores them)."""
        requests, replies, failures = record.requests(), record.replies(), record.failures()
        driver = cls(spec, policy, deadline, bounds=bounds)
        sent = driver.start(now)
        while sent:
            for s in sent:
                stored = requests.get(s.request_id)
                if stored is not None and stored != s.payload:
                    raise ProtocolError(
                        f"replay diverged: request {s.request_id} differs from the stored one"
                    )
            if any(s.request_id not in requests for s in sent):
                return driver, [s for s in sent if s.request_id not in requests]
            nxt: list[Sent] = []
            for s in sent:
                if s.request_id in replies:
                    nxt = driver.receive(replies[s.request_id], now)
                elif s.request_id in failures:
                    nxt = driver.fail(s.request_id, failures[s.request_id], now)
            if not nxt and not driver.done:  # the stored round is incomplete
                return driver, []
            sent = nxt
        return driver, []
