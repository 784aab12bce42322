"""``fedhh simulate``: coordinator and parties in one process; with no arguments the embedded
default (TAPS on a non-IID synthetic federation). Its data and mechanism flags are derived from
:class:`~fedhh.run.settings.DatasetParams` and :class:`~fedhh.mechanisms.params.MechanismParams`
(:mod:`fedhh.run.settings`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedhh.cli.common import (
    add_budget_args,
    add_limit_args,
    budgets_of,
    check_output,
    limits_of,
    say,
    write_document,
)
from fedhh.core.progress import StatusLine
from fedhh.errors import FedHHError
from fedhh.extras import require
from fedhh.mechanisms.layout import Rounds
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Progress
from fedhh.run import settings
from fedhh.run.engine import expected_rounds, simulate
from fedhh.run.result import code_labels, format_table, result_document


def add_simulate_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="run coordinator and parties in one process",
        description="Run PEM-Local, PEM-Global, TAP or TAPS in one process and print the top-k.",
    )
    _add_simulate_args(sim)
    sim.set_defaults(func=cmd_simulate)


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
    g.add_argument(
        "--output",
        type=Path,
        help="write the result document (JSON) here; - writes it to stdout (the table then goes "
        "to stderr)",
    )
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
    """A run's rounds and phase on the command's status line (:mod:`fedhh.core.progress`; off a
    terminal, a line per new round)."""

    def __init__(self, total_rounds: int, enabled: bool) -> None:
        self.total = total_rounds
        self.line = StatusLine(enabled=enabled)

    def __call__(self, progress: Progress) -> None:
        if progress.done:
            self.line.clear()
            return
        # the coordinator's bounds: "≤" while adaptive depth may still share levels
        rounds = progress.rounds or Rounds(0, self.total)
        self.line.show(
            f"{rounds.label(progress.round)} · {progress.phase} · "
            f"{progress.outstanding} part{'y' if progress.outstanding == 1 else 'ies'} working",
            key=progress.round,
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    check_output(args.output)
    if args.engine == "flower":
        require("simulation", "fedhh simulate --engine flower")
    say(args, "loading the data ...")
    data, ds = settings.data_from_flags(args)
    params = settings.from_flags(MechanismParams, args, m=ds.m)
    if args.reference_draws < 0:
        raise FedHHError("--reference-draws must be ≥ 0")
    from fedhh.protocol.admission import admit_run, budgets_after

    ids = [f"party-{i}" for i in range(ds.n_parties)]
    bounds, budgets = limits_of(args), budgets_of(args, ids)
    admit_run(params, ids, [int(n) for n in ds.party_sizes], bounds, budgets=budgets)
    if not args.quiet:
        print(ds.describe(), file=sys.stderr)
    if args.engine == "flower":
        if data.dataset == "babynames" and not args.party_file:
            raise FedHHError("--dataset babynames runs with --engine inprocess only (for now)")
        from fedhh.flower.simulation import (  # Flower simulation (Ray)
            run_config_for,
            simulate_flower,
        )

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
    if args.reference_draws > 0:
        say(args, f"drawing the known-domain reference ({args.reference_draws} draws) ...")
    reference = (
        ds.reference(
            float(result.params["epsilon"]),  # the run's ε₀ (a central target chose it)
            params.k,
            params.seed,
            repeats=args.reference_draws,
            answer_alpha=float(result.params.get("answer_alpha") or 0.0),  # the run's answer rule
        )
        if args.reference_draws > 0
        else None
    )
    doc = result_document(result, ds.codec, scores, dataset=ds.summary(), reference=reference)
    doc["privacy"]["budgets"] = budgets_after(  # each user's budget at each party, after it
        budgets, float(result.params["epsilon"]), result.cost["reports_per_party"], doc["privacy"]
    )
    to_stdout = write_document(doc, args.output)
    if not args.quiet:
        codes = code_labels(ds.global_codes, ds.m)
        truth = dict(zip(codes, ds.global_counts.tolist(), strict=True))
        shown = sys.stderr if to_stdout else sys.stdout  # stdout holds the document then
        print(format_table(doc, truth), file=shown)
        if args.output is not None and not to_stdout:
            print(f"result written to {args.output}")
    return 0
