"""A noise bar that accounts for the parties' selected reports, measured against the answer's
noise bar (docs/mechanisms.md §5, "The bar ignores that the sum is selected"). Not adopted.

Each party reports only its top-2k, so an item several parties reported has a sum of selected
estimates. The selection-aware bar keeps an item that one party reported when its z passes
Φ̄⁻¹((α/2)/N) (N as the answer's bar); an item reported by a set S of c ≥ 2 parties when one of
them alone passes that bar, or when C(M, c)·min_S |C_i|·P(Z_i ≥ t_i for i ∈ S, Σ w_i Z_i ≥ z)
≤ α/(2(M − 1)), with t_i the lowest z party i reported, w_i = SE_i/√Σ SE² and z the item's
combined z (the probability of independent standard normals, computed by convolving truncated
normals on a grid).

Runs TAPS with the top-k answer (``answer_alpha = 0``) on seeds held out from the study and cuts
each answer with both bars (post-processing: one run serves both). The parties' final reports
are taken by wrapping ``plans._final_candidates``, which the coordinator calls with them; runs
that stay shared to the end do not call it and answer alike under both bars (left out).

Measured with TAPS as it was then, its parties ranking the prior's items into their reports
(``prior_by_rank = true``; mechanisms.md §6), which is what produced the many-party noise sums
the bar was meant to catch.

Reproduce (the figures of mechanisms.md §5, about 20 minutes on 2 cores):
  .venv/bin/python experiments/selection_aware_bar.py --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import Job, grid, map_runs, taps_top_k

ALPHA = 0.25
DATASETS = "zipf-dir0.1,zipf-dir0.5,zipf-iid,zipf-perm,zipf-skewed,aol-dir0.1,aol-dir0.5"


def selected_tail(floors: Sequence[float], weights: Sequence[float], z: float) -> float:
    """P(Z_i ≥ floors_i for every i and Σ weights_i·Z_i ≥ z), Z_i independent N(0, 1): the
    product of the P(Z_i ≥ t_i) and the tail of the sum of the truncated normals (densities
    convolved on a grid of step h; a bin counts when its upper end reaches z: an upper bound)."""
    h = 0.005
    dist: np.ndarray | None = None
    start, log_p = 0.0, 0.0
    for t, w in zip(floors, weights, strict=True):
        lo = max(t, -8.5)
        log_p += float(norm.logsf(lo))
        edges = np.arange(w * lo, w * (max(lo, 0.0) + 9.0) + h, h)
        mass = np.clip(-np.diff(np.exp(norm.logsf(edges / w) - norm.logsf(lo))), 0.0, None)
        start += float(edges[0])
        dist = mass if dist is None else np.clip(fftconvolve(dist, mass), 0.0, None)
    assert dist is not None
    upper = start + (np.arange(dist.size) + len(floors)) * h
    return math.exp(log_p) * min(1.0, float(dist[upper > z].sum()))


def selection_aware_keep(reports: list[Any], items: np.ndarray, alpha: float) -> np.ndarray:
    """Which answer items the selection-aware bar keeps (``reports``: the parties' final
    ``SearchResult``)."""
    from fedhh.core import codes as cd
    from fedhh.oracles import noise_z

    sizes = [r.levels[-1].candidates for r in reports]
    floors = []
    for r in reports:
        z = r.estimates / r.stderrs
        selected = z.size and cd.count(r.items) < r.levels[-1].candidates
        floors.append(float(z.min()) if selected else -math.inf)
    z_one = noise_z(sum(sizes), alpha / 2)
    budget = alpha / 2 / max(len(reports) - 1, 1)
    keep = []
    for x in items:
        by = [(i, r) for i, r in enumerate(reports) if np.any(r.items == x)]
        est = np.array([float(r.estimates[r.items == x][0]) for _, r in by])
        se = np.array([float(r.stderrs[r.items == x][0]) for _, r in by])
        if len(by) == 1 or np.max(est / se) > z_one:
            keep.append(bool(np.max(est / se) > z_one))
            continue
        z = float(est.sum() / math.sqrt((se**2).sum()))
        p = selected_tail([floors[i] for i, _ in by], se / math.sqrt((se**2).sum()), z)
        scale = math.comb(len(reports), len(by)) * min(sizes[i] for i, _ in by)
        keep.append(p * scale <= budget)
    return np.asarray(keep, dtype=bool)


def one_run(job: Job) -> dict[str, Any] | None:
    from fedhh.core.metrics import f1
    from fedhh.mechanisms import plans

    seen: list[dict[int, Any]] = []
    final_candidates = plans._final_candidates

    def spy(replies: Any) -> int:
        seen.append(dict(replies))
        return final_candidates(replies)

    plans._final_candidates = spy  # the coordinator passes the parties' final reports here
    try:
        ds, _, answer = taps_top_k(job, prior_by_rank=True)  # the TAPS of its figures
    finally:
        plans._final_candidates = final_candidates
    if not seen:
        return None  # shared to the end: no selected reports
    reports = [r for r in seen[-1].values() if getattr(r, "levels", None)]
    n = final_candidates(seen[-1])
    truth = ds.top_k(16)
    aware = selection_aware_keep(reports, answer.items, ALPHA)
    return {
        "ds": job[0],
        "eps": job[1],
        "bar": f1(answer.above_noise(ALPHA, n).items, truth, 16),
        "aware": f1(answer.items[aware], truth, 16),
    }


def main() -> None:
    args, jobs = grid(__doc__.splitlines()[0], DATASETS)
    scores: dict[tuple[float, str], list[tuple[float, float]]] = defaultdict(list)
    for row in map_runs(one_run, jobs, args.jobs):
        if row is not None:
            scores[(row["eps"], row["ds"])].append((row["bar"], row["aware"]))
    print("mean F1 over the datasets (each the mean over its seeds with selected reports)")
    print(f"{'ε':<6}{'noise bar':<12}{'selection-aware':<16}datasets")
    for e in sorted({k[0] for k in scores}):
        rows = [np.mean(v, axis=0) for (ee, _), v in sorted(scores.items()) if ee == e]
        bar, aware = np.mean(rows, axis=0)
        print(f"{e:<6g}{bar:<12.3f}{aware:<16.3f}{len(rows)}")
    print(
        "reproduce: .venv/bin/python experiments/selection_aware_bar.py "
        f"--datasets {args.datasets} --epsilon {args.epsilon} --seeds {args.seeds}"
    )


if __name__ == "__main__":
    main()
