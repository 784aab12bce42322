"""The coordinator's gRPC services (``fedhh coordinator serve``): the :class:`PartyService`
parties connect out to (``Register``, ``Poll`` long-polls, ``SubmitReply``, ``Heartbeat``) and
the :class:`AnalystService` (start, list, status, top-k, frequencies, cost, cancel), both over
the runs of :class:`~fedhh.server.state.CoordinatorState`. They only map messages and statuses:
every input is validated, and a refused one is logged and audited with its gRPC status and
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
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedhh.codec import IntCodec
from fedhh.errors import FedHHError, ParameterError
from fedhh.protocol import RunDriver, codec_from_name, encoding
from fedhh.protocol.coordinator import POLICIES
from fedhh.server.state import CoordinatorState, Refused
from fedhh.server.store import RunRow, Store
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
    protocol_pb2,
)

log = logging.getLogger("fedhh.coordinator")

MAX_POLL_SECONDS = 30.0
MAX_PARTIES = 1024
MAX_USERS = 1 << 40
MAX_QUERY_ITEMS = 10_000
MAX_K = 1 << 16
MAX_DEADLINE = 7 * 24 * 3600.0
SERVICES = (
    "fedhh.v1.PartyService",
    "fedhh.v1.AnalystService",
)


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
        spec, sent = found
        return party_pb2.PollResponse(
            spec=encoding.to_pb(spec), request=protocol_pb2.Request.FromString(sent.payload)
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
        self.state.store.touch_party(request.party_id)
        return party_pb2.HeartbeatResponse(server_time=time.time())


def run_info(row: RunRow, driver: RunDriver | None) -> Any:
    names = analyst_pb2.RunInfo.DESCRIPTOR.fields_by_name
    return analyst_pb2.RunInfo(
        **{k: v for k, v in vars(row).items() if k in names and k != "outstanding"},
        mechanism=str(row.params.get("mechanism", "")),
        outstanding=len(driver.waiting()) if driver is not None else row.outstanding,
        failed_parties=row.failed,
        deadline_seconds=row.deadline,
    )


class AnalystServicer(analyst_pb2_grpc.AnalystServiceServicer):
    def __init__(self, state: CoordinatorState, tokens: TokenStore) -> None:
        self.state = state
        self.tokens = tokens

    def _info(self, run_id: str) -> Any:
        row = self.state.row(run_id)
        return run_info(row, self.state.drivers.get(run_id))

    def _done(self, run_id: str) -> RunRow:
        row = self.state.row(run_id)
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
        codec = codec_from_name(encoding.decode_spec(row.spec).codec)
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
