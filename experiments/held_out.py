"""What the scripts that measure a rule on held-out seeds share (tune_answer_bar.py,
selection_aware_bar.py, depth_rule.py, prior_report.py): the same command line (datasets, ε,
seeds, jobs), TAPS on a study dataset, the runs in worker processes with a progress line, and
the table of mean scores per dataset and ε."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIG = Path(__file__).resolve().parent / "configs" / "study.toml"
# The study's datasets but the baby names (their runs are the slowest, and they go local after
# the first shared level under every depth rule measured)
WITHOUT_BABY_NAMES = "zipf-dir0.1,zipf-dir0.5,zipf-iid,zipf-perm,zipf-skewed,aol-dir0.1,aol-dir0.5"
Job = tuple[str, float, int]  # dataset, ε, seed
T = TypeVar("T")


def grid(
    description: str,
    datasets: str | None = None,
    options: Callable[[argparse.ArgumentParser], Any] | None = None,
) -> tuple[argparse.Namespace, list[Job]]:
    """The parsed command line and its jobs: every dataset × ε × seed (``datasets``: the default
    list, comma-separated; all of the study config's when None; ``options`` adds a script's own
    arguments). Seeds 5–9 by default, held out from the study's 0–4."""
    cfg = tomllib.loads(CONFIG.read_text())
    ap = argparse.ArgumentParser(description=description)
    if options is not None:
        options(ap)
    ap.add_argument("--datasets", default=datasets or ",".join(cfg["datasets"]))
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
    return args, jobs


def map_runs(fn: Callable[[T], Any], jobs: Sequence[T], workers: int) -> Iterator[Any]:
    """``fn`` of every job in ``workers`` processes, in order, with ``i/n runs`` on stderr."""
    with ProcessPoolExecutor(workers) as ex:
        for i, row in enumerate(ex.map(fn, jobs), 1):
            print(f"\r{i}/{len(jobs)} runs", end="", file=sys.stderr, flush=True)
            yield row
    print(file=sys.stderr)


def study_dataset(job: Job) -> Any:
    """The study dataset of ``job``: its config's federation, M = 8, data seed = the job's."""
    from study import dataset_for

    name, _, seed = job
    return dataset_for(tomllib.loads(CONFIG.read_text()), name, 8, seed)


def run_taps(ds: Any, job: Job, k: int = 16, **params: Any) -> Any:
    """The run result of TAPS on ``ds`` at the job's ε with run seed = the job's seed
    (``params``: other MechanismParams fields, ``mechanism`` too for another mechanism)."""
    from fedhh.mechanisms import MechanismParams
    from fedhh.run.engine import simulate

    _, eps, seed = job
    fields = {"mechanism": "taps", **params}
    p = MechanismParams(epsilon=eps, k=k, m=ds.m, seed=seed, **fields)
    return simulate(ds.parties, ds.codec, p)


def taps_top_k(job: Job, k: int = 16, **params: Any) -> tuple[Any, Any, Any]:
    """(dataset, run result, answer as ``Combined``) of TAPS with the top-k answer
    (``answer_alpha = 0``; ``params``: other MechanismParams fields) on the study dataset of
    ``job``."""
    from fedhh.mechanisms.plans import Combined

    ds = study_dataset(job)
    res = run_taps(ds, job, k, answer_alpha=0.0, **params)
    answer = Combined(res.items, res.estimates, res.stderrs, np.asarray(res.contributors))
    return ds, res, answer


def print_means(
    title: str,
    scores: Mapping[tuple[float, str], Sequence[Sequence[float]]],
    labels: Sequence[str],
    fmt: str = ".3f",
    pad: int = 2,
) -> None:
    """``title``, then the mean over the seeds of each label's score per dataset and ε
    (``scores[(ε, dataset)]``: one row per seed, a score per label, in ``labels``' order), then
    per ε the mean of those means over the datasets."""
    width = max(len(v) for v in labels) + pad
    print(title)
    print(f"{'dataset':<14}{'ε':<6}" + "".join(f"{v:<{width}}" for v in labels))
    means = {key: np.mean(np.asarray(rows, dtype=float), axis=0) for key, rows in scores.items()}
    for (eps, name), m in sorted(means.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{name:<14}{eps:<6g}" + "".join(f"{x:<{width}{fmt}}" for x in m))
    for eps in sorted({e for e, _ in means}):
        mean = np.mean([m for (e, _), m in means.items() if e == eps], axis=0)
        print(f"{'mean':<14}{eps:<6g}" + "".join(f"{x:<{width}{fmt}}" for x in mean))


def _variant_run(job_variants: tuple[Job, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    job, variants = job_variants
    ds = study_dataset(job)
    row: dict[str, Any] = {"ds": job[0], "eps": job[1]}
    for label, params in variants.items():
        res = run_taps(ds, job, **params)
        score = ds.evaluate(res.items, res.estimates, 16)
        n = len(res.items)
        row[label] = (score.f1, n - round(score.precision * n))  # F1, wrong items answered
    return row


def compare_variants(
    description: str, variants: Mapping[str, Mapping[str, Any]], script: str
) -> None:
    """Run every variant (label → MechanismParams fields; TAPS unless ``mechanism`` says) on
    the held-out grid of the command line (``--variants`` picks some), and print mean F1 and
    the wrong items answered per run (k = 16, M = 8) with the command that reproduces them."""

    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--variants", default=",".join(variants), help="of: " + ", ".join(variants))

    args, jobs = grid(description, WITHOUT_BABY_NAMES, options)
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(variants)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(variants)}")
    picked = {v: dict(variants[v]) for v in chosen}
    scores: dict[tuple[float, str], list[list[tuple[float, int]]]] = {}
    for row in map_runs(_variant_run, [(j, picked) for j in jobs], args.jobs):
        scores.setdefault((row["eps"], row["ds"]), []).append([row[v] for v in chosen])
    for what, col, fmt in (("F1", 0, ".3f"), ("wrong items answered", 1, ".2f")):
        column = {key: [[s[col] for s in seed] for seed in rows] for key, rows in scores.items()}
        print_means(f"mean {what} over the seeds, k = 16, M = 8", column, chosen, fmt, pad=4)
    print(
        f"reproduce: .venv/bin/python experiments/{script} --datasets {args.datasets} "
        f"--epsilon {args.epsilon} --seeds {args.seeds} --variants {args.variants}"
    )
