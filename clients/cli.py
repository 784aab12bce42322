"""``fedhh party serve`` and ``fedhh party enroll``: argparse set-up and handlers (wired into
``fedhh.cli``)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

from fedhh.cli.common import (
    add_budget_args,
    add_connect_args,
    add_limit_args,
    add_observability_args,
    add_service,
    limits_of,
    setup_logging,
)
from fedhh.errors import ParameterError
from fedhh.extras import require

log = logging.getLogger("fedhh.party")
MAX_POLL_SECONDS = 300.0  # (the coordinator answers a long poll within 30 s, whatever is asked)


def add_party_parser(sub: Any) -> None:
    party = add_service(sub, "party", "the party agent (gRPC)")
    s = party.add_parser(
        "serve",
        help="answer the coordinator's requests for one party",
        description="Connect out to the coordinator and answer its requests for one party, from "
        "a data file of the party's items or from reports of user devices. Every run is checked "
        "against the agent's resource limits and privacy budget before any work.",
    )
    s.add_argument(
        "--party-id",
        required=True,
        help="this party's id, the name its token was issued for (coordinator add-token --name)",
    )
    add_connect_args(s, "this party's token")
    s.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext to the coordinator and on the report endpoint (local use only)",
    )
    s.add_argument("--db", type=Path, required=True, help="the agent's SQLite state file")
    d = s.add_argument_group("source (a): a data file of the party's items")
    d.add_argument("--data", type=Path, help="one item per line (gzip if .gz)")
    d.add_argument("--item-bytes", type=int, help="items are strings of up to this many bytes")
    d.add_argument("--item-bits", type=int, help="items are integers of this many bits")
    d.add_argument(
        "--truncate",
        action="store_true",
        help="cut longer string items at a character boundary (else the file is refused)",
    )
    v = s.add_argument_group(
        "source (b): reports from user devices",
        "Devices authenticate with per-user credentials (`fedhh party enroll`).",
    )
    v.add_argument(
        "--devices", type=int, metavar="N", help="enrolled users of the party (its user count)"
    )
    v.add_argument("--listen", metavar="HOST:PORT", help="the report endpoint's address")
    v.add_argument("--device-tokens", type=Path, help=argparse.SUPPRESS)  # before credentials
    v.add_argument("--tls-cert", type=Path, help="report endpoint certificate (PEM)")
    v.add_argument("--tls-key", type=Path, help="report endpoint private key (PEM)")
    v.add_argument(
        "--collect-seconds",
        type=float,
        default=60.0,
        help="close a report task after this long if it has reports but not its quota",
    )
    v.add_argument("--port-file", type=Path, help="write the report endpoint's port here")
    v.add_argument(
        "--ingest-processes",
        type=int,
        default=1,
        metavar="N",
        help="run the report endpoint as N ingestion processes on the one --listen address "
        "(SO_REUSEPORT), each with its own ledger beside --db; the party's answers are those "
        "of one process. A state file keeps the N it was first served with (default 1)",
    )
    v.add_argument(
        "--ingest-engine",
        choices=("processes", "ray"),
        default="processes",
        help="what carries the ingestion processes: child processes of the agent, or Ray "
        "actors on this machine (RAY_ADDRESS, else a Ray started here on 127.0.0.1)",
    )
    b = s.add_argument_group("privacy budget and resource limits (checked before any work)")
    add_budget_args(b, "this party's users")
    add_limit_args(b, "this party accepts")
    s.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        help="seconds one long poll of the coordinator waits for a request (default 5)",
    )
    s.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="fault drill: exit abruptly (status 3) after answering N requests",
    )
    add_observability_args(s)
    s.set_defaults(func=cmd_party_serve)

    e = party.add_parser(
        "enroll",
        help="issue the credentials of a device party's users",
        description="Write one credential per enrolled user (user id, tab, credential; mode 600) "
        "for a device party: each is bound to its user id and verified by the agent with a key "
        "kept in its state file (created here if needed), and expires after --valid-days. "
        "Issuing again gives new credentials; the earlier ones stay valid until they expire or "
        "are revoked (fedhh party revoke).",
    )
    e.add_argument("--party-id", required=True, help="the device party's id")
    e.add_argument("--db", type=Path, required=True, help="the agent's SQLite state file")
    e.add_argument(
        "--users",
        type=int,
        required=True,
        metavar="N",
        help="enrolled users: credentials for user ids 0..N-1",
    )
    e.add_argument("--out", type=Path, required=True, help="file to write the credentials to")
    e.add_argument(
        "--only",
        metavar="U,U,...",
        help="issue the credentials of these user ids only (a new one after a revocation)",
    )
    e.add_argument(
        "--valid-days",
        type=float,
        default=365.0,
        help="days until the credentials expire (0: never; default %(default)s)",
    )
    e.set_defaults(func=cmd_party_enroll)
    r = party.add_parser(
        "revoke",
        help="void the credentials of some of a device party's users",
        description="Record in the agent's state file that every credential issued so far to "
        "these users is void; a running agent refuses them within a second, without a restart. "
        "`fedhh party enroll --only` issues them new ones.",
    )
    r.add_argument("--party-id", required=True, help="the device party's id")
    r.add_argument("--db", type=Path, required=True, help="the agent's SQLite state file")
    r.add_argument("--user", required=True, metavar="U,U,...", help="the user ids to revoke")
    r.set_defaults(func=cmd_party_revoke)


def credentials_for(store: Any, party_id: str, n_users: int) -> Any:
    """The party's credentials: its key (made on first use) and its revocation list."""
    from fedhh.clients.credentials import Credentials, RevocationList, new_key

    key = store.meta_default("credential-key", new_key())
    return Credentials(party_id, key, n_users, RevocationList(store.revocations))


