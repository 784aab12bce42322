"""``fedhh query ...``, the analyst's command line: argparse set-up, the handler and how runs,
parties, results and privacy blocks are shown as text (wired into :func:`fedhh.cli.build_parser`).
gRPC is imported only when a command runs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from fedhh.cli.common import add_connect_args
from fedhh.core.accounting import METHODS
from fedhh.core.progress import StatusLine
from fedhh.core.table import text_table
from fedhh.errors import ParameterError

RUN_ID_HELP = "the run's id (fedhh query runs lists them)"


def add_query_parser(sub: Any) -> None:
    q = sub.add_parser(
        "query",
        help="ask the coordinator (analyst API)",
        description="Start, list, follow, read and cancel runs at a coordinator.",
    )
    add_connect_args(q, "file holding your token", env=True)
    q.add_argument("--insecure", action="store_true", help="plaintext (local use only)")
    q.add_argument("--json", action="store_true", help="JSON output instead of a table")
    qs = q.add_subparsers(dest="query_command", required=True)
    _json_after(qs)
    qs.add_parser("runs", help="list runs")
    st = qs.add_parser("status", help="a run's state and progress")
    st.add_argument("run_id", help=RUN_ID_HELP)
    wa = qs.add_parser(
        "watch",
        help="follow a run until it ends: a line at each change (streamed by the coordinator)",
        description="One line per change of the run's state, round, phase or waiting parties "
        "(with --json, one JSON object per line), until the run ends; exit status 0 if it is "
        "done, 1 if it failed, was cancelled or --timeout passed (the run goes on).",
    )
    wa.add_argument("run_id", help=RUN_ID_HELP)
    wa.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="stop following after this many seconds (default %(default)s)",
    )
    re_ = qs.add_parser(
        "result",
        help="a finished run's whole result document (fedhh.result/1 JSON)",
        description="The document fedhh simulate --output writes: the answer with estimates "
        "and standard errors, the run's parameters, cost and privacy block (docs/result.md).",
    )
    re_.add_argument("run_id", help=RUN_ID_HELP)
    top = qs.add_parser("top", help="a finished run's top-k with estimates and standard errors")
    top.add_argument("run_id", help=RUN_ID_HELP)
    top.add_argument("-k", type=int, default=0, help="only the first K (default: all)")
    fr = qs.add_parser("freq", help="estimates of given items")
    fr.add_argument("run_id", help=RUN_ID_HELP)
    fr.add_argument("items", nargs="+", help="the items to look up, as text")
    co = qs.add_parser("cost", help="cost and privacy figures of a finished run")
    co.add_argument("run_id", help=RUN_ID_HELP)
    pv = qs.add_parser(
        "privacy",
        help="what a finished run guaranteed, per recipient and per group of users",
        description="The run's privacy block (docs/privacy.md): the local ε₀ of every report, "
        "and the central (ε_c, δ) towards the coordinator, the other parties and the analyst, for "
        "every group of users and for the run.",
    )
    pv.add_argument("run_id", help=RUN_ID_HELP)
    sp = qs.add_parser("start", help="start a run from a run spec file (TOML)")
    sp.add_argument(
        "spec",
        type=Path,
        help="the run spec (TOML): parties = [...], optional run_id, policy, deadline_seconds "
        "and a [params] table of mechanism parameters",
    )
    sp.add_argument(
        "--wait",
        action="store_true",
        help="wait until the run ends (exit status 1 if it fails or is cancelled), with its "
        "progress on stderr",
    )
    sp.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="with --wait: give up waiting after this many seconds, exit status 1; the run goes "
        "on (default %(default)s)",
    )
    ca = qs.add_parser("cancel", help="cancel a run")
    ca.add_argument("run_id", help=RUN_ID_HELP)
    qs.add_parser("parties", help="registered parties: last heartbeat, users, privacy budget")
    q.set_defaults(func=cmd_query)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    return text_table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "-"
    return "" if v is None else str(v)


RUN_COLS = ["run_id", "state", "mechanism", "round", "phase", "outstanding", "failed_parties"]
BUDGET_COLS = ("epsilon_budget", "epsilon_remaining")  # shown to admins only
PARTY_COLS = [
    "party_id",
    "source",
    "n_users",
    "seconds_since_seen",
    "epsilon_budget",
    "epsilon_remaining",
]


def _waiting_for(info: dict[str, Any]) -> str:
    """For a waiting run: the parties it waits for (those that have not registered)."""
    missing = [p["party_id"] for p in info.get("parties", []) if not p.get("registered")]
    if info.get("state") != "waiting" or not missing:
        return ""
    return f"waiting for {', '.join(missing)} to register"


def _positive_timeout(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ParameterError("--timeout must be a number of seconds > 0")


def _progress_text(info: dict[str, Any]) -> str:
    """What a followed run's status says, on one line."""
    parts = [f"run {info['run_id']}: {_waiting_for(info) or info['state']}"]
    if info.get("round"):
        parts.append(f"round {info['round']}")
    if info.get("phase"):
        parts.append(str(info["phase"]))
    if info.get("outstanding"):
        parts.append(
            f"{info['outstanding']} part{'y' if info['outstanding'] == 1 else 'ies'} working"
        )
    if info.get("state") in ("failed", "cancelled") and info.get("error"):
        parts.append(str(info["error"]))
    return " · ".join(parts)


