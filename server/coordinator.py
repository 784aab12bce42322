"""The coordinator service (``fedhh coordinator serve``): the protocol's :class:`Coordinator` state
machine behind gRPC, with its state in SQLite.

* Parties connect out to :class:`PartyServicer`: ``Register`` (party id bound to the caller's
  token, user count, codec), ``Poll`` (long poll; a request is re-delivered until its reply is
  accepted), ``SubmitReply``, ``Heartbeat``.
* Analysts use :class:`AnalystServicer`: start a run, list, status, top-k, frequencies, cost,
  cancel.
* A run waits until every listed party has registered (their user counts make the run spec),
  then runs round by round. The replies of a round are fed to the state machine in request order
  once the round is complete, so a run gives exactly the result of ``fedhh simulate`` for the same
  data and seed, and a restarted coordinator replays the stored replies to the same state.
* A request not answered within the run's deadline fails its party: the state machine's policy
  then continues without it (recorded in the result) or fails the run.
* Every input is validated; a refused input is logged (and audited) with its gRPC status and
  changes nothing stored.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
from fedhh.server.store import ACTIVE_STATES, RunRow, Store
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedhh.codec import IntCodec
from fedhh.engine import check_feasible
from fedhh.errors import FedHHError, ParameterError, ProtocolError
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    SearchResult,
)
from fedhh.protocol import Coordinator, Reply, Request, RunSpec, codec_from_name
from fedhh.protocol.coordinator import POLICIES
from fedhh.protocol.messages import PROTOCOL_VERSION
from fedhh.protocol.serde import decode, encode
from fedhh.report import result_document
from fedhh.wire import convert
from fedhh.wire.security import (
    AuthInterceptor,
    Identity,
    TokenStore,
    bind_port,
    check_name,
    identity,
)
from fedhh.wire.v1 import (
    analyst_pb2,
    analyst_pb2_grpc,
    party_pb2,
    party_pb2_grpc,
)

log = logging.getLogger("fedhh.coordinator")

MAX_POLL_SECONDS = 30.0
MAX_PARTIES = 1024
MAX_USERS = 1 << 40
MAX_REPLY_ITEMS = 1 << 20
MAX_QUERY_ITEMS = 10_000
MAX_K = 1 << 16
MAX_DEADLINE = 7 * 24 * 3600.0
SERVICES = (
    "fedhh.v1.PartyService",
    "fedhh.v1.AnalystService",
)


class Refused(Exception):
    """An input refused with a gRPC status (logged and audited by the servicers)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Failure:
    """A request its party did not answer in time."""

    party_id: str
    reason: str


class RunDriver:
    """One run's state machine and the events (replies, failures) of its current round."""

    def __init__(self, spec: RunSpec, policy: str, deadline: float) -> None:
        self.spec = spec
        self.policy = policy
        self.deadline = deadline
        self.coord = Coordinator(spec, policy)
        self.current: dict[int, Request] = {}
        self.events: dict[int, Reply | Failure] = {}
        self.sent_at: dict[int, float] = {}

    def start(self) -> list[Request]:
        reqs = self.coord.start()
        self._set_round(reqs)
        return reqs

    def _set_round(self, reqs: list[Request]) -> None:
        now = time.monotonic()
        self.current = {r.request_id: r for r in reqs}
        self.events = {}
        self.sent_at = {r.request_id: now for r in reqs}

    def waiting_on(self) -> list[Request]:
        return [r for rid, r in self.current.items() if rid not in self.events]

    def add(self, request_id: int, event: Reply | Failure) -> list[Request] | None:
        """Record an event of the current round; when the round is complete, feed it to the
        state machine (in request order) and return the next round's requests."""
        self.events[request_id] = event
        if all(rid in self.events for rid in self.current):
            return self._feed()
        return None

    def _feed(self) -> list[Request]:
        new: list[Request] = []
        for rid in sorted(self.current):
            if self.coord.done:
                break
            ev = self.events[rid]
            if isinstance(ev, Failure):
                new.extend(self.coord.fail_party(ev.party_id, ev.reason))
                continue
            try:
                new.extend(self.coord.step(ev))
            except ProtocolError as exc:  # checked before; kept as a party failure if it happens
                new.extend(self.coord.fail_party(ev.party_id, f"invalid reply: {exc}"))
        self._set_round(new)
        return new

    @classmethod
    def restore(
        cls,
        spec: RunSpec,
        policy: str,
        deadline: float,
        requests: dict[int, bytes],
        replies: dict[int, bytes],
        failures: dict[int, tuple[str, str]],
    ) -> tuple[RunDriver, list[Request]]:
        """Rebuild a run by replaying its stored replies and failures round by round. Returns
        the driver and the requests the replay made that were not stored yet."""
        driver = cls(spec, policy, deadline)
        reqs = driver.start()
        missing: list[Request] = []
        while reqs:
            for r in reqs:
                stored = requests.get(r.request_id)
                if stored is None:
                    missing.append(r)
                elif stored != encode(r):
                    raise ProtocolError(
                        f"resume diverged: request {r.request_id} differs from the stored one"
                    )
            complete = True
            for rid, r in driver.current.items():
                if rid in replies:
                    driver.events[rid] = decode(replies[rid])
                elif rid in failures:
                    driver.events[rid] = Failure(r.party_id, failures[rid][1])
                else:
                    complete = False
            if not complete:
                break
            reqs = driver._feed()
        return driver, missing


