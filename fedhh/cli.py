"""The ``fedhh`` command line.

``fedhh simulate`` runs coordinator and parties in one process; with no arguments it runs the
embedded default (TAPS on a non-IID synthetic federation). Its data and mechanism flags are
derived from :class:`~fedhh.settings.DatasetParams` and
:class:`~fedhh.mechanisms.params.MechanismParams` (:mod:`fedhh.settings`). Bad input gives one
clear error line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fedhh import __version__, settings
from fedhh.engine import expected_rounds, simulate
from fedhh.errors import FedHHError
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.registry import Rounds
from fedhh.protocol import Progress
from fedhh.report import code_labels, format_table, result_document

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(EXIT_USAGE, f"fedhh: error: {message}\n")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def add_service(sub: Any, name: str, help: str) -> Any:
    """``fedhh NAME ...``: a command with sub-commands (returns their subparsers)."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def add_tls_args(p: argparse.ArgumentParser, what: str = "server") -> None:
    """A service's certificate and key, or --insecure (shared by the gRPC services)."""
    g = p.add_argument_group("transport security")
    g.add_argument("--tls-cert", type=Path, help=f"{what} certificate (PEM)")
    g.add_argument("--tls-key", type=Path, help=f"{what} private key (PEM)")
    g.add_argument("--insecure", action="store_true", help="plaintext (local use only)")


def add_connect_args(p: argparse.ArgumentParser, token_help: str) -> None:
    """How a client reaches the coordinator (``fedhh query``, ``fedhh party serve``)."""
    p.add_argument(
        "--coordinator",
        required=True,
        metavar="HOST:PORT",
        help="the coordinator's address (fedhh coordinator serve --listen)",
    )
    p.add_argument("--token-file", type=Path, required=True, help=token_help)
    p.add_argument("--ca-cert", type=Path, help="CA certificate that signed the server's (PEM)")


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
    from fedhh.protocol.admission import DEFAULT_BUDGET, DEFAULT_MAX_EPSILON

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


def budgets_of(args: argparse.Namespace, party_ids: Sequence[str]) -> dict[str, Any]:
    """Each party's ledger as the budget flags set it, before any run (fresh users)."""
    from fedhh.protocol.admission import fresh_budget

    view = fresh_budget(args.epsilon_budget, args.max_epsilon)
    return {pid: view for pid in party_ids}


def limits_of(args: argparse.Namespace) -> Any:
    from fedhh.protocol.limits import Limits

    return Limits(args.max_k, args.max_candidates, args.max_memory_mb)


def _add_simulate_args(p: argparse.ArgumentParser) -> None:
    settings.add_data_flags(
        p,
        "data (default: a non-IID synthetic federation; data files are read from --data-path, "
        "$FEDHH_DATA_DIR or ../shared/data/ beside the project)",
        "one file per party, one item per line (repeat for each party)",
    )
    settings.add_flags(p, MechanismParams, "mechanism (docs/mechanisms.md)")
    g = p.add_argument_group("output")
    g.add_argument(
        "--reference-draws",
        type=int,
        default=20,
        metavar="R",
        help="draws of the known-domain reference F1 shown with the evaluation (0: none; "
        "default %(default)s)",
    )
    g.add_argument("--output", type=Path, help="write the result document (JSON) here")
    g.add_argument(
        "--run-id",
        default="run-1",
        metavar="ID",
        help="the run's id, carried in every message and the result document (%(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress display and no table")
    limits = p.add_argument_group("privacy budget and limits (checked before any work)")
    add_budget_args(limits, "each party's users")
    add_limit_args(limits, "of this run")
    g.add_argument(
        "--engine",
        choices=["inprocess", "flower"],
        default="inprocess",
        help="inprocess (default) or flower: Flower's simulation engine (Ray, 1 CPU per party)",
    )


class ProgressLine:
    """A one-line progress display on stderr (only when stderr is a terminal)."""

    def __init__(self, total_rounds: int, enabled: bool) -> None:
        self.total = total_rounds
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        if progress.done:
            sys.stderr.write("\r\033[K")
        else:
            # the coordinator's bounds: "≤" while adaptive depth may still share levels
            rounds = progress.rounds or Rounds(0, self.total)
            sys.stderr.write(
                f"\r\033[K{rounds.label(progress.round)} · {progress.phase} · "
                f"{progress.outstanding} part{'y' if progress.outstanding == 1 else 'ies'} working"
            )
        sys.stderr.flush()


def cmd_simulate(args: argparse.Namespace) -> int:
    data, ds = settings.data_from_flags(args)
    params = settings.from_flags(MechanismParams, args, m=ds.m)
    if args.reference_draws < 0:
        raise FedHHError("--reference-draws must be ≥ 0")
    from fedhh.protocol.admission import admit_run

    ids = [f"party-{i}" for i in range(ds.n_parties)]
    bounds, budgets = limits_of(args), budgets_of(args, ids)
    admit_run(params, ids, [int(n) for n in ds.party_sizes], bounds, budgets=budgets)
    if not args.quiet:
        print(ds.describe(), file=sys.stderr)
    if args.engine == "flower":
        if data.dataset == "babynames" and not args.party_file:
            raise FedHHError("--dataset babynames runs with --engine inprocess only (for now)")
        from fedhh.flower_sim import run_config_for, simulate_flower  # Flower simulation (Ray)

        cfg = run_config_for(
            params, data, n_parties=ds.n_parties, party_files=args.party_file, run_id=args.run_id
        )
        result = simulate_flower(cfg, ds.n_parties)
    else:
        progress = ProgressLine(expected_rounds(params, ds.n_parties), not args.quiet)
        result = simulate(
            ds.parties,
            ds.codec,
            params,
            progress=progress,
            bounds=bounds,
            budgets=budgets,
            run_id=args.run_id,
        )
    scores = ds.evaluate(result.items, result.estimates, params.k)
    reference = (
        ds.reference(params.epsilon, params.k, params.seed, repeats=args.reference_draws)
        if args.reference_draws > 0
        else None
    )
    doc = result_document(result, ds.codec, scores, dataset=ds.summary(), reference=reference)
    if args.output is not None:
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.quiet:
        codes = code_labels(ds.global_codes, ds.m)
        truth = dict(zip(codes, ds.global_counts.tolist(), strict=True))
        print(format_table(doc, truth))
        if args.output is not None:
            print(f"result written to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedhh", description="Federated heavy hitters under ε-LDP.")
    parser.add_argument("--version", action="version", version=f"fedhh {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sim = sub.add_parser(
        "simulate",
        help="run coordinator and parties in one process",
        description="Run PEM-Local, PEM-Global, TAP or TAPS in one process and print the top-k.",
    )
    _add_simulate_args(sim)
    sim.set_defaults(func=cmd_simulate)
    from fedhh.clients.cli import add_party_parser  # deployment over gRPC
    from fedhh.server.cli import add_coordinator_parser, add_query_parser

    add_coordinator_parser(sub)
    add_party_parser(sub)
    add_query_parser(sub)
    from fedhh.deploy import add_deploy_parser  # all of it on this machine, in one command
    from fedhh.flower_run import add_flower_parser  # flwr run with the run's status

    add_deploy_parser(sub)
    add_flower_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except FedHHError as exc:
        print(f"fedhh: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(
            f"fedhh: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print("fedhh: interrupted", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