def _user_ids(text: str, flag: str, n_users: int | None = None) -> list[int]:
    try:
        users = sorted({int(u) for u in text.split(",") if u.strip()})
    except ValueError:
        raise ParameterError(f"{flag}: expected comma-separated user ids, got {text!r}") from None
    if not users or users[0] < 0 or (n_users is not None and users[-1] >= n_users):
        top = f"0..{n_users - 1}" if n_users is not None else "≥ 0"
        raise ParameterError(f"{flag}: user ids must be {top}, got {text!r}")
    return users


def cmd_party_revoke(args: argparse.Namespace) -> int:
    from fedhh.clients.credentials import now_ms
    from fedhh.clients.store import AgentStore
    from fedhh.wire.security import check_name

    check_name("party id", args.party_id)
    users = _user_ids(args.user, "--user")
    if not args.db.exists():
        raise ParameterError(f"{args.db}: no such state file (the agent's --db)")
    store = AgentStore.of_party(args.db, args.party_id)
    try:
        store.revoke(users, now_ms())
    finally:
        store.close()
    print(
        f"revoked the credentials of {len(users)} user(s) of party {args.party_id}; "
        f"new ones: fedhh party enroll --only {','.join(map(str, users))} ..."
    )
    return 0


def cmd_party_enroll(args: argparse.Namespace) -> int:
    from fedhh.clients.credentials import write_credentials
    from fedhh.clients.store import AgentStore
    from fedhh.wire.security import check_name

    check_name("party id", args.party_id)
    if args.users < 1:
        raise ParameterError("--users must be ≥ 1")
    if not (0 <= args.valid_days <= 36500):
        raise ParameterError("--valid-days must be in [0, 36500] (0: never expires)")
    only = _user_ids(args.only, "--only", args.users) if args.only else None
    store = AgentStore.of_party(args.db, args.party_id)
    try:
        creds = credentials_for(store, args.party_id, args.users)
        n = write_credentials(creds, args.out, only, args.valid_days)
    finally:
        store.close()
    print(f"{n} credentials of party {args.party_id} written to {args.out}")
    return 0