def _json_after(qs: Any) -> None:
    """``--json`` after the subcommand too (``fedhh query top RUN --json``): every subparser
    made from ``qs`` takes it, without overriding the one given before the subcommand."""
    make = qs.add_parser

    def add_parser(*a: Any, **kw: Any) -> Any:
        p = make(*a, **kw)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
        return p

    qs.add_parser = add_parser


def _freq_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An item outside the answer has no estimate: shown as "-", not 0.0 ± 0.0."""
    return [
        r if r.get("found") else {**r, "estimate": "-", "stderr": "-", "rank": "-"} for r in rows
    ]


def _cost_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {x:,}" if isinstance(x, int) else f"{k} {x}" for k, x in v.items())
    return f"{v:,}" if isinstance(v, int) else str(v)


PRIVACY_BUDGET_COLS = (  # admins only
    "epsilon_budget",
    "max_epsilon",
    "epsilon_remaining",
    "max_central_epsilon",
    "central_spent",
)


def _spent(c: dict[str, Any] | None) -> str:
    """A party's composed central guarantee as text: ``(ε, δ) over N runs``."""
    if not c:
        return "-"
    return f"({c['epsilon']:.4g}, {c['delta']:.3g}) over {c['runs']} runs"


def _privacy_table(block: dict[str, Any]) -> str:
    """The privacy block as text: who sees what with which guarantee, then every group."""
    lines = [block.get("statement", ""), ""]
    for who, g in block.get("recipients", {}).items():
        kind = "LDP" if not g["delta"] else f"DP, δ = {g['delta']:g}"
        lines.append(f"{who:<14} ε = {g['epsilon']:.4g} ({kind})")
    central = block.get("central", {})
    if central.get("groups"):
        lines += ["", f"groups ({central.get('bound', '')}):"]
        rows = [
            {**g, "users": f"{g['users']:,}", "central_epsilon": f"{g['central_epsilon']:.4g}"}
            for g in central["groups"]
        ]
        cols = ["party", "phase", "length", "oracle", "users", "central_epsilon", "bound"]
        lines.append(_table(rows, cols))
    budgets = block.get("budgets", {})
    if budgets:
        lines += ["", "each user's budget at each party (what every user has left at least):"]
        hidden = dict.fromkeys(PRIVACY_BUDGET_COLS, "hidden")
        rows = [
            {"party": pid, **b, "central_spent": _spent(b.get("central_spent"))}
            if not b.get("hidden")
            else {"party": pid, **hidden}
            for pid, b in budgets.items()
        ]
        lines.append(_table(rows, ["party", *PRIVACY_BUDGET_COLS]))
        methods = {b["central_spent"]["method"] for b in budgets.values() if "central_spent" in b}
        for m in sorted(methods):  # how the runs' central guarantees were composed
            said = "what the party's runs cost each user towards the coordinator"
            lines.append(f"central_spent: {said}, by {METHODS[m]}")
    return "\n".join(lines)