def check_reply(req: Request, reply: Reply, m: int) -> None:
    """Refuse a reply whose content does not fit its request (INVALID_ARGUMENT)."""

    def bad(msg: str) -> NoReturn:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"reply to request {req.request_id}: {msg}")

    if reply.version != PROTOCOL_VERSION:
        bad(f"protocol version {reply.version} is not {PROTOCOL_VERSION}")
    res = reply.result
    if isinstance(res, ErrorResult):
        if len(res.code) > 200 or len(res.message) > 4000:
            bad("error code or message too long")
        return
    if isinstance(req.task, EstimateTask):
        if not isinstance(res, EstimateResult):
            bad("an estimate request needs an estimate result")
        n = int(req.task.candidates.size)
        if res.estimates.shape != (n,) or res.stderrs.shape != (n,):
            bad(f"{n} estimates and standard errors expected, got {res.estimates.size}")
    else:
        if not isinstance(res, SearchResult):
            bad("a search request needs a search result")
        n = int(res.items.size)
        if n > MAX_REPLY_ITEMS:
            bad(f"{n} items exceed the limit {MAX_REPLY_ITEMS}")
        if res.estimates.shape != (n,) or res.stderrs.shape != (n,):
            bad("items, estimates and standard errors differ in length")
        if n and m < 64 and int(res.items.max()) >> m:
            bad(f"items wider than m = {m} bits")
        if len(res.levels) > 64:
            bad("more than 64 levels")
    if not (np.all(np.isfinite(res.estimates)) and np.all(np.isfinite(res.stderrs))):
        bad("non-finite estimates or standard errors")
    if np.any(res.stderrs < 0):
        bad("negative standard errors")