def cmd_party_serve(args: argparse.Namespace) -> int:
    require("server", "fedhh party serve")
    setup_logging(args.log_level, args.log_format)
    from fedhh.clients.agent import PartyAgent
    from fedhh.clients.budget import PrivacyLedger
    from fedhh.clients.store import AgentStore
    from fedhh.core.items import codec_for
    from fedhh.datasets import load_party_files
    from fedhh.protocol import Party, codec_name
    from fedhh.protocol.host import PartyHost
    from fedhh.wire.security import check_name, split_address
    from fedhh.wire.tokens import read_token_file

    check_name("party id", args.party_id)
    if (args.data is None) == (args.devices is None):
        raise ParameterError("give exactly one source: --data FILE or --devices N")
    if args.insecure and args.ca_cert:
        raise ParameterError("--insecure and --ca-cert exclude each other")
    split_address(args.coordinator)
    if args.ca_cert is not None and not args.ca_cert.is_file():
        raise ParameterError(f"--ca-cert {args.ca_cert}: no such file")
    if not (math.isfinite(args.poll_seconds) and 0 < args.poll_seconds <= MAX_POLL_SECONDS):
        raise ParameterError(f"--poll-seconds must be in (0, {MAX_POLL_SECONDS:g}]")
    token = read_token_file(args.token_file)
    codec = codec_for(args.item_bytes, args.item_bits, truncate=args.truncate)
    lim = limits_of(args)
    if args.devices is not None:
        if args.devices < 1:
            raise ParameterError("--devices must be ≥ 1")
        if not args.listen:
            raise ParameterError("a device party needs --listen (its report endpoint)")
        if not args.collect_seconds > 0:
            raise ParameterError("--collect-seconds must be > 0")
    _check_ingest_args(args)
    store = AgentStore.of_party(args.db, args.party_id)
    server = devices = None
    users: Any
    if args.data is not None:
        ds = load_party_files([args.data], codec=codec)
        users, n_users, kind = ds.parties[0], int(ds.party_sizes[0]), "data"
        log.info("party %s: %d users from %s", args.party_id, n_users, args.data)
    else:
        if args.device_tokens is not None:
            log.warning(
                "--device-tokens is no longer used: devices authenticate with per-user "
                "credentials (fedhh party enroll)"
            )
        creds = credentials_for(store, args.party_id, args.devices)
        _check_layout(store, args.ingest_processes, args.db)
        if _sharded(args):
            devices = _sharded_endpoint(args, store, creds, codec_name(codec))
        else:
            devices, server = _report_endpoint(args, store, creds, codec_name(codec))
        users, n_users, kind = devices, args.devices, "devices"
    ledger = PrivacyLedger(
        store, n_users, args.epsilon_budget, args.max_epsilon, args.max_central_epsilon
    )
    agent = PartyAgent(
        party_id=args.party_id,
        coordinator=args.coordinator,
        token=token,
        host=PartyHost(args.party_id, lambda spec: Party(spec, args.party_id, users), store),
        source_kind=kind,
        n_users=n_users,
        codec=codec_name(codec),
        ledger=ledger,
        limits=lim,
        devices=devices,
        ca_cert=args.ca_cert,
        insecure=args.insecure,
        poll_seconds=args.poll_seconds,
        stop_after=args.stop_after,
        **({"wait": devices.wait} if devices is not None else {}),
    )
    metrics = _agent_metrics(args, agent, devices)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop.set())
    status = [1]  # an agent that dies of an unexpected error exits 1, not 0

    def run() -> None:
        try:
            status[0] = agent.run()
        except Exception:  # a bug: logged with its traceback, and the agent fails
            log.exception("party %s: the agent stopped on an unexpected error", args.party_id)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if server is not None:
        server.stop(grace=2).wait()
    if devices is not None:
        devices.close()
    if metrics is not None:
        metrics.close()
    store.close()
    return int(status[0])


