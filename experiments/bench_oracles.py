"""Benchmark of the frequency oracles (prints figures; not a test).

n = 100,000 users, d = 1,024 candidates, ε = 2, Zipf(1.1) data: perturb and estimate times for
each oracle, OLH decode throughput (hash evaluations per second), and the empirical MSE against
the variance formula. The two decode kernels (compiled numba, numpy fallback) are timed side by
side on the same reports, after a warm-up whose JIT time (compile, or load from numba's on-disk
cache) is printed apart. Wide candidate sets (10^5 and 10^6 prefixes) are then decoded with the
compiled kernel: seed-pool OLH with S = 4,096 and 65,536, plain OLH at |C| = 10^5. A
per-user, per-candidate Python loop in the style of today's Python LDP libraries (one xxhash
call per user × candidate) is timed on a subsample and scaled to n, so that speed-up is
measured in the same run too.

The compiled seed-pool decode is then timed with the pool in blocks of 4,096 rows and in
cache-sized blocks (at ε = 8, g ≈ 2,982: the matrix is 98 MB and the large blocks miss the cache).

Wide levels side by side (issue 22 item 3): a prefix-search level of 2^22 candidates (and of
2^17), |P| prefixes × all 2^s extensions, over 10^6 users, decoded by affine-hash OLH
(olh-affine: a Walsh–Hadamard transform per prefix) and by plain OLH. Plain OLH's n·|C| hash
tests are timed on a subsample of the users and scaled to n (its decode is linear in n); the
affine decode runs on every user. Wall and CPU seconds are both printed: the machine's cores
may be shared.

Reproduce:  .venv/bin/python experiments/bench_oracles.py  [--users N] [--candidates D] [--no-wide]
            [--epsilon 8] [--levels-only] [--level-users 1000000]
"""

from __future__ import annotations

import argparse
import math
import os
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import xxhash

