"""``fedhh coordinator ...``: argparse set-up and handlers (wired into
:func:`fedhh.cli.build_parser`; the analyst's ``fedhh query ...`` is :mod:`fedhh.server.query`).
gRPC is imported only when a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedhh.cli.common import (
    add_limit_args,
    add_observability_args,
    add_service,
    add_tls_args,
    limits_of,
    setup_logging,
)
from fedhh.core.table import text_table
from fedhh.errors import ParameterError
from fedhh.extras import require

TOKEN_ROLES = ("party", "analyst", "admin")  # the roles a tokens file holds


def add_coordinator_parser(sub: Any) -> None:
    csub = add_service(sub, "coordinator", "the coordinator service (gRPC)")
    serve = csub.add_parser(
        "serve",
        help="serve parties and analysts",
        description="Run the coordinator: parties connect to it, analysts start and read runs.",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:7700",
        metavar="HOST:PORT",
        help="address to serve parties and analysts on (default %(default)s)",
    )
    serve.add_argument(
        "--db",
        type=Path,
        default=Path("fedhh-coordinator.sqlite"),
        help="the coordinator's SQLite state file: runs, results, parties (default %(default)s)",
    )
    serve.add_argument(
        "--tokens",
        type=Path,
        required=True,
        help="tokens file (JSON) of the tokens that may connect (fedhh coordinator add-token)",
    )
    add_tls_args(serve)
    serve.add_argument(
        "--deadline",
        type=float,
        default=300.0,
        help="seconds a party has to answer a request, for runs whose spec sets no "
        "deadline_seconds (default %(default)s)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 << 20,
        help="largest gRPC message sent or received, in bytes, 1 KiB..1 GiB (default 16 MiB)",
    )
    serve.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=10.0,
        help="how often parties send a heartbeat (told to them when they register)",
    )
    add_limit_args(
        serve.add_argument_group("resource limits (runs over them are refused when started)"),
        "this coordinator accepts",
    )
    serve.add_argument("--port-file", type=Path, help="write the bound port here")
    add_observability_args(serve)
    serve.set_defaults(func=cmd_coordinator_serve)

    tok = csub.add_parser(
        "add-token",
        help="create a bearer token",
        description="Create a token for a party (bound to its id), an analyst or an admin; write "
        "it to --out (mode 600) and append its hash to the tokens file. User devices hold "
        "per-user credentials instead (fedhh party enroll).",
    )
    tok.add_argument("--tokens", type=Path, required=True, help="tokens file (JSON) to extend")
    tok.add_argument(
        "--role",
        choices=TOKEN_ROLES,
        required=True,
        help="party (bound to its id), analyst (its own runs) or admin (every run)",
    )
    tok.add_argument("--name", required=True, help="party id or analyst name")
    tok.add_argument("--out", type=Path, required=True, help="file to write the token to")
    tok.add_argument(
        "--replace",
        action="store_true",
        help="the name has a token already: issue a new one and revoke the old",
    )
    tok.set_defaults(func=cmd_add_token)
    add_tokens_parser(csub)
    add_audit_parser(csub)


def add_tokens_parser(csub: Any) -> None:
    toks = csub.add_parser(
        "tokens",
        help="list or revoke the tokens of a tokens file",
        description="List or revoke tokens. A running coordinator reads its tokens file again "
        "within a second of a change: a revoked token is refused from then on, a new one "
        "(fedhh coordinator add-token) accepted, without a restart.",
    ).add_subparsers(dest="tokens_command", required=True)
    ls = toks.add_parser("list", help="role, name and hash prefix of every token")
    ls.add_argument("--tokens", type=Path, required=True, help="the tokens file (JSON)")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    ls.set_defaults(func=cmd_tokens_list)
    rv = toks.add_parser("revoke", help="remove every token of a name")
    rv.add_argument("--tokens", type=Path, required=True, help="the tokens file (JSON)")
    rv.add_argument("--name", required=True, help="party id or analyst name")
    rv.add_argument("--role", choices=TOKEN_ROLES, help="only this role's")
    rv.set_defaults(func=cmd_tokens_revoke)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from fedhh.wire.tokens import list_tokens

    tokens = list_tokens(args.tokens)
    if args.json:
        for t in tokens:
            print(json.dumps(t))
    elif tokens:
        cols = ["role", "name", "sha256"]
        print(text_table(cols, [[str(t[c]) for c in cols] for t in tokens]))
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from fedhh.wire.tokens import revoke_tokens

    n = revoke_tokens(args.tokens, args.name, args.role)
    print(f"revoked {n} token{'s' if n != 1 else ''} of {args.name} in {args.tokens}")
    return 0


def cmd_coordinator_serve(args: argparse.Namespace) -> int:
    require("server", "fedhh coordinator serve")
    setup_logging(args.log_level, args.log_format)
    from fedhh.server.serving import serve

    options = (
        "tls_cert",
        "tls_key",
        "insecure",
        "deadline",
        "max_message_bytes",
        "port_file",
        "heartbeat_seconds",
        "metrics_listen",
    )
    kw = {k: getattr(args, k) for k in options}
    return serve(args.listen, args.db, args.tokens, bounds=limits_of(args), **kw)


def add_audit_parser(csub: Any) -> None:
    aud = csub.add_parser(
        "audit",
        help="read the coordinator's audit log",
        description="Print the audit log kept in the coordinator's state file (read-only; the "
        "coordinator may be running): every start, launch, reply, refusal, failure and result, "
        "with the time, who did it and the run.",
    )
    aud.add_argument("--db", type=Path, required=True, help="the coordinator's state file")
    aud.add_argument("--run", default="", metavar="RUN_ID", help="only this run's entries")
    aud.add_argument("--actor", default="", help="only this token's (or 'coordinator') entries")
    aud.add_argument("--last", type=int, default=0, metavar="N", help="only the last N entries")
    aud.add_argument("--json", action="store_true", help="one JSON object a line")
    aud.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    import datetime

    from fedhh.server.store import read_audit

    if args.last < 0:
        raise ParameterError("--last must be ≥ 0")
    events = read_audit(args.db, args.run, args.actor, args.last)
    if args.json:
        for e in events:
            print(json.dumps(e, ensure_ascii=False))
        return 0
    rows = [
        [
            datetime.datetime.fromtimestamp(e["at"], datetime.UTC).isoformat(timespec="seconds"),
            str(e["actor"]),
            str(e["action"]),
            str(e["run_id"] or "-"),
            str(e["detail"]),
        ]
        for e in events
    ]
    if rows:
        print(text_table(["at", "actor", "action", "run", "detail"], rows))
    return 0


def cmd_add_token(args: argparse.Namespace) -> int:
    from fedhh.wire.tokens import add_token

    add_token(args.tokens, args.role, args.name, args.out, replace=args.replace)
    print(f"{args.role} token for {args.name} written to {args.out}")
    return 0


# --- fedhh query ---------------------------------------------------------------------------------
