"""The coordinator process: its gRPC server (the party and analyst services behind the token
interceptor, health checking, reflection), its Prometheus metrics and its signal handling."""

from __future__ import annotations

import logging
import math
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedhh.errors import FedHHError, ParameterError
from fedhh.protocol import limits
from fedhh.server.services import (
    MAX_DEADLINE,
    SERVICES,
    AnalystServicer,
    PartyServicer,
)
from fedhh.server.state import CoordinatorState
from fedhh.server.store import Store
from fedhh.wire.rpc import SERVER_OPTIONS, add_servicer, health_follows
from fedhh.wire.security import ANALYST_ROLES, AuthInterceptor, bind_port, split_address
from fedhh.wire.tokens import TokenStore
from fedhh.wire.v1 import analyst_pb2, party_pb2

log = logging.getLogger("fedhh.coordinator")


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
        {
            "/fedhh.v1.PartyService/": "party",
            "/fedhh.v1.AnalystService/": ANALYST_ROLES,
            f"/{reflection.SERVICE_NAME}/": (*ANALYST_ROLES, "party"),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=[
            *SERVER_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    add_servicer(server, party_pb2, "PartyService", PartyServicer(state, tokens))
    add_servicer(server, analyst_pb2, "AnalystService", AnalystServicer(state, tokens))
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
    bounds: limits.Limits | None = None,
    heartbeat_seconds: float = 10.0,
    metrics_listen: str | None = None,
) -> int:
    """Run the coordinator until SIGINT/SIGTERM (and its Prometheus metrics on
    ``metrics_listen``, :mod:`fedhh.ops.metrics`)."""
    tokens = TokenStore.load(tokens_file)
    if not 0 < deadline <= MAX_DEADLINE:
        raise ParameterError(f"--deadline must be in (0, {MAX_DEADLINE:g}] seconds")
    if not (math.isfinite(heartbeat_seconds) and 0.05 <= heartbeat_seconds <= 3600):
        raise ParameterError("--heartbeat-seconds must be in [0.05, 3600]")
    if not 1 << 10 <= max_message_bytes <= 1 << 30:
        raise ParameterError("--max-message-bytes must be in 1 KiB..1 GiB")
    store = Store(db)
    state = CoordinatorState(store, deadline, bounds, heartbeat_seconds)
    server, health_servicer = build_server(state, tokens, max_message_bytes=max_message_bytes)

    health_follows(store, health_servicer, ("", *SERVICES), "coordinator")
    try:
        port = bind_port(server, listen, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
        if metrics_listen:
            where = f"{split_address(metrics_listen)[0]}:{state.metrics.serve(metrics_listen)}"
            log.info("metrics on http://%s/metrics", where)
    except FedHHError:
        state.close()
        store.close()
        raise
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
    state.metrics.close()
    store.close()
    return 0
