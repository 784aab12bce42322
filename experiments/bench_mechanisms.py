"""Speed of one in-process TAPS run (prints figures; not a test).

N users in 8 non-IID parties (Zipf(1.1) over 100,000 random 48-bit labels, Dirichlet(0.5)
split), m = 48, k = 32, ε = 4: wall time and peak memory of one run for each N, to show how cost
grows with N. The target for N = 10^6 is ≤ 20 s and ≤ 2 GB on a 2-core machine. Each N runs in
a fresh process, so the peak memory (max RSS) is that run's own.

Reproduce:  .venv/bin/python experiments/bench_mechanisms.py  [--users 100000 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_run(users: int, mechanism: str) -> dict[str, float]:
    from fedhh.datasets import synthetic_zipf
    from fedhh.engine import simulate
    from fedhh.mechanisms import MechanismParams

    t0 = time.perf_counter()
    ds = synthetic_zipf(
        users, 8, m=48, n_items=100_000, s=1.1, split="dirichlet", alpha=0.5, seed=1
    )
    t_data = time.perf_counter() - t0
    params = MechanismParams(mechanism=mechanism, epsilon=4.0, k=32, m=48, seed=1)
    t1 = time.perf_counter()
    res = simulate(ds.parties, ds.codec, params)
    t_run = time.perf_counter() - t1
    sc = ds.evaluate(res.items, res.estimates, 32)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {
        "users": users,
        "data_s": t_data,
        "run_s": t_run,
        "peak_mib": rss,
        "f1": sc.f1,
        "rounds": res.cost["rounds"],
        "hash_evals": res.cost["hash_evaluations"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--mechanism", default="taps")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.mechanism)))
        return
    print(f"{args.mechanism.upper()} in-process, 8 non-IID parties, m = 48, k = 32, ε = 4")
    print(
        f"{'users':>12}{'data s':>9}{'run s':>9}{'peak MiB':>10}{'F1':>7}{'rounds':>8}"
        f"{'hash evals':>14}"
    )
    for n in args.users:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--mechanism", args.mechanism],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout)
        print(
            f"{r['users']:>12,}{r['data_s']:>9.2f}{r['run_s']:>9.2f}{r['peak_mib']:>10.0f}"
            f"{r['f1']:>7.3f}{r['rounds']:>8}{r['hash_evals']:>14,}"
        )
    print("reproduce: .venv/bin/python experiments/bench_mechanisms.py")


if __name__ == "__main__":
    main()