class CoordinatorState:
    """All runs of one coordinator: the drivers in memory, everything else in the store."""

    def __init__(self, store: Store, default_deadline: float) -> None:
        self.store = store
        self.default_deadline = default_deadline
        self.cond = threading.Condition(threading.RLock())
        self.drivers: dict[str, RunDriver] = {}
        self._stop = threading.Event()
        with self.cond:
            self._resume()
            self._launch_waiting()
        self._watcher = threading.Thread(target=self._watch, name="deadlines", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()

    # --- start-up: resume runs that were running ---------------------------------------------
    def _resume(self) -> None:
        for row in self.store.runs(("running",)):
            assert row.spec is not None
            try:
                spec = decode(row.spec)
                driver, missing = RunDriver.restore(
                    spec,
                    row.policy,
                    row.deadline,
                    self.store.requests(row.run_id),
                    self.store.replies(row.run_id),
                    self.store.failures(row.run_id),
                )
            except FedHHError as exc:
                with self.store.transaction() as db:
                    Store.update_run(db, row.run_id, state="failed", error=f"cannot resume: {exc}")
                    Store.audit_in(db, "coordinator", "resume-failed", row.run_id, str(exc))
                log.error("run %s cannot resume: %s", row.run_id, exc)
                continue
            with self.store.transaction() as db:
                self._after_step(db, row.run_id, driver, missing)
                Store.audit_in(
                    db, "coordinator", "resumed", row.run_id, f"at round {driver.coord.round}"
                )
            log.info(
                "run %s resumed at round %d (%d replies of the round stored)",
                row.run_id,
                driver.coord.round,
                len(driver.events),
            )

    # --- runs ----------------------------------------------------------------------------------
    def start_run(
        self,
        actor: str,
        run_id: str,
        params: Any,
        party_ids: list[str],
        policy: str,
        deadline: float,
    ) -> RunRow:
        with self.cond:
            if self.store.run_exists(run_id):
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"run {run_id!r} already exists")
            self.store.insert_run(run_id, params.to_dict(), party_ids, policy, deadline)
            self.store.audit(actor, "start", run_id, json.dumps(party_ids))
            self._launch_waiting()
            row = self.store.run(run_id)
            assert row is not None
            return row

    def _launch_waiting(self) -> None:
        parties = self.store.parties()
        for row in self.store.runs(("waiting",)):
            if all(p in parties for p in row.party_ids):
                self._launch(row, parties)

    def _launch(self, row: RunRow, parties: dict[str, tuple[int, str, str]]) -> None:
        from fedhh.mechanisms.params import MechanismParams

        try:
            params = MechanismParams.from_dict(row.params)
            codecs = {parties[p][1] for p in row.party_ids}
            if len(codecs) != 1:
                raise ParameterError(f"the parties use different item codecs: {sorted(codecs)}")
            sizes = tuple(parties[p][0] for p in row.party_ids)
            check_feasible(params, row.party_ids, sizes)
            spec = RunSpec(row.run_id, params, tuple(row.party_ids), sizes, codecs.pop())
            driver = RunDriver(spec, row.policy, row.deadline)
            reqs = driver.start()
        except FedHHError as exc:
            with self.store.transaction() as db:
                Store.update_run(db, row.run_id, state="failed", error=str(exc))
                Store.audit_in(db, "coordinator", "launch-failed", row.run_id, str(exc))
            log.warning("run %s cannot start: %s", row.run_id, exc)
            return
        with self.store.transaction() as db:
            Store.update_run(db, row.run_id, state="running", spec=encode(spec))
            Store.audit_in(db, "coordinator", "launched", row.run_id, f"sizes {list(sizes)}")
            self._after_step(db, row.run_id, driver, reqs)
        log.info("run %s started with parties %s", row.run_id, ", ".join(row.party_ids))

    def _after_step(self, db: Any, run_id: str, driver: RunDriver, new: list[Request]) -> None:
        """Persist the requests a step made and the run's progress or end (inside ``db``)."""
        for r in new:
            Store.insert_request(db, run_id, r.request_id, r.round, r.party_id, encode(r))
        coord = driver.coord
        failed = sorted(coord.failed)
        if coord.result is not None:
            codec = codec_from_name(driver.spec.codec)
            doc = result_document(coord.result, codec)
            Store.update_run(
                db,
                run_id,
                state="done",
                result=doc,
                round=coord.round,
                phase="done",
                outstanding=0,
                failed=failed,
            )
            Store.audit_in(db, "coordinator", "done", run_id, f"{coord.round} rounds")
            self.drivers.pop(run_id, None)
            log.info("run %s done after %d rounds", run_id, coord.round)
        elif coord.error is not None:
            Store.update_run(
                db, run_id, state="failed", error=coord.error, round=coord.round, failed=failed
            )
            Store.audit_in(db, "coordinator", "failed", run_id, coord.error)
            self.drivers.pop(run_id, None)
            log.warning("run %s failed: %s", run_id, coord.error)
        else:
            Store.update_run(
                db,
                run_id,
                round=coord.round,
                phase=coord.progress.phase,
                outstanding=len(driver.waiting_on()),
                failed=failed,
            )
            self.drivers[run_id] = driver
        self.cond.notify_all()

    def cancel(self, actor: str, run_id: str) -> RunRow:
        with self.cond:
            row = self._row(run_id)
            if row.state not in ACTIVE_STATES:
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION, f"run {run_id} is {row.state} already"
                )
            with self.store.transaction() as db:
                Store.update_run(db, run_id, state="cancelled", error=f"cancelled by {actor}")
                Store.audit_in(db, actor, "cancel", run_id)
            self.drivers.pop(run_id, None)
            self.cond.notify_all()
            return self._row(run_id)

    def _row(self, run_id: str) -> RunRow:
        row = self.store.run(run_id)
        if row is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r}")
        return row

    # --- parties ------------------------------------------------------------------------------
    def register(self, party_id: str, n_users: int, codec: str, source: str) -> None:
        with self.cond:
            self.store.register_party(party_id, n_users, codec, source)
            self.store.audit(party_id, "register", "", f"{n_users} users, {codec}, {source}")
            self._launch_waiting()

    def next_request(self, party_id: str, wait: float) -> tuple[RunSpec, Request] | None:
        end = time.monotonic() + wait
        with self.cond:
            while True:
                for driver in self.drivers.values():
                    for r in driver.waiting_on():
                        if r.party_id == party_id:
                            return driver.spec, r
                left = end - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self.cond.wait(left)

    def submit(self, party_id: str, reply: Reply) -> str:
        with self.cond:
            driver = self.drivers.get(reply.run_id)
            if driver is None:
                row = self.store.run(reply.run_id)
                if row is None:
                    raise Refused(grpc.StatusCode.NOT_FOUND, f"no run {reply.run_id!r}")
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"run {reply.run_id} is {row.state}; it takes no replies",
                )
            rid = reply.request_id
            req = driver.current.get(rid)
            if req is None:
                stored = self.store.requests(reply.run_id).get(rid)
                if stored is None:
                    raise Refused(
                        grpc.StatusCode.NOT_FOUND,
                        f"request {rid} of run {reply.run_id} was never sent",
                    )
                if rid in self.store.failures(reply.run_id):
                    raise Refused(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"request {rid} missed its deadline; the run went on without it",
                    )
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"request {rid} is already answered")
            if req.party_id != party_id:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"request {rid} was sent to {req.party_id}, not to {party_id}",
                )
            ev = driver.events.get(rid)
            if isinstance(ev, Failure):
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"request {rid} missed its deadline; the run went on without it",
                )
            if ev is not None:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"request {rid} is already answered")
            check_reply(req, reply, driver.spec.params.m)
            with self.store.transaction() as db:
                Store.insert_reply(db, reply.run_id, rid, party_id, encode(reply))
                kind = type(reply.result).__name__
                Store.audit_in(db, party_id, "reply", reply.run_id, f"request {rid}: {kind}")
            new = driver.add(rid, reply)
            with self.store.transaction() as db:
                self._after_step(db, reply.run_id, driver, new or [])
            return self._row(reply.run_id).state

    # --- deadlines -----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self.cond:
                now = time.monotonic()
                for run_id, driver in list(self.drivers.items()):
                    expired = [
                        r
                        for r in driver.waiting_on()
                        if now - driver.sent_at[r.request_id] >= driver.deadline
                    ]
                    for r in expired:
                        if r.request_id not in driver.current or r.request_id in driver.events:
                            break  # the round moved on meanwhile
                        reason = f"no reply to request {r.request_id} within {driver.deadline:g} s"
                        with self.store.transaction() as db:
                            Store.insert_failure(db, run_id, r.request_id, r.party_id, reason)
                            Store.audit_in(db, "coordinator", "deadline", run_id, reason)
                        log.warning("run %s: party %s: %s", run_id, r.party_id, reason)
                        new = driver.add(r.request_id, Failure(r.party_id, reason))
                        with self.store.transaction() as db:
                            self._after_step(db, run_id, driver, new or [])
                        if run_id not in self.drivers:
                            break


