"""When the shared levels should stop (adaptive depth, docs/mechanisms.md §5): TAPS with the χ²
test alone, with the party-excess test added (the default, α = 0.01, and α = 0.05), and going
local after the first level whatever the data, on seeds held out from the study.

The χ² test looks only at the prefixes the sum keeps; at ε ≤ 1 on data where one party holds
much of an item that is rare overall (AOL's "-" query; zipf-perm's permuted heads) the sum
never keeps that item's prefix, the parties look alike on what it does keep, and every level
stays shared, which loses the item. The excess test looks at every candidate of every party.

Measured with TAPS as it was then, its parties ranking the prior's items into their reports
(``prior_by_rank = true``; mechanisms.md §6); the depth test runs before Phase II, so the
report rule does not change which runs go local.

Reproduce (the figures of mechanisms.md §5, about 15 minutes on 2 cores):
  .venv/bin/python experiments/depth_rule.py --epsilon 0.5,1,2 --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import WITHOUT_BABY_NAMES, Job, grid, map_runs, print_means, run_taps, study_dataset

VARIANTS: dict[str, dict[str, Any]] = {
    "χ² only": {"excess_alpha": 0.0},
    "χ² + excess (default)": {},
    "excess α = 0.05": {"excess_alpha": 0.05},
    "local after level 1": {"adaptive_depth": False},
}


def one_run(job: Job) -> dict[str, Any]:
    ds = study_dataset(job)
    row: dict[str, Any] = {"ds": job[0], "eps": job[1]}
    for label, extra in VARIANTS.items():
        res = run_taps(ds, job, prior_by_rank=True, **extra)  # TAPS as its figures were made
        row[label] = ds.evaluate(res.items, res.estimates, 16).f1
    return row


def main() -> None:
    args, jobs = grid(__doc__.splitlines()[0], WITHOUT_BABY_NAMES)
    scores: dict[tuple[float, str], list[Sequence[float]]] = defaultdict(list)
    for row in map_runs(one_run, jobs, args.jobs):
        scores[(row["eps"], row["ds"])].append([row[v] for v in VARIANTS])
    print_means("TAPS mean F1 over the seeds, k = 16, M = 8", scores, list(VARIANTS))
    print(
        "reproduce: .venv/bin/python experiments/depth_rule.py "
        f"--datasets {args.datasets} --epsilon {args.epsilon} --seeds {args.seeds}"
    )


if __name__ == "__main__":
    main()