from fedhh.core import codes as cd
from fedhh.oracles import GRR, OLH, OUE, FrequencyOracle, OLHAffine, OLHPool, Reports, Support
from fedhh.oracles.hashing import active_kernel, compiled_kernels, default_threads


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def with_kernel(kernel: str, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the decode kernel ``kernel`` selected (FEDHH_KERNEL)."""

    def run() -> object:
        before = os.environ.get("FEDHH_KERNEL")
        os.environ["FEDHH_KERNEL"] = kernel
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["FEDHH_KERNEL"]
            else:
                os.environ["FEDHH_KERNEL"] = before

    return run


def distinct_labels(rng: np.random.Generator, count: int, bits: int) -> np.ndarray:
    """``count`` distinct random labels below 2^bits, in random order."""
    labels = np.zeros(0, dtype=np.uint64)
    while labels.size < count:
        more = rng.integers(0, 2**bits, size=count + count // 8 + 16, dtype=np.uint64)
        labels = np.unique(np.concatenate([labels, more]))
    return rng.permutation(labels)[:count]


def kernels_side_by_side(
    olh: OLH, olh_reports: Reports, pool: OLHPool, pool_reports: Reports, labels: np.ndarray
) -> None:
    """Both decode kernels on the same reports (whole ``support`` calls), best of 5 each."""
    n, d = olh_reports.n, labels.size
    print(f"\ndecode kernels side by side (n = {n:,}, |C| = {d:,}), whole support() calls")
    sketch = pool.sketch(pool_reports)
    jobs = {
        "plain OLH": (lambda: olh.support(olh_reports, labels), n * d),
        f"seed-pool OLH (S = {pool.pool_size:,})": (
            lambda: pool.support_from_sketch(sketch, labels),
            pool.pool_size * d,
        ),
    }
    print(f"{'decode':<28}{'numpy s':>10}{'numba s':>10}{'ratio':>8}", end="")
    print(f"{'numpy G/s':>11}{'numba G/s':>11}")
    for name, (fn, evals) in jobs.items():
        t_np, c_np = best_of(with_kernel("numpy", fn), 5)
        t_nb, c_nb = best_of(with_kernel("numba", fn), 5)
        assert isinstance(c_np, Support) and isinstance(c_nb, Support)
        assert np.array_equal(c_np.counts, c_nb.counts), "the kernels disagree"
        print(
            f"{name:<28}{t_np:>10.4f}{t_nb:>10.4f}{t_np / t_nb:>7.1f}×"
            f"{evals / t_np / 1e9:>11.2f}{evals / t_nb / 1e9:>11.2f}"
        )


def wide_sets(olh: OLH, values: np.ndarray, seed: int, bits: int) -> None:
    """Decode times of wide candidate sets with the active kernel (bounded memory: no array of
    reports × candidates is made)."""
    rng = np.random.default_rng(seed + 1)
    wide = distinct_labels(rng, 1_000_000, bits)
    print(f"\nwide candidate sets ({active_kernel()} kernel, n = {values.size:,} reports)")
    print(f"{'decode':<30}{'|C|':>11}{'evaluations':>13}{'s':>9}{'G evals/s':>11}{'peak MiB':>10}")
    runs: list[tuple[str, FrequencyOracle, Reports, int]] = []
    for size in (4096, 65536):
        pool = OLHPool(olh.epsilon, pool_size=size)
        reports = pool.perturb(values, np.random.default_rng(2))
        runs += [(f"seed-pool OLH, S = {size:,}", pool, reports, d) for d in (100_000, 1_000_000)]
    runs.append(("plain OLH", olh, olh.perturb(values, np.random.default_rng(3)), 100_000))
    for name, oracle, reports, d in runs:
        cand = wide[:d]
        evals = oracle.decode_evaluations(reports.n, d)
        tracemalloc.start()  # traces the (few, large) arrays the decode allocates
        t, _ = best_of(lambda o=oracle, r=reports, c=cand: o.support(r, c), 1)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{name:<30}{d:>11,}{evals:>13.2e}{t:>9.2f}{evals / t / 1e9:>11.2f}{peak:>10.1f}")
    print("peak MiB: memory the decode allocates (the counts, the reports' hash keys), traced")


def pool_blocks(eps: float, seed: int) -> None:
    """The compiled seed-pool decode with the pool's rows in blocks of 4,096 (before) and in
    cache-sized blocks (kernels.pool_seed_block, now), on the same matrix and candidates: S =
    4,096 seeds × g buckets, |C| = 131,072 (a level of the default plan), one thread."""
    from fedhh.oracles.hashing import HashKeys

    k = compiled_kernels()
    g = OLH(eps).g
    rng = np.random.default_rng(seed + 2)
    size, n_cand = 4096, 1 << 17
    keys = HashKeys.from_seeds(rng.integers(0, 2**63, size=size, dtype=np.uint64))
    flat = rng.integers(0, 100, size=size * g, dtype=np.int64)
    cand = rng.integers(0, 2**40, size=n_cand, dtype=np.uint64)
    x_lo, x_hi = cand & np.uint64(0xFFFFFFFF), cand >> np.uint64(32)
    print(f"\nseed-pool decode blocks (S = {size:,}, g = {g:,}, |C| = {n_cand:,}, one thread)")
    out = {}
    for name, block in (("4,096 rows a block (before)", 4096), ("cache-sized blocks", 0)):
        counts = np.zeros(n_cand, dtype=np.int64)
        t0 = time.perf_counter()
        k.pool_support(keys.a_lo, keys.a_hi, keys.b, flat, g, x_lo, x_hi, counts, block)
        out[name] = (time.perf_counter() - t0, counts)
        print(f"  {name:<30}{out[name][0]:>8.2f} s  rows a block {block or k.pool_seed_block(g)}")
    (t_old, c_old), (t_new, c_new) = out.values()
    assert np.array_equal(c_old, c_new)
    print(f"  same counts; {t_old / t_new:.1f}× faster")


LEVEL_SHAPES = ((1, 22), (32, 17), (1, 17), (32, 12))  # (|P|, s); 32 = κ = 2k at k = 16


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float, object]:
    """Best wall seconds, the CPU seconds of that run (every thread) and the result."""
    best = (math.inf, math.inf, None)
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def wide_levels(eps: float, n: int, seed: int, olh_users: int) -> None:
    """A level of |P| prefixes × 2^s extensions over n users: olh-affine's transform decode of
    every user side by side with plain OLH's hash tests (timed on ``olh_users`` users, scaled
    to n), and the affine estimates' MSE against the variance formula."""
    from fedhh.oracles import affine_kernels

    affine, olh = OLHAffine(eps), OLH(eps)
    seconds, cached = affine_kernels.warm_up()
    how = "loaded from numba's cache" if cached else "compiled, then cached"
    print(f"\nwide levels: n = {n:,} users, ε = {eps}, {default_threads()} decode threads")
    print(f"olh-affine g = {affine.g}, plain OLH g = {olh.g}; JIT {seconds:.2f} s ({how})")
    print(f"{'level':<22}{'oracle':<12}{'users timed':>12}{'decode s':>10}{'cpu s':>8}", end="")
    print(f"{'perturb s':>11}{'MSE/Var':>9}{'speed-up':>10}")
    rng = np.random.default_rng(seed + 5)
    for n_prefixes, s in LEVEL_SHAPES:
        prefixes = np.sort(rng.choice(1 << 10, n_prefixes, replace=False)).astype(np.uint64)
        level = cd.children(prefixes, 10, s)  # 10-bit prefixes, as a level of m = 32 items
        w = np.arange(1, level.size + 1, dtype=float) ** -1.1
        where = rng.choice(level.size, size=n, p=w / w.sum())
        truth = np.bincount(where, minlength=level.size).astype(np.float64)
        values = level[where]
        t_p, _, reports = timed(lambda v=values: affine.perturb(v, np.random.default_rng(1)), 1)
        assert isinstance(reports, Reports)
        t_a, c_a, est = timed(lambda r=reports, c=level: affine.estimate(r, c))
        var = affine.variance(n, level.size + 1, truth)
        mse = float(np.mean((np.asarray(est) - truth) ** 2) / var.mean())
        sub = olh.perturb(values[:olh_users], np.random.default_rng(2))
        t_o, c_o, _ = timed(lambda r=sub, c=level: olh.support(r, c), 1)
        scale = n / olh_users
        name = f"{n_prefixes} × 2^{s} = {level.size:,}"
        print(f"{name:<22}{'olh-affine':<12}{n:>12,}{t_a:>10.2f}{c_a:>8.2f}{t_p:>11.2f}", end="")
        print(f"{mse:>9.3f}{t_o * scale / t_a:>9,.0f}×")
        print(f"{'':<22}{'olh':<12}{olh_users:>12,}{t_o * scale:>10.1f}{c_o * scale:>8.1f}", end="")
        print(f"{'':>11}{'':>9}{'(scaled to n)':>14}")


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
    ap.add_argument("--no-wide", action="store_true", help="skip the wide candidate sets")
    ap.add_argument("--levels-only", action="store_true", help="only the wide levels")
    ap.add_argument("--level-users", type=int, default=1_000_000, help="users of a wide level")
    ap.add_argument("--olh-users", type=int, default=2_000, help="users plain OLH is timed on")
    args = ap.parse_args()
    if args.levels_only:
        wide_levels(args.epsilon, args.level_users, args.seed, args.olh_users)
        print("reproduce: .venv/bin/python experiments/bench_oracles.py --levels-only")
        return
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
    print(f"decode kernel: {active_kernel()} (FEDHH_KERNEL=numpy|numba selects it)")
    if active_kernel() == "numba":  # compile before any timing; the figures never include it
        seconds, cached = compiled_kernels().warm_up()
        how = "loaded from numba's on-disk cache" if cached else "compiled, then cached on disk"
        print(f"JIT of the compiled kernels: {seconds:.2f} s ({how})")
    print(f"{'oracle':<28}{'perturb s':>11}{'estimate s':>12}{'Mevals/s':>10}{'MSE/Var':>9}")
    olh_time = pool_time = math.nan
    olh_reports = pool_reports = None
    for o in oracles:
        t_p, reports = best_of(lambda o=o: o.perturb(values, np.random.default_rng(1), labels))
        t_e, est = best_of(lambda o=o, r=reports: o.estimate(r, labels))
        err = np.asarray(est) - truth
        if isinstance(o, OLHPool):
            _, ucounts = np.unique(values, return_counts=True)
            mass = float(np.sum(ucounts * (ucounts - 1.0))) - truth * (truth - 1.0)
            var = np.array([o.variance(n, d + 1, c, m) for c, m in zip(truth, mass, strict=True)])
            pool_time, pool_reports = t_e, reports
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

    assert olh_reports is not None and pool_reports is not None
    kernels_side_by_side(OLH(eps), olh_reports, OLHPool(eps), pool_reports, labels)
    if not args.no_wide:
        wide_sets(OLH(eps), values, args.seed, args.bits)
    if active_kernel() == "numba":
        pool_blocks(eps, args.seed)
        wide_levels(eps, args.level_users, args.seed, args.olh_users)

    m = args.reference_users
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