# --- servicers -------------------------------------------------------------------------------
def _abort(context: grpc.ServicerContext, store: Store, actor: str, method: str, exc: Refused):
    log.warning(
        "refused %s from %s (%s): %s %s", method, actor, context.peer(), exc.code.name, exc.message
    )
    try:
        store.audit(actor, f"refused:{method}", "", f"{exc.code.name}: {exc.message}")
    except Exception:  # pragma: no cover - auditing must not hide the refusal
        log.exception("audit failed")
    context.abort(exc.code, exc.message)


def _guard(method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a servicer method; Refused and FedHHError become precise gRPC statuses."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            ident = identity(self.tokens, context)
            try:
                return fn(self, request, context, ident)
            except Refused as exc:
                _abort(context, self.state.store, ident.name, method, exc)
            except FedHHError as exc:
                _abort(
                    context,
                    self.state.store,
                    ident.name,
                    method,
                    Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)),
                )

        inner.__name__ = fn.__name__
        return inner

    return wrap


def _own_party(ident: Identity, party_id: str) -> None:
    if party_id != ident.name:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this token belongs to party {ident.name!r}, not {party_id!r}",
        )


class PartyServicer(party_pb2_grpc.PartyServiceServicer):
    def __init__(self, state: CoordinatorState, tokens: TokenStore) -> None:
        self.state = state
        self.tokens = tokens

    def _registered(self, party_id: str) -> None:
        if party_id not in self.state.store.parties():
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"party {party_id} must register")

    @_guard("Register")
    def Register(self, request: Any, context: Any, ident: Identity) -> Any:
        _own_party(ident, request.party_id)
        if not 1 <= request.n_users <= MAX_USERS:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"n_users must be in 1..2^40, got {request.n_users}",
            )
        codec_from_name(request.codec)
        if request.source not in ("data", "devices"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"unknown source {request.source!r}")
        self.state.register(request.party_id, request.n_users, request.codec, request.source)
        log.info(
            "party %s registered: %d users, %s", request.party_id, request.n_users, request.source
        )
        return party_pb2.RegisterResponse(
            party_id=request.party_id, poll_seconds=MAX_POLL_SECONDS, heartbeat_seconds=10.0
        )

    @_guard("Poll")
    def Poll(self, request: Any, context: Any, ident: Identity) -> Any:
        _own_party(ident, request.party_id)
        self._registered(request.party_id)
        wait = request.wait_seconds
        if not (math.isfinite(wait) and wait >= 0):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad wait_seconds {wait}")
        self.state.store.touch_party(request.party_id)
        found = self.state.next_request(request.party_id, min(wait, MAX_POLL_SECONDS))
        if found is None:
            return party_pb2.PollResponse()
        spec, req = found
        return party_pb2.PollResponse(
            spec=convert.spec_to_pb(spec), request=convert.request_to_pb(req)
        )

    @_guard("SubmitReply")
    def SubmitReply(self, request: Any, context: Any, ident: Identity) -> Any:
        reply = convert.reply_from_pb(request)
        _own_party(ident, reply.party_id)
        self._registered(reply.party_id)
        state = self.state.submit(reply.party_id, reply)
        return party_pb2.SubmitReplyResponse(accepted=True, run_state=state)

    @_guard("Heartbeat")
    def Heartbeat(self, request: Any, context: Any, ident: Identity) -> Any:
        _own_party(ident, request.party_id)
        self._registered(request.party_id)
        self.state.store.touch_party(request.party_id)
        return party_pb2.HeartbeatResponse(server_time=time.time())


