"""What every ``fedhh`` command shares: the one-line error parser, logging, and the flags of
connections, TLS, resource limits and privacy budgets (the coordinator's, the party agent's and
``fedhh simulate``'s are the same flags with the same defaults)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fedhh.errors import FedHHError

EXIT_FAILURE = 1  # the command ran and failed: a server refused, a run failed
EXIT_USAGE = 2  # bad input: flags, files, parameters
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(EXIT_USAGE, f"fedhh: error: {message}\n")


LOG_LEVELS = ("debug", "info", "warning", "error")


def add_log_level_arg(p: Any) -> None:
    """``--log-level`` of a service (one of :data:`LOG_LEVELS`)."""
    p.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="the least severe log lines written to stderr (default info)",
    )


LOG_FORMATS = ("text", "json")


def add_observability_args(p: Any) -> None:
    """A service's logs and metrics: ``--log-level``, ``--log-format``, ``--metrics-listen``."""
    add_log_level_arg(p)
    p.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object a line (time, level, logger, message) for log "
        "collectors (default text)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (runs, rounds, reports, "
        "refusals, storage errors; docs/architecture.md); default: none",
    )


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def add_service(sub: Any, name: str, help: str) -> Any:
    """``fedhh NAME ...``: a command with sub-commands (returns their subparsers)."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def add_tls_args(p: argparse.ArgumentParser, what: str = "server") -> None:
    """A service's certificate and key, or --insecure (shared by the gRPC services)."""
    g = p.add_argument_group("transport security")
    g.add_argument("--tls-cert", type=Path, help=f"{what} certificate (PEM)")
    g.add_argument("--tls-key", type=Path, help=f"{what} private key (PEM)")
    g.add_argument("--insecure", action="store_true", help="plaintext (local use only)")


CONNECT_ENV = {  # fedhh query's connection flags, when not given on the command line
    "coordinator": "FEDHH_COORDINATOR",
    "token_file": "FEDHH_TOKEN_FILE",
    "ca_cert": "FEDHH_CA_CERT",
}


def add_connect_args(p: argparse.ArgumentParser, token_help: str, env: bool = False) -> None:
    """How a client reaches the coordinator (``fedhh query``, ``fedhh party serve``); with
    ``env`` each flag defaults to its environment variable (:data:`CONNECT_ENV`)."""

    def default(dest: str) -> str | None:
        return os.environ.get(CONNECT_ENV[dest]) or None if env else None

    def says(dest: str) -> str:
        return f" (default: ${CONNECT_ENV[dest]})" if env else ""

    p.add_argument(
        "--coordinator",
        required=default("coordinator") is None,
        default=default("coordinator"),
        metavar="HOST:PORT",
        help="the coordinator's address (fedhh coordinator serve --listen)" + says("coordinator"),
    )
    token = default("token_file")
    p.add_argument(
        "--token-file",
        type=Path,
        required=token is None,
        default=Path(token) if token else None,
        help=token_help + says("token_file"),
    )
    ca = default("ca_cert")
    p.add_argument(
        "--ca-cert",
        type=Path,
        default=Path(ca) if ca else None,
        help="CA certificate that signed the server's (PEM)" + says("ca_cert"),
    )


def add_limit_args(g: Any, who: str) -> None:
    """The resource limits of a coordinator or a party agent (fedhh.protocol.limits); ``who``
    names whose they are in the help texts."""
    from fedhh.protocol.limits import Limits

    default = Limits()
    g.add_argument(
        "--max-k", type=int, default=default.max_k, help=f"largest k {who} (default %(default)s)"
    )
    g.add_argument(
        "--max-candidates",
        type=int,
        default=default.max_candidates,
        help=f"most candidates one level of a run may decode, {who} (default %(default)s)",
    )
    g.add_argument(
        "--max-memory-mb",
        type=float,
        default=default.max_memory_mb,
        help=f"largest estimated memory of a run at a party in MB, {who} (default %(default)s)",
    )


def add_budget_args(g: Any, whose: str) -> None:
    """The privacy budget of a party's users (fedhh.protocol.admission); ``whose`` names whose
    it is in the help texts."""
    from fedhh.core.privacy import DEFAULT_BUDGET, DEFAULT_MAX_EPSILON

    g.add_argument(
        "--epsilon-budget",
        type=float,
        default=DEFAULT_BUDGET,
        metavar="EPS",
        help=f"total ε each of {whose} may spend across all runs (default %(default)g)",
    )
    g.add_argument(
        "--max-epsilon",
        type=float,
        default=DEFAULT_MAX_EPSILON,
        metavar="EPS",
        help=f"largest ε one run may ask of {whose} (default %(default)g)",
    )
    g.add_argument(
        "--max-central-epsilon",
        type=float,
        default=0.0,
        metavar="EPS",
        help=f"largest central ε_c one run may reach for {whose} at the smallest group the "
        "plan makes (FMT's bound at the run's central_delta; docs/privacy.md); 0: no cap",
    )


def budgets_of(args: argparse.Namespace, party_ids: Sequence[str]) -> dict[str, Any]:
    """Each party's ledger as the budget flags set it, before any run (fresh users)."""
    from fedhh.protocol.admission import fresh_budget

    view = fresh_budget(args.epsilon_budget, args.max_epsilon, args.max_central_epsilon)
    return {pid: view for pid in party_ids}


def limits_of(args: argparse.Namespace) -> Any:
    from fedhh.protocol.limits import Limits

    return Limits(args.max_k, args.max_candidates, args.max_memory_mb)


def say(args: argparse.Namespace, text: str) -> None:
    """A line on stderr about what takes a while (unless --quiet)."""
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def check_output(path: Path | None) -> None:
    """Refuse an --output the document cannot be written to before the run, not after it."""
    if path is None or str(path) == "-":
        return
    if path.is_dir():
        raise FedHHError(f"--output {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FedHHError(f"--output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise FedHHError(f"--output {path}: not writable")


def write_document(doc: Any, output: Path | None) -> bool:
    """Write a command's JSON document to ``output`` (``-``: stdout; None: nowhere); True when
    it went to stdout, where the command's table then must not go."""
    if output is None:
        return False
    text = json.dumps(doc, indent=2) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
        return True
    output.write_text(text)
    return False
