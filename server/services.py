"""The coordinator's gRPC services (``fedhh coordinator serve``): the :class:`PartyService`
parties connect out to (``Register``, ``Poll`` long-polls, ``SubmitReply``, ``Heartbeat``) and
the :class:`AnalystService` (start, list, status and its stream, top-k, frequencies, cost,
cancel, parties),
both over the runs of :class:`~fedhh.server.state.CoordinatorState`. They only map messages and
statuses: every input is validated, and a refused one is logged and audited with its gRPC status
and changes nothing stored (malformed: INVALID_ARGUMENT, over a size or resource limit:
RESOURCE_EXHAUSTED; :mod:`fedhh.wire.rpc`).

Authorization: a party token acts for its own party only; a run belongs to the analyst who
started it (another analyst gets PERMISSION_DENIED), an ``admin`` token sees and cancels every
run. Health checking needs no token; server reflection needs a party, analyst or admin token.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from fedhh.core.items import IntCodec, StringCodec, display
from fedhh.errors import StorageError
from fedhh.protocol import RunDriver, codec_from_name, encoding
from fedhh.protocol.coordinator import POLICIES
from fedhh.run.result import code_hex, code_labels
from fedhh.server.spent import BUDGET_FIELDS, party_budgets
from fedhh.server.state import CoordinatorState, failed_in
from fedhh.server.store import FINAL_STATES, RunRow
from fedhh.wire.rpc import Refused, refused
from fedhh.wire.security import Identity, check_name, identity
from fedhh.wire.tokens import TokenStore
from fedhh.wire.v1 import (
    analyst_pb2,
    party_pb2,
    protocol_pb2,
)

log = logging.getLogger("fedhh.coordinator")

MAX_POLL_SECONDS = 30.0
MAX_PARTIES = 1024
MAX_USERS = 1 << 40
MAX_QUERY_ITEMS = 10_000
MAX_OPEN_RUNS = 10_000
MAX_DEADLINE = 7 * 24 * 3600.0
MAX_EPSILON_FIGURE = 1e6
MAX_WATCHERS = 16  # concurrent WatchRun streams (each holds one of the server's 64 threads)
WATCH_INTERVAL = 0.5  # a watcher reads the run's status at each change, or after this long
SERVICES = (
    "fedhh.v1.PartyService",
    "fedhh.v1.AnalystService",
)


# --- servicers -------------------------------------------------------------------------------
def _abort(
    context: grpc.ServicerContext, state: CoordinatorState, actor: str, method: str, exc: Refused
):
    log.warning(
        "refused %s from %s (%s): %s %s", method, actor, context.peer(), exc.code.name, exc.message
    )
    state.metrics.refusals.labels(method, exc.code.name).inc()
    try:
        state.store.audit(actor, f"refused:{method}", "", f"{exc.code.name}: {exc.message}")
    except StorageError as err:  # the disk that refused the call refuses its audit line too
        log.error("refusal of %s not audited: %s", method, err)
    except Exception:  # pragma: no cover - auditing must not hide the refusal
        log.exception("audit failed")
    context.abort(exc.code, exc.message)


def _guard(method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a servicer method; Refused and FedHHError become precise gRPC statuses, anything
    else (a bug) is logged with its traceback and answered INTERNAL."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            ident = identity(self.tokens, context)
            try:
                return fn(self, request, context, ident)
            except Exception as exc:
                _abort(context, self.state, ident.name, method, _refusal(exc, method, ident))

        inner.__name__ = fn.__name__
        return inner

    return wrap


def _refusal(exc: Exception, method: str, ident: Identity) -> Refused:
    """The status a failed call is answered with: its own for a refusal or bad input, INTERNAL
    (logged with the traceback) for anything else."""
    r = refused(exc)
    if r is None:
        log.exception("%s from %s failed", method, ident.name)
        r = Refused(grpc.StatusCode.INTERNAL, f"{method} failed on the coordinator")
    return r


def _own_party(ident: Identity, party_id: str) -> None:
    if party_id != ident.name:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this token belongs to party {ident.name!r}, not {party_id!r}",
        )


def _budget(msg: Any) -> dict[str, Any]:
    """A party's PrivacyBudget, checked (finite, non-negative, a bounded list of run ids)."""
    names = ("budget", "max_epsilon", "committed", "max_central")
    values = {k: float(getattr(msg, k)) for k in names}
    for k, v in values.items():
        if not (math.isfinite(v) and 0 <= v <= MAX_EPSILON_FIGURE):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"budget.{k} = {v} is out of range")
    runs = list(msg.admitted_runs)
    if len(runs) > MAX_OPEN_RUNS:
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_OPEN_RUNS} open runs")
    for r in runs:
        check_name("run id", r)
    return {**values, "admitted_runs": runs}