def run_info(row: RunRow, driver: RunDriver | None) -> Any:
    return analyst_pb2.RunInfo(
        run_id=row.run_id,
        state=row.state,
        mechanism=str(row.params.get("mechanism", "")),
        party_ids=row.party_ids,
        round=row.round,
        phase=row.phase,
        outstanding=len(driver.waiting_on()) if driver is not None else row.outstanding,
        failed_parties=row.failed,
        error=row.error,
        created=row.created,
        updated=row.updated,
        policy=row.policy,
        deadline_seconds=row.deadline,
    )


class AnalystServicer(analyst_pb2_grpc.AnalystServiceServicer):
    def __init__(self, state: CoordinatorState, tokens: TokenStore) -> None:
        self.state = state
        self.tokens = tokens

    def _info(self, run_id: str) -> Any:
        row = self.state._row(run_id)
        return run_info(row, self.state.drivers.get(run_id))

    def _done(self, run_id: str) -> RunRow:
        row = self.state._row(run_id)
        if row.state != "done" or row.result is None:
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {run_id} is {row.state}" + (f": {row.error}" if row.error else ""),
            )
        return row

    @_guard("StartRun")
    def StartRun(self, request: Any, context: Any, ident: Identity) -> Any:
        params = convert.params_from_pb(request.params)
        params.resolved()
        if params.k > MAX_K:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"k must be at most {MAX_K}")
        ids = list(request.party_ids)
        if not 1 <= len(ids) <= MAX_PARTIES:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"a run needs 1..{MAX_PARTIES} parties")
        for p in ids:
            check_name("party id", p)
        if len(set(ids)) != len(ids):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "party ids must be distinct")
        if params.mechanism == "pem" and len(ids) != 1:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "pem pools every user into one population; across parties use pem-local, "
                "pem-global, tap or taps",
            )
        policy = request.policy or "continue"
        if policy not in POLICIES:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"policy must be one of {POLICIES}")
        deadline = request.deadline_seconds or self.state.default_deadline
        if not (math.isfinite(deadline) and 0 < deadline <= MAX_DEADLINE):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"deadline_seconds must be in (0, {MAX_DEADLINE}]"
            )
        run_id = request.run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        check_name("run id", run_id)
        row = self.state.start_run(ident.name, run_id, params, ids, policy, deadline)
        return run_info(row, self.state.drivers.get(run_id))

    @_guard("ListRuns")
    def ListRuns(self, request: Any, context: Any, ident: Identity) -> Any:
        rows = self.state.store.runs()
        return analyst_pb2.ListRunsResponse(
            runs=[run_info(r, self.state.drivers.get(r.run_id)) for r in rows]
        )

    @_guard("GetStatus")
    def GetStatus(self, request: Any, context: Any, ident: Identity) -> Any:
        return self._info(request.run_id)

    @_guard("GetTop")
    def GetTop(self, request: Any, context: Any, ident: Identity) -> Any:
        if not 0 <= request.k <= MAX_K:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"k must be in 0..{MAX_K}")
        row = self._done(request.run_id)
        assert row.result is not None
        rows = row.result["top_k"][: request.k or None]
        return analyst_pb2.TopResponse(
            run_id=row.run_id,
            rows=[
                analyst_pb2.TopRow(
                    rank=r["rank"],
                    item=str(r["item"]),
                    code=r["code"],
                    estimate=r["estimate"],
                    stderr=r["stderr"],
                    parties=r["parties"],
                )
                for r in rows
            ],
            document_json=json.dumps(row.result),
        )

    @_guard("GetFrequency")
    def GetFrequency(self, request: Any, context: Any, ident: Identity) -> Any:
        if not 1 <= len(request.items) <= MAX_QUERY_ITEMS:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"give 1..{MAX_QUERY_ITEMS} items")
        row = self._done(request.run_id)
        assert row.result is not None and row.spec is not None
        codec = codec_from_name(decode(row.spec).codec)
        items: list[Any] = list(request.items)
        if isinstance(codec, IntCodec):
            try:
                items = [int(x) for x in items]
            except ValueError:
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, "this run's items are integers"
                ) from None
        codes = codec.encode(items)
        by_code = {r["code"]: r for r in row.result["top_k"]}
        out = []
        for text, code in zip(request.items, codes.tolist(), strict=True):
            hit = by_code.get(int(code))
            out.append(
                analyst_pb2.FrequencyRow(
                    item=text,
                    code=int(code),
                    found=hit is not None,
                    estimate=hit["estimate"] if hit else 0.0,
                    stderr=hit["stderr"] if hit else 0.0,
                    rank=hit["rank"] if hit else 0,
                )
            )
        return analyst_pb2.FrequencyResponse(run_id=row.run_id, rows=out)

    @_guard("GetCost")
    def GetCost(self, request: Any, context: Any, ident: Identity) -> Any:
        row = self._done(request.run_id)
        assert row.result is not None
        return analyst_pb2.CostResponse(
            run_id=row.run_id,
            cost_json=json.dumps(row.result["cost"]),
            privacy_json=json.dumps(row.result["privacy"]),
        )

    @_guard("CancelRun")
    def CancelRun(self, request: Any, context: Any, ident: Identity) -> Any:
        row = self.state.cancel(ident.name, request.run_id)
        return run_info(row, None)


