"""Where TAPS loses the true top-k (docs/mechanisms.md §6), on seeds held out from the study:
for each of the true top-16 items of every run, whether it was answered, in the summed
reports' top-k but under the noise bar, reported by some party but not in the top-k, or
reported by no party (its prefixes fell out of every holder's search). Runs that stay shared to
the end have no party reports and are left out.

Reproduce (about 5 minutes on 2 cores):
  .venv/bin/python experiments/missed_items.py --epsilon 2 --seeds 5,6 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import WITHOUT_BABY_NAMES, Job, grid, map_runs, run_taps, study_dataset

FATES = ("answered", "under the bar", "not in the top-k", "reported by no party")


def _fates(job: Job) -> tuple[str, float, list[int] | None]:
    import fedhh.mechanisms.plans as plans

    summed: list[Any] = []
    combine = plans.combine

    def keep_sum(parts: Any, bits: int = 64) -> Any:
        out = combine(parts, bits)
        summed.append(out)
        return out

    plans.combine = keep_sum  # the summed party reports, before the top-k and the bar
    try:
        ds = study_dataset(job)
        res = run_taps(ds, job)
    finally:
        plans.combine = combine
    if not summed:  # shared to the end: no party reports
        return job[0], job[1], None
    reports = summed[-1]
    truth = ds.global_codes[np.argsort(-ds.global_counts, kind="stable")[:16]].tolist()
    answered = set(np.asarray(res.items).tolist())
    top, every = set(reports.top(16).items.tolist()), set(reports.items.tolist())
    counts = [0, 0, 0, 0]
    for t in truth:
        counts[0 if t in answered else 1 if t in top else 2 if t in every else 3] += 1
    return job[0], job[1], counts


if __name__ == "__main__":
    args, jobs = grid(__doc__.splitlines()[0], WITHOUT_BABY_NAMES)
    totals: dict[tuple[float, str], np.ndarray] = {}
    for name, eps, counts in map_runs(_fates, jobs, args.jobs):
        if counts is not None:
            totals[(eps, name)] = totals.get((eps, name), np.zeros(4, int)) + counts
    print(f"{'dataset':<14}{'ε':<6}" + "".join(f"{f:<22}" for f in FATES))
    for (eps, name), c in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        print(f"{name:<14}{eps:<6g}" + "".join(f"{x:<22d}" for x in c))
    for eps in sorted({e for e, _ in totals}):
        c = sum(v for (e, _), v in totals.items() if e == eps)
        print(f"{'all':<14}{eps:<6g}" + "".join(f"{x:<22d}" for x in c))
    print(
        f"reproduce: .venv/bin/python experiments/missed_items.py --datasets {args.datasets} "
        f"--epsilon {args.epsilon} --seeds {args.seeds}"
    )
