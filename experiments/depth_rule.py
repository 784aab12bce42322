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
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import Job, grid, map_runs, run_taps, study_dataset

# The baby names go local after their first level under either test (the parties differ by
# sector and sex far beyond the noise), so they are left out of the default list.
DATASETS = "zipf-dir0.1,zipf-dir0.5,zipf-iid,zipf-perm,zipf-skewed,aol-dir0.1,aol-dir0.5"
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
    args, jobs = grid(__doc__.splitlines()[0], DATASETS)
    scores: dict[tuple[float, str], list[list[float]]] = defaultdict(list)
    for row in map_runs(one_run, jobs, args.jobs):
        scores[(row["eps"], row["ds"])].append([row[v] for v in VARIANTS])
    width = max(len(v) for v in VARIANTS) + 2
    print("TAPS mean F1 over the seeds, k = 16, M = 8")
    print(f"{'dataset':<14}{'ε':<6}" + "".join(f"{v:<{width}}" for v in VARIANTS))
    for (eps, name), v in sorted(scores.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{name:<14}{eps:<6g}" + "".join(f"{x:<{width}.3f}" for x in np.mean(v, axis=0)))
    for eps in sorted({e for e, _ in scores}):
        means = np.mean([np.mean(v, axis=0) for (e, _), v in scores.items() if e == eps], axis=0)
        print(f"{'mean':<14}{eps:<6g}" + "".join(f"{x:<{width}.3f}" for x in means))
    print(
        "reproduce: .venv/bin/python experiments/depth_rule.py "
        f"--datasets {args.datasets} --epsilon {args.epsilon} --seeds {args.seeds}"
    )


if __name__ == "__main__":
    main()
