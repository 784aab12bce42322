"""The ``fedhh`` command line.

``fedhh simulate`` runs coordinator and parties in one process; with no arguments it runs the
embedded default (TAPS on a non-IID synthetic federation). Bad input gives one clear error line
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from fedhh import __version__
from fedhh.codec import codec_for
from fedhh.datasets import (
    FederatedDataset,
    load_aol,
    load_babynames,
    load_party_files,
    synthetic_zipf,
)
from fedhh.datasets.babynames import PARTY_RULES as BABYNAME_PARTIES
from fedhh.engine import expected_rounds, simulate
from fedhh.errors import FedHHError
from fedhh.mechanisms.params import MECHANISMS, ORACLE_CHOICES, STEP_RULES, MechanismParams
from fedhh.protocol import Progress
from fedhh.report import format_table, result_document

EXIT_USAGE = 2
DEFAULT_PARTIES = 8


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(EXIT_USAGE, f"fedhh: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return v


def _years(text: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        pair = (int(first), int(last) if dash else int(first))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YEAR or FIRST-LAST, got {text!r}") from None
    return pair


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "data (default: a non-IID synthetic federation)",
        "zipf: synthetic Zipf users split by --split; aol: the AOL queries (657,427 users, m = 48) "
        "split by --split; babynames: the Israeli baby-names federation (8,969,719 births, parties "
        "= sector × sex, names truncated to 8 bytes). The data files are read from --data-path, "
        "$FEDHH_DATA_DIR or ../shared/data/ beside the project.",
    )
    g.add_argument("--dataset", choices=["zipf", "aol", "babynames"], default="zipf")
    g.add_argument("--users", type=_positive_int, default=200_000, help="synthetic: users N")
    g.add_argument(
        "--parties",
        type=_positive_int,
        help="zipf/aol: number of parties M (default 8); babynames: see --party-by",
    )
    g.add_argument(
        "--split",
        choices=["dirichlet", "permutation", "iid"],
        default="dirichlet",
        help="zipf/aol: non-IID rule for splitting users into parties",
    )
    g.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration α")
    g.add_argument("--sizes", choices=["equal", "skewed"], default="equal")
    g.add_argument("--items", type=_positive_int, default=10_000, help="synthetic: distinct items")
    g.add_argument("--zipf-s", type=float, default=1.1, help="synthetic: Zipf exponent")
    g.add_argument("--bits", type=_positive_int, default=32, help="synthetic: bits per item m")
    g.add_argument("--data-path", type=Path, help="aol/babynames: the data file or its folder")
    g.add_argument("--max-users", type=_positive_int, help="aol/babynames: keep this many users")
    g.add_argument(
        "--party-by",
        choices=list(BABYNAME_PARTIES),
        help="babynames: parties are sector × sex (default, 8 parties) or sector × decade",
    )
    g.add_argument(
        "--years", type=_years, metavar="FIRST-LAST", help="babynames: keep these birth years"
    )
    g.add_argument(
        "--party-file",
        action="append",
        type=Path,
        metavar="PATH",
        help="one file per party, one item per line (repeat for each party)",
    )
    g.add_argument(
        "--item-bytes",
        type=_positive_int,
        help="party files: items are strings of this many bytes; babynames: item width "
        "(≤ 8, default 8; longer names are truncated)",
    )
    g.add_argument("--item-bits", type=_positive_int, help="party files: items are integers")
    g.add_argument("--data-seed", type=_positive_int, default=0, help="seed of the data split")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mechanism")
    g.add_argument("--mechanism", choices=[m for m in MECHANISMS], default="taps")
    g.add_argument("--epsilon", type=float, default=4.0, help="ε per user (default 4)")
    g.add_argument("-k", type=_positive_int, default=16, help="how many heavy hitters")
    g.add_argument("--oracle", choices=ORACLE_CHOICES, default="auto")
    g.add_argument("--eta", type=_positive_int, default=4, help="PEM / Phase I step in bits")
    g.add_argument("--step-rule", choices=STEP_RULES, default="adaptive")
    g.add_argument("--prune-z", type=float, help="TAP/TAPS prune threshold τ = z·SE")
    g.add_argument("--completion", type=float, default=0.0, help="TAPS completion reserve ρ")
    g.add_argument("--pool-size", type=_positive_int, default=4096, help="olh-pool seeds S")
    g.add_argument("--seed", type=_positive_int, default=0, help="run seed")
    g.add_argument(
        "--reference-draws",
        type=_positive_int,
        default=20,
        metavar="R",
        help="draws of the known-domain reference F1 shown with the evaluation (0: none)",
    )
    g.add_argument("--output", type=Path, help="write the result document (JSON) here")
    g.add_argument("--quiet", action="store_true", help="no progress display and no table")


def load_dataset(args: argparse.Namespace) -> FederatedDataset:
    """The dataset the options describe (party files, AOL, baby names or synthetic)."""
    if args.party_file:
        codec = codec_for(args.item_bytes, args.item_bits)
        return load_party_files(args.party_file, codec=codec)
    if args.dataset != "babynames":
        for flag, value in (("--party-by", args.party_by), ("--years", args.years)):
            if value is not None:
                raise FedHHError(f"{flag} applies to --dataset babynames only")
    if args.dataset == "babynames":
        if args.parties is not None:
            raise FedHHError(
                "--parties does not apply to --dataset babynames: its parties are sector × sex "
                "(or sector × decade with --party-by sector-decade)"
            )
        if args.item_bits is not None:
            raise FedHHError("--item-bits applies to --party-file data only")
        return load_babynames(
            args.data_path,
            party_by=args.party_by or "sector-sex",
            years=args.years,
            item_bytes=8 if args.item_bytes is None else args.item_bytes,
            max_users=args.max_users,
            seed=args.data_seed,
        )
    if args.item_bytes is not None or args.item_bits is not None:
        raise FedHHError("--item-bytes/--item-bits apply to --party-file data only")
    split = "iid" if args.split == "iid" else args.split
    parties = DEFAULT_PARTIES if args.parties is None else args.parties
    if args.dataset == "aol":
        return load_aol(
            args.data_path,
            n_parties=parties,
            split=split,
            alpha=args.alpha,
            sizes=args.sizes,
            seed=args.data_seed,
            max_users=args.max_users,
        )
    return synthetic_zipf(
        args.users,
        parties,
        m=args.bits,
        n_items=args.items,
        s=args.zipf_s,
        split=split,
        alpha=args.alpha,
        sizes=args.sizes,
        seed=args.data_seed,
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
            sys.stderr.write(
                f"\r\033[Kround {progress.round}/{self.total} · {progress.phase} · "
                f"{progress.outstanding} part{'y' if progress.outstanding == 1 else 'ies'} working"
            )
        sys.stderr.flush()


def cmd_simulate(args: argparse.Namespace) -> int:
    ds = load_dataset(args)
    params = MechanismParams(
        mechanism=args.mechanism,
        epsilon=args.epsilon,
        k=args.k,
        m=ds.m,
        oracle=args.oracle,
        eta=args.eta,
        step_rule=args.step_rule,
        prune_z=args.prune_z,
        completion=args.completion,
        pool_size=args.pool_size,
        seed=args.seed,
    )
    if not args.quiet:
        print(ds.describe(), file=sys.stderr)
    if args.engine == "flower":
        if args.dataset == "babynames" and not args.party_file:
            raise FedHHError("--dataset babynames runs with --engine inprocess only (for now)")
        from fedhh.server.flower_sim import simulate_flower_args  # Flower simulation (Ray)

        result = simulate_flower_args(args, params, ds.n_parties)
    else:
        progress = ProgressLine(expected_rounds(params, ds.n_parties), not args.quiet)
        result = simulate(ds.parties, ds.codec, params, progress=progress)
    scores = ds.evaluate(result.items, result.estimates, params.k)
    reference = (
        ds.reference(params.epsilon, params.k, args.seed, repeats=args.reference_draws)
        if args.reference_draws > 0
        else None
    )
    doc = result_document(result, ds.codec, scores, dataset=ds.summary(), reference=reference)
    if args.output is not None:
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.quiet:
        truth = dict(zip(ds.global_codes.tolist(), ds.global_counts.tolist(), strict=True))
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
    _add_dataset_args(sim)
    _add_run_args(sim)
    sim.add_argument(
        "--engine",
        choices=["inprocess", "flower"],
        default="inprocess",
        help="inprocess (default) or flower: Flower's simulation engine (Ray, 1 CPU per party)",
    )
    sim.set_defaults(func=cmd_simulate)
    from fedhh.clients.cli import add_party_parser  # deployment over gRPC
    from fedhh.server.cli import add_coordinator_parser, add_query_parser

    add_coordinator_parser(sub)
    add_party_parser(sub)
    add_query_parser(sub)
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