class PartyServicer:
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
        budget = _budget(request.budget)
        self.state.register(
            request.party_id, request.n_users, request.codec, request.source, budget
        )
        log.info(
            "party %s registered: %d users, %s", request.party_id, request.n_users, request.source
        )
        return party_pb2.RegisterResponse(
            party_id=request.party_id,
            poll_seconds=MAX_POLL_SECONDS,
            heartbeat_seconds=self.state.heartbeat_seconds,
        )

    @_guard("Poll")
    def Poll(self, request: Any, context: Any, ident: Identity) -> Any:
        _own_party(ident, request.party_id)
        self._registered(request.party_id)
        wait = request.wait_seconds
        if not (math.isfinite(wait) and wait >= 0):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad wait_seconds {wait}")
        if len(request.open_runs) > MAX_OPEN_RUNS:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_OPEN_RUNS} open runs"
            )
        for run_id in request.open_runs:
            check_name("run id", run_id)
        if len(request.holding) > MAX_OPEN_RUNS:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_OPEN_RUNS} held requests"
            )
        for ref in request.holding:
            check_name("run id", ref.run_id)
        holding = {(ref.run_id, int(ref.request_id)) for ref in request.holding}
        self.state.seen(request.party_id)
        finished = self.state.finished_for(request.party_id, list(request.open_runs))
        if finished:
            return party_pb2.PollResponse(finished_runs=finished)
        found = self.state.next_request(
            request.party_id, min(wait, MAX_POLL_SECONDS), holding=holding
        )
        if found is None:
            return party_pb2.PollResponse()
        spec, sent, left = found
        return party_pb2.PollResponse(
            spec=encoding.to_pb(spec),
            request=protocol_pb2.Request.FromString(sent.payload),
            deadline_seconds=left,
        )

    @_guard("SubmitReply")
    def SubmitReply(self, request: Any, context: Any, ident: Identity) -> Any:
        payload = request.SerializeToString(deterministic=True)
        reply = encoding.decode_reply(payload)
        _own_party(ident, reply.party_id)
        self._registered(reply.party_id)
        state = self.state.submit(reply.party_id, reply, payload)
        return party_pb2.SubmitReplyResponse(accepted=True, run_state=state)

    @_guard("Heartbeat")
    def Heartbeat(self, request: Any, context: Any, ident: Identity) -> Any:
        _own_party(ident, request.party_id)
        self._registered(request.party_id)
        self.state.heartbeat(request.party_id, _budget(request.budget))
        return party_pb2.HeartbeatResponse(server_time=time.time())


def party_statuses(
    state: CoordinatorState, ident: Identity, party_ids: list[str] | None = None, **extra: Any
) -> list[Any]:
    """The parties' PartyStatus messages as ``ident`` may see them: a party's privacy budget is
    shown to admins only (``budget_hidden`` for an analyst). ``extra``: party id → fields."""
    hide = ident.role != "admin"
    out = []
    for p in state.party_status(party_ids):
        if hide and p.get("registered"):
            p = {**{k: v for k, v in p.items() if k not in BUDGET_FIELDS}, "budget_hidden": True}
        out.append(analyst_pb2.PartyStatus(**p, **extra.get(p["party_id"], {})))
    return out


