"""Benchmark of the frequency oracles (prints figures; not a test).

n = 100,000 users, d = 1,024 candidates, ε = 2, Zipf(1.1) data: perturb and estimate times for
each oracle, OLH decode throughput (hash evaluations per second), and the empirical MSE against
the variance formula. A per-user, per-candidate Python loop in the style of today's Python LDP
libraries (one xxhash call per user × candidate) is timed side by side on a subsample and
scaled to n, so the speed-up is measured in the same run.

Reproduce:  .venv/bin/python experiments/bench_oracles.py  [--users N] [--candidates D]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import xxhash

from fedhh.oracles import GRR, OLH, OUE, FrequencyOracle, OLHPool


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def library_style_decode(seeds: np.ndarray, buckets: np.ndarray, d: int, g: int) -> np.ndarray:
    """How the Python LDP libraries decode OLH: loop over reports, then over candidates."""
    counts = np.zeros(d)
    for seed, y in zip(seeds.tolist(), buckets.tolist(), strict=True):
        for i in range(d):
            if y == xxhash.xxh32(str(i).encode(), seed=seed).intdigest() % g:
                counts[i] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=1024)
    ap.add_argument("--epsilon", type=float, default=2.0)
    ap.add_argument("--bits", type=int, default=32, help="label width of the candidates")
    ap.add_argument("--reference-users", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, d, eps = args.users, args.candidates, args.epsilon

    rng = np.random.default_rng(args.seed)
    labels = rng.choice(2**args.bits, size=d, replace=False).astype(np.uint64)
    ranks = np.arange(1, d + 1, dtype=float) ** -1.1
    values = rng.choice(labels, size=n, p=ranks / ranks.sum())
    truth = np.array([0] * d, dtype=np.float64)
    idx = np.searchsorted(np.sort(labels), values)
    np.add.at(truth, np.argsort(labels)[idx], 1.0)

    oracles: list[FrequencyOracle] = [GRR(eps), OUE(eps), OLH(eps), OLHPool(eps)]
    print(f"n = {n:,} users, d = {d:,} candidates ({args.bits}-bit labels), ε = {eps}, Zipf(1.1)")
    print(f"{'oracle':<28}{'perturb s':>11}{'estimate s':>12}{'Mevals/s':>10}{'MSE/Var':>9}")
    olh_time = pool_time = math.nan
    olh_reports = None
    for o in oracles:
        t_p, reports = best_of(lambda o=o: o.perturb(values, np.random.default_rng(1), labels))
        t_e, est = best_of(lambda o=o, r=reports: o.estimate(r, labels))
        err = np.asarray(est) - truth
        if isinstance(o, OLHPool):
            _, ucounts = np.unique(values, return_counts=True)
            mass = float(np.sum(ucounts * (ucounts - 1.0))) - truth * (truth - 1.0)
            var = np.array([o.variance(n, d + 1, c, m) for c, m in zip(truth, mass, strict=True)])
            pool_time = t_e
        else:
            var = np.array([o.variance(n, d + 1, c) for c in truth])
        evals = ""
        if isinstance(o, OLH):
            evals = f"{n * d / t_e / 1e6:,.0f}"
            olh_time, olh_reports = t_e, reports
        print(
            f"{o.describe():<28}{t_p:>11.3f}{t_e:>12.4f}{evals:>10}"
            f"{np.mean(err**2) / var.mean():>9.3f}"
        )

    m = args.reference_users
    assert olh_reports is not None
    g = OLH(eps).g
    sub_seeds = (olh_reports["seed"][:m] & np.uint64(0xFFFFFFFF)).astype(np.uint64)
    t0 = time.perf_counter()
    library_style_decode(sub_seeds, olh_reports["bucket"][:m], d, g)
    t_ref = (time.perf_counter() - t0) * n / m
    print(
        f"\nlibrary-style per-user loop (xxhash per user × candidate), measured on {m} users "
        f"and scaled to n: {t_ref:.1f} s"
    )
    print(f"plain OLH decode: {olh_time:.3f} s  → {t_ref / olh_time:,.0f}× faster")
    print(f"seed-pool OLH decode: {pool_time:.4f} s  → {t_ref / pool_time:,.0f}× faster")
    print("reproduce: .venv/bin/python experiments/bench_oracles.py")


if __name__ == "__main__":
    main()
