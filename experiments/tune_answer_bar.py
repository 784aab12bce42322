"""Choose the answer's noise bar α (docs/mechanisms.md §5) on seeds held out from the study.

Runs TAPS with the top-k answer (``answer_alpha = 0``) on the study's datasets and scores that
answer cut at the noise bar of each α (``Combined.above_noise`` with N, the candidates of the
last full-length levels, as the mechanism counts them): the bar is post-processing, so one run
serves every α. Prints mean F1 over the datasets per ε and α.

Reproduce (the figures of mechanisms.md §5, about 40 minutes on 2 cores):
  .venv/bin/python experiments/tune_answer_bar.py --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import Job, grid, map_runs, taps_top_k

ALPHAS = (0.0, 0.05, 0.25, 1.0, 4.0)


def one_run(job: Job) -> dict[str, Any]:
    from fedhh.core.metrics import f1
    from fedhh.run.result import noise_bar

    ds, res, answer = taps_top_k(job)
    n = noise_bar(res.cost["levels"], ds.m).candidates
    truth = ds.top_k(16)
    return {
        "ds": job[0],
        "eps": job[1],
        "f1": {a: f1(answer.above_noise(a, n).items, truth, 16) for a in ALPHAS},
    }


def main() -> None:
    args, jobs = grid(__doc__.splitlines()[0])
    scores: dict[tuple[float, str, float], list[float]] = defaultdict(list)
    for row in map_runs(one_run, jobs, args.jobs):
        for a in ALPHAS:
            scores[(row["eps"], row["ds"], a)].append(row["f1"][a])
    print("mean F1 over the datasets (each the mean over its seeds); α = 0: the top-k")
    print("ε      " + "".join(f"α = {a:<8g}" for a in ALPHAS))
    for e in sorted({k[0] for k in scores}):
        names = sorted({k[1] for k in scores if k[0] == e})
        means = [np.mean([np.mean(scores[(e, d, a)]) for d in names]) for a in ALPHAS]
        print(f"{e:<7g}" + "".join(f"{m:<12.3f}" for m in means))
    print(f"reproduce: .venv/bin/python experiments/tune_answer_bar.py --seeds {args.seeds}")


if __name__ == "__main__":
    main()