def run_info(
    row: RunRow,
    driver: RunDriver | None,
    state: CoordinatorState | None = None,
    ident: Identity | None = None,
) -> Any:
    names = analyst_pb2.RunInfo.DESCRIPTOR.fields_by_name
    skip = ("outstanding", "parties")
    parties = []
    if state is not None and ident is not None:
        waiting = {s.party_id for s in driver.waiting()} if driver is not None else set()
        failed = failed_in(driver) if driver is not None else set(row.failed)
        flags = {
            pid: {"outstanding": pid in waiting, "failed": pid in failed} for pid in row.party_ids
        }
        parties = party_statuses(state, ident, row.party_ids, **flags)
    return analyst_pb2.RunInfo(
        **{k: v for k, v in vars(row).items() if k in names and k not in skip},
        mechanism=str(row.params.get("mechanism", "")),
        outstanding=len(driver.waiting()) if driver is not None else row.outstanding,
        failed_parties=row.failed,
        deadline_seconds=row.deadline,
        parties=parties,
    )


def _progress_key(info: Any) -> tuple[Any, ...]:
    """What a watcher is told of when it changes."""
    parties = tuple((p.party_id, p.registered) for p in info.parties)
    return (
        info.state,
        info.round,
        info.phase,
        info.outstanding,
        tuple(info.failed_parties),
        parties,
    )


