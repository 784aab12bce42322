"""Which prior items a TAPS party may rank into its report (docs/mechanisms.md §6), on seeds
held out from the study: only those its own search reached (``prior_by_rank = false``, the
default; a prior item it did not reach is reported only when its estimate is significant,
> consensus_z·SE) or every prior item (``prior_by_rank = true``, the rule before); TAP beside.

A party's top-k' is a selection: an item ranked into it carries an estimate selected upwards.
A prior item the party's own search never reached is a candidate only because an earlier party
reported it; ranked in, its upward-selected estimate is added to the earlier party's, and a
noise item one party reported just under the answer's noise bar can pass the bar on that sum.
The bar (§5) counts as noise candidates only the parties' own last-level candidates, which is
true only when every report comes from the party's own search.

Reproduce (about 15 minutes on 2 cores):
  .venv/bin/python experiments/prior_report.py --epsilon 0.5,1,2,4 --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import WITHOUT_BABY_NAMES, Job, grid, map_runs, print_means, run_taps, study_dataset

VARIANTS: dict[str, dict[str, Any]] = {
    "own": {"prior_by_rank": False},  # a party ranks only what its own search reached
    "rank": {"prior_by_rank": True},  # every prior item too
    "TAP": {"mechanism": "tap"},
}


def one_run(job_variants: tuple[Job, list[str]]) -> dict[str, Any]:
    job, variants = job_variants
    ds = study_dataset(job)
    row: dict[str, Any] = {"ds": job[0], "eps": job[1]}
    for label in variants:
        res = run_taps(ds, job, **VARIANTS[label])
        score = ds.evaluate(res.items, res.estimates, 16)
        n = len(res.items)
        row[label] = (score.f1, n - round(score.precision * n))  # F1, wrong items answered
    return row


def _options(ap: Any) -> None:
    ap.add_argument("--variants", default=",".join(VARIANTS), help="of: " + ", ".join(VARIANTS))


def main() -> None:
    args, jobs = grid(__doc__.splitlines()[0], WITHOUT_BABY_NAMES, _options)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    scores: dict[tuple[float, str], list[list[tuple[float, int]]]] = defaultdict(list)
    for row in map_runs(one_run, [(j, variants) for j in jobs], args.jobs):
        scores[(row["eps"], row["ds"])].append([row[v] for v in variants])
    for what, col, fmt in (("F1", 0, ".3f"), ("wrong items answered per run", 1, ".2f")):
        column = {key: [[s[col] for s in seed] for seed in rows] for key, rows in scores.items()}
        title = f"mean {what} over the seeds, k = 16, M = 8"
        print_means(title, column, variants, fmt, pad=4)
    print(
        "reproduce: .venv/bin/python experiments/prior_report.py "
        f"--datasets {args.datasets} --epsilon {args.epsilon} --seeds {args.seeds} "
        f"--variants {args.variants}"
    )


if __name__ == "__main__":
    main()
