"""Choose the answer's noise bar α (docs/mechanisms.md §5) on seeds held out from the study.

Runs TAPS with the top-k answer (``answer_alpha = 0``) on the study's datasets and scores that
answer cut at the noise bar of each α (``Combined.above_noise`` with N, the candidates of the
last full-length levels, as the mechanism counts them): the bar is post-processing, so one run
serves every α. Prints mean F1 over the datasets per ε and α.

Reproduce (the figures of mechanisms.md §5, about 40 minutes on 2 cores):
  .venv/bin/python experiments/tune_answer_bar.py --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIG = Path(__file__).resolve().parent / "configs" / "study.toml"
ALPHAS = (0.0, 0.05, 0.25, 1.0, 4.0)


def one_run(job: tuple[str, float, int]) -> dict[str, Any]:
    from study import _dataset

    from fedhh.engine import simulate
    from fedhh.mechanisms import MechanismParams
    from fedhh.mechanisms.plans import Combined
    from fedhh.metrics import f1
    from fedhh.report import noise_bar

    name, eps, seed = job
    cfg = tomllib.loads(CONFIG.read_text())
    spec = json.dumps(dict(cfg["datasets"][name]), sort_keys=True)
    ds = _dataset(name, spec, 8, seed, int(cfg["study"].get("users", 200_000)))
    params = MechanismParams(
        mechanism="taps", epsilon=eps, k=16, m=ds.m, seed=seed, answer_alpha=0.0
    )
    res = simulate(ds.parties, ds.codec, params)
    answer = Combined(res.items, res.estimates, res.stderrs, np.asarray(res.contributors))
    n = noise_bar(res.cost["levels"], ds.m).candidates
    truth = ds.top_k(16)
    return {
        "ds": name,
        "eps": eps,
        "f1": {a: f1(answer.above_noise(a, n).items, truth, 16) for a in ALPHAS},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cfg = tomllib.loads(CONFIG.read_text())
    ap.add_argument("--datasets", default=",".join(cfg["datasets"]))
    ap.add_argument("--epsilon", default="0.5,1,2,4")
    ap.add_argument("--seeds", default="5,6,7,8,9")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    jobs = [
        (d, float(e), int(s))
        for d in args.datasets.split(",")
        for e in args.epsilon.split(",")
        for s in args.seeds.split(",")
    ]
    scores: dict[tuple[float, str, float], list[float]] = defaultdict(list)
    with ProcessPoolExecutor(args.jobs) as ex:
        for i, row in enumerate(ex.map(one_run, jobs), 1):
            for a in ALPHAS:
                scores[(row["eps"], row["ds"], a)].append(row["f1"][a])
            print(f"\r{i}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print("mean F1 over the datasets (each the mean over its seeds); α = 0: the top-k")
    print("ε      " + "".join(f"α = {a:<8g}" for a in ALPHAS))
    for e in sorted({k[0] for k in scores}):
        names = sorted({k[1] for k in scores if k[0] == e})
        means = [np.mean([np.mean(scores[(e, d, a)]) for d in names]) for a in ALPHAS]
        print(f"{e:<7g}" + "".join(f"{m:<12.3f}" for m in means))
    print(f"reproduce: .venv/bin/python experiments/tune_answer_bar.py --seeds {args.seeds}")


if __name__ == "__main__":
    main()