class AnalystServicer:
    def __init__(self, state: CoordinatorState, tokens: TokenStore) -> None:
        self.state = state
        self.tokens = tokens
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)

    def _row(self, run_id: str, ident: Identity) -> RunRow:
        """The run, if this analyst may see it (its owner, or an admin)."""
        row = self.state.row(run_id)
        if ident.role != "admin" and row.owner != ident.name:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"run {run_id} belongs to another analyst",
            )
        return row

    def _info(self, row: RunRow, ident: Identity) -> Any:
        return run_info(row, self.state.drivers.get(row.run_id), self.state, ident)

    def _done(self, run_id: str, ident: Identity) -> RunRow:
        row = self._row(run_id, ident)
        if row.state != "done" or row.result is None:
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {run_id} is {row.state}" + (f": {row.error}" if row.error else ""),
            )
        return row

    @_guard("StartRun")
    def StartRun(self, request: Any, context: Any, ident: Identity) -> Any:
        params = encoding.params_from_pb(request.params)
        params.resolved()
        infer_m = not encoding.params_has(request.params, "m")  # left out: the parties' m
        ids = list(request.party_ids)
        if not ids:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a run needs at least one party")
        if len(ids) > MAX_PARTIES:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"a run has at most {MAX_PARTIES} parties"
            )
        for p in ids:
            check_name("party id", p)
        if len(set(ids)) != len(ids):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "party ids must be distinct")
        if params.mech.pools_users and len(ids) != 1:
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
        row = self.state.start_run(ident.name, run_id, params, ids, policy, deadline, infer_m)
        return self._info(row, ident)

    @_guard("ListRuns")
    def ListRuns(self, request: Any, context: Any, ident: Identity) -> Any:
        rows = self.state.store.runs(owner=None if ident.role == "admin" else ident.name)
        return analyst_pb2.ListRunsResponse(
            runs=[run_info(r, self.state.drivers.get(r.run_id)) for r in rows]
        )

    @_guard("GetStatus")
    def GetStatus(self, request: Any, context: Any, ident: Identity) -> Any:
        return self._info(self._row(request.run_id, ident), ident)

    def WatchRun(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Stream the run's status: now, then at each change (woken by the state's condition,
        read at least every WATCH_INTERVAL s), to its end or until the client goes. Each watcher
        holds a server thread, so at most MAX_WATCHERS at once; one more is refused
        RESOURCE_EXHAUSTED."""
        ident = identity(self.tokens, context)
        try:
            self._row(request.run_id, ident)
            if not self._watchers.acquire(blocking=False):
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{MAX_WATCHERS} runs are being watched already: poll GetStatus instead",
                )
        except Exception as exc:
            _abort(context, self.state, ident.name, "WatchRun", _refusal(exc, "WatchRun", ident))
        try:
            last: Any = None
            while context.is_active():
                try:
                    info = self._info(self.state.row(request.run_id), ident)
                except Exception as exc:  # a storage error: the stream ends with its status
                    r = _refusal(exc, "WatchRun", ident)
                    _abort(context, self.state, ident.name, "WatchRun", r)
                seen = _progress_key(info)
                if seen != last:
                    yield info
                    last = seen
                if info.state in FINAL_STATES:
                    return
                self.state.wait_change(WATCH_INTERVAL)
        finally:
            self._watchers.release()

    @_guard("ListParties")
    def ListParties(self, request: Any, context: Any, ident: Identity) -> Any:
        return analyst_pb2.ListPartiesResponse(parties=party_statuses(self.state, ident))

    @_guard("GetTop")
    def GetTop(self, request: Any, context: Any, ident: Identity) -> Any:
        if request.k < 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"k must be ≥ 0, got {request.k}")
        row = self._done(request.run_id, ident)
        assert row.result is not None
        rows = row.result["top_k"][: request.k or None]
        m = int(row.result["params"]["m"])
        return analyst_pb2.TopResponse(
            run_id=row.run_id,
            rows=[
                analyst_pb2.TopRow(
                    rank=r["rank"],
                    item=str(r["item"]),
                    code=r["code"] if isinstance(r["code"], int) else 0,
                    estimate=r["estimate"],
                    stderr=r["stderr"],
                    parties=r["parties"],
                    code_hex=code_hex(r["code"], m),
                    item_bytes=bytes.fromhex(r.get("bytes_hex", "")),
                )
                for r in rows
            ],
            document_json=json.dumps(row.result),
        )

    @_guard("GetFrequency")
    def GetFrequency(self, request: Any, context: Any, ident: Identity) -> Any:
        queried = [*request.items, *request.item_bytes]
        if not queried:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "give at least one item")
        if len(queried) > MAX_QUERY_ITEMS:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"give at most {MAX_QUERY_ITEMS} items"
            )
        row = self._done(request.run_id, ident)
        assert row.result is not None and row.spec is not None
        codec = codec_from_name(encoding.decode_spec(row.spec).codec)
        items: list[Any] = queried
        if isinstance(codec, IntCodec):
            try:
                items = [int(x) for x in items]
            except ValueError:
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, "this run's items are integers"
                ) from None
        codes = codec.encode(items)
        labels = code_labels(codes, codec.m)
        raws = codec.item_bytes(codes) if isinstance(codec, StringCodec) else [b""] * len(labels)
        by_code = {r["code"]: r for r in row.result["top_k"]}
        out = []
        for query, code, raw in zip(queried, labels, raws, strict=True):
            hit = by_code.get(code)
            out.append(
                analyst_pb2.FrequencyRow(
                    item=query if isinstance(query, str) else display(query),
                    code=code if isinstance(code, int) else 0,
                    code_hex=code_hex(code, codec.m),
                    item_bytes=raw,
                    found=hit is not None,
                    estimate=hit["estimate"] if hit else 0.0,
                    stderr=hit["stderr"] if hit else 0.0,
                    rank=hit["rank"] if hit else 0,
                )
            )
        return analyst_pb2.FrequencyResponse(run_id=row.run_id, rows=out)

    @_guard("GetCost")
    def GetCost(self, request: Any, context: Any, ident: Identity) -> Any:
        row = self._done(request.run_id, ident)
        assert row.result is not None
        privacy = {**row.result["privacy"], "budgets": party_budgets(self.state, ident, row)}
        return analyst_pb2.CostResponse(
            run_id=row.run_id,
            cost_json=json.dumps(row.result["cost"]),
            privacy_json=json.dumps(privacy),
        )

    @_guard("CancelRun")
    def CancelRun(self, request: Any, context: Any, ident: Identity) -> Any:
        self._row(request.run_id, ident)
        row = self.state.cancel(ident.name, request.run_id)
        return run_info(row, None)