def _agent_metrics(args: argparse.Namespace, agent: Any, devices: Any) -> Any:
    """The agent's Prometheus metrics on ``--metrics-listen`` (None without it)."""
    if not args.metrics_listen:
        return None
    from fedhh.ops.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    agent.host.observe = metrics.observe_answer
    if devices is not None:
        devices.metrics = metrics

    def state() -> list[tuple[str, str, float, dict[str, str]]]:
        view = agent.ledger.view()
        left = view.left() if view.budget else math.inf  # budget 0: the party keeps no ledger
        return [("gauge", "fedhh_party_epsilon_left", left, {})]

    metrics.read_state(state, {"fedhh_party_epsilon_left": "ε the privacy ledger has left"})
    port = metrics.serve(args.metrics_listen)
    log.info("metrics on http://%s:%d/metrics", args.metrics_listen.rpartition(":")[0], port)
    return metrics


def _sharded(args: argparse.Namespace) -> bool:
    return bool(args.ingest_processes > 1 or args.ingest_engine == "ray")


def _check_ingest_args(args: argparse.Namespace) -> None:
    from fedhh.clients.shards import MAX_SHARDS

    n = args.ingest_processes
    if not 1 <= n <= MAX_SHARDS:
        raise ParameterError(f"--ingest-processes must be in 1..{MAX_SHARDS}, got {n}")
    if _sharded(args) and args.devices is None:
        raise ParameterError(
            "--ingest-processes/--ingest-engine ray are for a device party (--devices N)"
        )


def _check_layout(store: Any, n: int, db: Path) -> None:
    """The state file's reports are in the ledgers of the N it was first served with."""
    had = store.meta("ingest-processes")
    if had is None and store.count_reports() > 0:
        had = b"1"  # served before the option existed: its reports are in the state file
    if had is None:
        had = store.meta_default("ingest-processes", str(n).encode())
    if int(had) != n:
        raise ParameterError(
            f"--ingest-processes {n}: the reports of {db} are in {int(had)} ingestion "
            f"ledger(s); serve it with --ingest-processes {int(had)}"
        )


def _sharded_endpoint(args: argparse.Namespace, store: Any, creds: Any, codec: str) -> Any:
    from fedhh.clients.shard import ShardConfig
    from fedhh.clients.shards import start_sharded

    n = args.ingest_processes
    if args.ingest_engine == "ray":
        require("simulation", "--ingest-engine ray")
        from fedhh.clients.ray_shards import ensure_ray

        ensure_ray(n)
    base = ShardConfig(
        index=0,
        shards=n,
        party_id=args.party_id,
        ledger=args.db,
        agent_db=args.db,
        gate=args.db,
        key=creds.key,
        n_users=creds.n_users,
        codec=codec,
        collect_seconds=args.collect_seconds,
        listen=args.listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        shared=n > 1,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    source, port = start_sharded(processes=n, engine=args.ingest_engine, store=store, base=base)
    how = "Ray actors" if args.ingest_engine == "ray" else "processes"
    _endpoint_up(args, port, creds.n_users, f"{n} ingestion {how}")
    return source


def _report_endpoint(args: argparse.Namespace, store: Any, creds: Any, codec: str) -> Any:
    from fedhh.clients.devices import DeviceSource
    from fedhh.clients.endpoint import WORKERS, report_server
    from fedhh.clients.store import GroupCommit

    commit = GroupCommit(store, min_rows=WORKERS)
    source = DeviceSource(creds, codec, store, args.collect_seconds, commit)
    server, port = report_server(
        source, args.listen, tls_cert=args.tls_cert, tls_key=args.tls_key, insecure=args.insecure
    )
    _endpoint_up(args, port, creds.n_users, "one process")
    return source, server


def _endpoint_up(args: argparse.Namespace, port: int, n_users: int, processes: str) -> None:
    """The report endpoint listens on ``port``: its port file and its line in the log."""
    if args.port_file is not None:
        args.port_file.write_text(f"{port}\n")
    mode = "plaintext" if args.insecure else "TLS"
    log.info(
        "report endpoint on %s (port %d, %s): %s, %d enrolled users",
        args.listen,
        port,
        mode,
        processes,
        n_users,
    )