def cmd_query(args: argparse.Namespace) -> int:
    from fedhh.server.analyst import AnalystClient
    from fedhh.wire.tokens import read_token_file

    if args.insecure and args.ca_cert:
        raise ParameterError("--insecure and --ca-cert exclude each other")
    token = read_token_file(args.token_file)
    status = 0
    out: Any
    with AnalystClient(
        args.coordinator, token=token, ca_cert=args.ca_cert, insecure=args.insecure
    ) as c:
        cmd = args.query_command
        if cmd == "runs":
            out, table = c.runs(), None
            table = _table(out, RUN_COLS)
        elif cmd == "status":
            out = c.status(args.run_id)
            table = "\n".join(
                t for t in (_table([out], [*RUN_COLS, "error"]), _waiting_for(out)) if t
            )
        elif cmd == "watch":
            _positive_timeout(args.timeout)
            out = {}
            for out in c.watch(args.run_id, timeout=args.timeout):
                if args.json:
                    print(json.dumps(out), flush=True)
                else:
                    print(_progress_text(out), flush=True)
            if out.get("state") != "done":
                print(
                    f"fedhh: run {args.run_id} {out.get('state')}: {out.get('error', '')}",
                    file=sys.stderr,
                )
                return 1
            return 0
        elif cmd == "result":
            out = c.document(args.run_id)
            print(json.dumps(out, indent=2, ensure_ascii=False))
            return 0
        elif cmd == "top":
            if args.k < 0:
                raise ParameterError("-k must be ≥ 0")
            out = c.top(args.run_id, args.k)
            table = _table(out, ["rank", "item", "estimate", "stderr", "parties"])
        elif cmd == "freq":
            out = c.freq(args.run_id, args.items)
            table = _table(_freq_rows(out), ["item", "found", "estimate", "stderr", "rank"])
        elif cmd == "cost":
            out = c.cost(args.run_id)
            cost = out["cost"]
            table = (
                "\n".join(
                    f"{k}: {_cost_value(cost[k])}"
                    for k in (
                        "rounds",
                        "bytes_to_parties",
                        "bytes_to_coordinator",
                        "reports_per_party",
                        "user_report_bytes",
                        "hash_evaluations",
                    )
                    if k in cost
                )
                + "\n"
                + out["privacy"].get("statement", "")
            )
        elif cmd == "privacy":
            out = c.cost(args.run_id)["privacy"]
            table = _privacy_table(out)
        elif cmd == "start":
            _positive_timeout(args.timeout)
            out = c.start_file(args.spec)
            if args.wait:
                line = StatusLine()  # progress on stderr, the table on stdout
                out = c.wait(
                    out["run_id"],
                    timeout=args.timeout,
                    progress=lambda info: line.show(_progress_text(info)),
                )
                line.clear()
                status = 0 if out["state"] == "done" else 1
            table = _table([out], [*RUN_COLS, "error"])
        elif cmd == "parties":
            out = c.parties()
            shown = [
                {**p, **dict.fromkeys(BUDGET_COLS, "hidden")} if p.get("budget_hidden") else p
                for p in out
            ]
            table = _table(shown, PARTY_COLS)
        else:
            out = c.cancel(args.run_id)
            table = _table([out], RUN_COLS)
    print(json.dumps(out, indent=2) if args.json else table)
    if status:
        print(f"fedhh: run {out['run_id']} {out['state']}: {out.get('error', '')}", file=sys.stderr)
    return status