# --- the server -----------------------------------------------------------------------------
def build_server(
    state: CoordinatorState,
    tokens: TokenStore,
    *,
    max_message_bytes: int = 16 << 20,
    workers: int = 64,
) -> tuple[grpc.Server, health.HealthServicer]:
    interceptor = AuthInterceptor(
        tokens,
        {"/fedhh.v1.PartyService/": "party", "/fedhh.v1.AnalystService/": "analyst"},
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    party_pb2_grpc.add_PartyServiceServicer_to_server(PartyServicer(state, tokens), server)
    analyst_pb2_grpc.add_AnalystServiceServicer_to_server(AnalystServicer(state, tokens), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer


def serve(
    listen: str,
    db: Path,
    tokens_file: Path,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    deadline: float,
    max_message_bytes: int,
    port_file: Path | None = None,
) -> int:
    """Run the coordinator until SIGINT/SIGTERM."""
    tokens = TokenStore.load(tokens_file)
    if not 0 < deadline <= MAX_DEADLINE:
        raise ParameterError(f"--deadline must be in (0, {MAX_DEADLINE:g}] seconds")
    store = Store(db)
    state = CoordinatorState(store, deadline)
    server, health_servicer = build_server(state, tokens, max_message_bytes=max_message_bytes)
    port = bind_port(server, listen, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
    server.start()
    if port_file is not None:
        port_file.write_text(f"{port}\n")
    log.info(
        "coordinator listening on %s (port %d, %s), state in %s, %d tokens",
        listen,
        port,
        "plaintext" if insecure else "TLS",
        db,
        len(tokens),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("coordinator stopping")
    health_servicer.enter_graceful_shutdown()
    state.close()
    server.stop(grace=2).wait()
    store.close()
    return 0
