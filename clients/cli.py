"""``fedhh party serve``: argparse set-up and handler (wired into ``fedhh.cli``)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from fedhh.cli import add_connect_args, add_service, setup_logging
from fedhh.errors import ParameterError

log = logging.getLogger("fedhh.party")


def add_party_parser(sub: Any) -> None:
    s = add_service(sub, "party", "the party agent (gRPC)").add_parser(
        "serve",
        help="answer the coordinator's requests for one party",
        description="Connect out to the coordinator and answer its requests for one party, from "
        "a data file of the party's items or from reports of user devices.",
    )
    s.add_argument("--party-id", required=True)
    add_connect_args(s, "this party's token")
    s.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext to the coordinator and on the report endpoint (local use only)",
    )
    s.add_argument("--db", type=Path, required=True, help="the agent's SQLite state file")
    d = s.add_argument_group("source (a): a data file of the party's items")
    d.add_argument("--data", type=Path, help="one item per line (gzip if .gz)")
    d.add_argument("--item-bytes", type=int, help="items are strings of this many bytes")
    d.add_argument("--item-bits", type=int, help="items are integers of this many bits")
    v = s.add_argument_group("source (b): reports from user devices")
    v.add_argument("--devices", type=int, metavar="N", help="enrolled users of the party")
    v.add_argument("--listen", metavar="HOST:PORT", help="the report endpoint's address")
    v.add_argument("--device-tokens", type=Path, help="tokens file with role 'device' tokens")
    v.add_argument("--tls-cert", type=Path, help="report endpoint certificate (PEM)")
    v.add_argument("--tls-key", type=Path, help="report endpoint private key (PEM)")
    v.add_argument(
        "--collect-seconds",
        type=float,
        default=60.0,
        help="close a report task after this long if it has reports but not its quota",
    )
    v.add_argument("--port-file", type=Path, help="write the report endpoint's port here")
    s.add_argument("--poll-seconds", type=float, default=5.0, help="long-poll wait")
    s.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="fault drill: exit abruptly (status 3) after answering N requests",
    )
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_party_serve)


def cmd_party_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from fedhh.clients.agent import PartyAgent
    from fedhh.clients.store import AgentStore
    from fedhh.codec import codec_for
    from fedhh.datasets import load_party_files
    from fedhh.protocol import Party, codec_name
    from fedhh.protocol.host import PartyHost
    from fedhh.wire.security import check_name, read_token_file

    check_name("party id", args.party_id)
    if (args.data is None) == (args.devices is None):
        raise ParameterError("give exactly one source: --data FILE or --devices N")
    if args.insecure and args.ca_cert:
        raise ParameterError("--insecure and --ca-cert exclude each other")
    token = read_token_file(args.token_file)
    codec = codec_for(args.item_bytes, args.item_bits)
    store = AgentStore(args.db)
    server = None
    users: Any
    if args.data is not None:
        users = load_party_files([args.data], codec=codec).parties[0]
        n_users, kind = int(users.size), "data"
        log.info("party %s: %d users from %s", args.party_id, n_users, args.data)
    else:
        if args.devices < 1:
            raise ParameterError("--devices must be ≥ 1")
        if not args.listen or not args.device_tokens:
            raise ParameterError("a device party needs --listen and --device-tokens")
        if not args.collect_seconds > 0:
            raise ParameterError("--collect-seconds must be > 0")
        users, server = _report_endpoint(args, store, codec_name(codec))
        n_users, kind = args.devices, "devices"
    agent = PartyAgent(
        party_id=args.party_id,
        coordinator=args.coordinator,
        token=token,
        host=PartyHost(args.party_id, lambda spec: Party(spec, args.party_id, users), store),
        source_kind=kind,
        n_users=n_users,
        codec=codec_name(codec),
        ca_cert=args.ca_cert,
        insecure=args.insecure,
        poll_seconds=args.poll_seconds,
        stop_after=args.stop_after,
        **({"wait": users.wait} if kind == "devices" else {}),
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop.set())
    worker = threading.Thread(target=lambda: setattr(agent, "status", agent.run()), daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if server is not None:
        server.stop(grace=2).wait()
    store.close()
    return int(getattr(agent, "status", 0))


def _report_endpoint(args: argparse.Namespace, store: Any, codec: str) -> tuple[Any, Any]:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from fedhh.clients.devices import DeviceSource, ReportServicer
    from fedhh.wire.security import AuthInterceptor, TokenStore, bind_port
    from fedhh.wire.v1 import report_pb2_grpc

    tokens = TokenStore.load(args.device_tokens)
    collector = DeviceSource(args.devices, codec, store, args.collect_seconds)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="report"),
        interceptors=[AuthInterceptor(tokens, {"/fedhh.v1.ReportService/": "device"})],
        options=[("grpc.max_receive_message_length", 1 << 20)],
    )
    report_pb2_grpc.add_ReportServiceServicer_to_server(ReportServicer(collector, tokens), server)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("fedhh.v1.ReportService", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        ("fedhh.v1.ReportService", health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = bind_port(
        server, args.listen, tls_cert=args.tls_cert, tls_key=args.tls_key, insecure=args.insecure
    )
    server.start()
    if args.port_file is not None:
        args.port_file.write_text(f"{port}\n")
    log.info(
        "report endpoint on %s (port %d, %s)",
        args.listen,
        port,
        "plaintext" if args.insecure else "TLS",
    )
    return collector, server
