"""``fedhh compare``: several mechanisms on the same federation, the same ε values and the same
run seeds, in one process, with the known-domain reference beside them; a table of mean ± SD
(over the seeds) of F1 and NCR, and optionally the rows as JSON and a PNG plot of F1 against ε.

Every mechanism answers under the same rule (the run's ``answer_alpha``, default the noise bar;
docs/mechanisms.md §5), and so does the reference. The data is loaded once; a run is
``fedhh simulate`` with the same flags and ``--mechanism M --epsilon E --seed S``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

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
from fedhh.core.table import text_table
from fedhh.errors import ParameterError
from fedhh.extras import require
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.registry import MECHANISMS
from fedhh.protocol.admission import admit_run
from fedhh.run import settings
from fedhh.run.engine import simulate

VARIED = ("mechanism", "epsilon", "seed")  # the flags compare takes as lists instead
REFERENCE = "reference"


def add_compare_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="several mechanisms on the same data, ε values and seeds: a table and a plot",
        description="Run each of --mechanisms at each of --epsilons with each of --seeds on "
        "one federation (loaded once), and the known-domain reference at each ε; print mean ± "
        "SD of F1 and NCR over the seeds. Every other flag is fedhh simulate's, applied to "
        "every run.",
    )
    settings.add_data_flags(
        p,
        "data (as fedhh simulate: default a non-IID synthetic federation)",
        "one file per party, one item per line (repeat for each party)",
    )
    settings.add_flags(p, MechanismParams, "mechanism (docs/mechanisms.md)", skip=VARIED)
    g = p.add_argument_group("what to compare")
    g.add_argument(
        "--mechanisms",
        default="taps,tap,pem-local,pem-global",
        help=f"comma-separated mechanisms ({', '.join(MECHANISMS)}; default %(default)s)",
    )
    g.add_argument("--epsilons", default="1,2,4", help="comma-separated ε (default %(default)s)")
    g.add_argument(
        "--seeds", default="0,1,2", help="comma-separated run seeds (default %(default)s)"
    )
    g.add_argument(
        "--reference-draws",
        type=int,
        default=20,
        metavar="R",
        help="draws of the known-domain reference per ε and seed (0: none; default %(default)s)",
    )
    g.add_argument("--output", type=Path, help="write every row (JSON) here; - for stdout")
    g.add_argument("--plot", type=Path, help="draw F1 against ε here (PNG; the plots extra)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    limits = p.add_argument_group("privacy budget and limits (checked before any work)")
    add_budget_args(limits, "each party's users")
    add_limit_args(limits, "of each run")
    p.set_defaults(func=cmd_compare)


def _list(text: str, kind: type, flag: str) -> list[Any]:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{flag}: expected a comma-separated list, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ParameterError(f"{flag}: give one or more distinct values, got {text!r}")
    return values


def cmd_compare(args: argparse.Namespace) -> int:
    mechanisms = _list(args.mechanisms, str, "--mechanisms")
    epsilons = _list(args.epsilons, float, "--epsilons")
    seeds = _list(args.seeds, int, "--seeds")
    if args.reference_draws < 0:
        raise ParameterError("--reference-draws must be ≥ 0")
    check_output(args.output)
    check_output(args.plot)
    if args.plot is not None:
        require("plots", "fedhh compare --plot")
    say(args, "loading the data ...")
    _, ds = settings.data_from_flags(args)
    base = settings.from_flags(MechanismParams, args, m=ds.m)
    ids = [f"party-{i}" for i in range(ds.n_parties)]
    bounds, budgets = limits_of(args), budgets_of(args, ids)
    runs = [
        dataclasses.replace(base, mechanism=mech, epsilon=eps, seed=seed)
        for mech in mechanisms
        for eps in epsilons
        for seed in seeds
    ]
    for params in runs:  # every run is admitted before the first starts
        admit_run(params, ids, [int(n) for n in ds.party_sizes], bounds, budgets=budgets)
    say(args, ds.describe())
    rows: list[dict[str, Any]] = []
    line = StatusLine(enabled=not args.quiet)
    for i, params in enumerate(runs, 1):
        line.show(
            f"run {i}/{len(runs)}: {params.mechanism} ε={params.epsilon:g} seed {params.seed}"
        )
        result = simulate(ds.parties, ds.codec, params, bounds=bounds, budgets=budgets)
        scores = ds.evaluate(result.items, result.estimates, params.k)
        rows.append(
            {
                "mechanism": params.mechanism,
                "epsilon": params.epsilon,
                "seed": params.seed,
                **scores.as_dict(),
                "rounds": result.cost.get("rounds"),
                "wall_seconds": result.cost.get("wall_seconds"),
            }
        )
    alpha = float(base.resolved().answer_alpha or 0.0)
    if args.reference_draws > 0:
        for eps in epsilons:
            for seed in seeds:
                line.show(f"reference ε={eps:g} seed {seed} ({args.reference_draws} draws)")
                ref = ds.reference(
                    eps, base.k, seed, repeats=args.reference_draws, answer_alpha=alpha
                )
                rows.append(
                    {
                        "mechanism": REFERENCE,
                        "epsilon": eps,
                        "seed": seed,
                        "f1": ref["f1"],
                        "ncr": ref["ncr"],
                    }
                )
    line.clear()
    summary = summarise(rows)
    title = ds.describe().splitlines()[0]
    table = format_summary(summary, epsilons, title, alpha)
    doc = {"format": "fedhh.compare/1", "dataset": ds.summary(), "rows": rows, "summary": summary}
    to_stdout = write_document(doc, args.output)
    print(table, file=sys.stderr if to_stdout else sys.stdout)
    if args.plot is not None:
        plot(summary, epsilons, args.plot, title)
        say(args, f"plot written to {args.plot}")
    return 0


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, SD (ddof 0) and count of F1 and NCR per (mechanism, ε), in the rows' order."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mechanism"], r["epsilon"]), []).append(r)
    out = []
    for (mech, eps), rs in groups.items():
        entry: dict[str, Any] = {"mechanism": mech, "epsilon": eps, "n": len(rs)}
        for m in ("f1", "ncr"):
            v = np.array([float(r[m]) for r in rs])
            entry[f"{m}_mean"], entry[f"{m}_std"] = float(v.mean()), float(v.std())
        out.append(entry)
    return out


def format_summary(
    summary: list[dict[str, Any]], epsilons: list[float], title: str, alpha: float
) -> str:
    """The table: one row per mechanism, one column per ε, "F1 ± SD (NCR)"."""
    by = {(s["mechanism"], s["epsilon"]): s for s in summary}
    names = list(dict.fromkeys(s["mechanism"] for s in summary))
    rule = f"the noise bar at α = {alpha:g}" if alpha > 0 else "the plain top-k"
    head = ["mechanism", *(f"ε = {e:g}" for e in epsilons)]
    body = [[n, *(_cell(by.get((n, e))) for e in epsilons)] for n in names]
    lines = [title, f"F1 ± SD (NCR) over {summary[0]['n']} seed(s); every answer is {rule}", ""]
    return "\n".join([*lines, text_table(head, body)])


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{s['f1_mean']:.3f} ± {s['f1_std']:.3f} ({s['ncr_mean']:.3f})"


def plot(summary: list[dict[str, Any]], epsilons: list[float], path: Path, title: str) -> None:
    """F1 (mean ± SD over the seeds) against ε, one line per mechanism, the reference dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(s["mechanism"] for s in summary):
        pts = sorted((s["epsilon"], s["f1_mean"], s["f1_std"]) for s in summary
                     if s["mechanism"] == name and math.isfinite(s["f1_mean"]))  # fmt: skip
        xs, ys, es = (list(v) for v in zip(*pts, strict=True))
        style: dict[str, Any] = (
            {"linestyle": "--", "color": "0.4"} if name == REFERENCE else {"marker": "o"}
        )
        ax.errorbar(xs, ys, yerr=es, label=name, capsize=3, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
    ax.set_xlabel("ε")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
