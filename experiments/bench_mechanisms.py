"""Speed of one in-process TAPS run (prints figures; not a test).

N users in 8 non-IID parties (Zipf(1.1) over 100,000 random 48-bit labels, Dirichlet(0.5)
split), m = 48, k = 16, ε = 2, with the default level plan (docs/mechanisms.md §10): wall time,
peak memory, the levels each party ran and the decode work of one run for each N, to show how
cost grows with N. Targets on a 2-core machine: N = 400,000 ≤ 10 s, N = 10^6 ≤ 20 s. Each N runs
in a fresh process (so the peak memory is that run's own) after the compiled kernels are loaded
from numba's cache (the load time is printed apart).

Reproduce:  .venv/bin/python experiments/bench_mechanisms.py  [--users 400000 1000000 10000000]

``--widths``: the cost of wide items per run (issue 12): the AOL queries (at most 6 bytes) as
48-bit items and as the same items in a 256-bit width (32 bytes), and a synthetic URL
federation of 20–32-byte items (256 bits, 1,000,000 users): run time, rounds, the levels of the
party that ran most, the users of its first level (share of its users), bytes each way, F1.
Reproduce:  .venv/bin/python experiments/bench_mechanisms.py --widths
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter


def one_run(users: int, mechanism: str, epsilon: float, k: int) -> dict[str, float]:
    from fedhh.datasets import synthetic_zipf
    from fedhh.mechanisms import MechanismParams
    from fedhh.oracles.kernels import warm_up
    from fedhh.run.engine import simulate

    jit_s, _ = warm_up()
    t0 = time.perf_counter()
    ds = synthetic_zipf(
        users, 8, m=48, n_items=100_000, s=1.1, split="dirichlet", alpha=0.5, seed=1
    )
    t_data = time.perf_counter() - t0
    params = MechanismParams(mechanism=mechanism, epsilon=epsilon, k=k, m=48, seed=1)
    t1 = time.perf_counter()
    res = simulate(ds.parties, ds.codec, params)
    t_run = time.perf_counter() - t1
    sc = ds.evaluate(res.items, res.estimates, k)
    per_party = Counter(lv["party"] for lv in res.cost["levels"])
    levels = max(per_party.values(), default=0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {
        "users": users,
        "jit_s": jit_s,
        "data_s": t_data,
        "run_s": t_run,
        "peak_mib": rss,
        "f1": sc.f1,
        "rounds": res.cost["rounds"],
        "levels": levels,
        "hash_evals": res.cost["hash_evaluations"],
    }


def _widen(ds, width: int):  # type: ignore[no-untyped-def]
    """The same federation with its string items in a ``width``-byte codec."""
    from fedhh.core import codes as cd
    from fedhh.core.items import StringCodec
    from fedhh.datasets import FederatedDataset

    codec = StringCodec(width)
    table = codec.encode(ds.codec.item_bytes(ds.global_codes))
    parties = [table[cd.index_of(p, ds.global_codes)] for p in ds.parties]
    return FederatedDataset(ds.name, codec.m, parties, codec, ds.params)


def width_run(case: str, mechanism: str, epsilon: float, k: int) -> dict[str, object]:
    """One run of a ``--widths`` case ("aol-48", "aol-256", "urls-256")."""
    from fedhh.datasets import load_aol, synthetic_urls
    from fedhh.mechanisms import MechanismParams
    from fedhh.oracles.kernels import warm_up
    from fedhh.run.engine import simulate

    warm_up()
    if case == "urls-256":
        ds = synthetic_urls(1_000_000, 8, n_items=10_000, s=1.1, alpha=0.5, seed=1)
    else:
        ds = load_aol(n_parties=8, split="dirichlet", alpha=0.5, seed=1)
        if case == "aol-256":
            ds = _widen(ds, 32)
    params = MechanismParams(mechanism=mechanism, epsilon=epsilon, k=k, m=ds.m, seed=1)
    t0 = time.perf_counter()
    res = simulate(ds.parties, ds.codec, params)
    run_s = time.perf_counter() - t0
    prefix_levels = [lv for lv in res.cost["levels"] if lv["length"] > 0]
    per_party = Counter(lv["party"] for lv in prefix_levels)
    party, levels = per_party.most_common(1)[0]
    sizes = {f"party-{i}": int(n) for i, n in enumerate(ds.party_sizes)}
    first = next(lv for lv in prefix_levels if lv["party"] == party)
    return {
        "case": case,
        "m": ds.m,
        "run_s": run_s,
        "rounds": res.cost["rounds"],
        "levels": levels,
        "first_share": first["reports"] / sizes[party],
        "to_parties": res.cost["bytes_to_parties"],
        "to_coordinator": res.cost["bytes_to_coordinator"],
        "f1": ds.evaluate(res.items, res.estimates, k).f1,
    }


def widths(args: argparse.Namespace) -> None:
    print(
        f"{args.mechanism.upper()} in-process, 8 non-IID parties (Dirichlet 0.5), k = {args.k}, "
        f"ε = {args.epsilon:g}; levels and first-level users: the party that ran most levels"
    )
    print(
        f"{'items':>10}{'m':>5}{'run s':>8}{'rounds':>8}{'levels':>8}{'1st level':>11}"
        f"{'to parties':>13}{'to coord.':>13}{'F1':>7}"
    )
    for case in ("aol-48", "aol-256", "urls-256"):
        cmd = [sys.executable, __file__, "--width-case", case, "--mechanism", args.mechanism]
        cmd += ["--epsilon", str(args.epsilon), "-k", str(args.k)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(
            f"{r['case']:>10}{r['m']:>5}{r['run_s']:>8.1f}{r['rounds']:>8}{r['levels']:>8}"
            f"{r['first_share']:>10.0%} {r['to_parties']:>12,}{r['to_coordinator']:>13,}"
            f"{r['f1']:>7.3f}"
        )
    print("reproduce: .venv/bin/python experiments/bench_mechanisms.py --widths")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[400_000, 1_000_000, 10_000_000])
    ap.add_argument("--mechanism", default="taps")
    ap.add_argument("--epsilon", type=float, default=2.0)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--widths", action="store_true", help="48- against 256-bit items")
    ap.add_argument("--width-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.width_case:
        print(json.dumps(width_run(args.width_case, args.mechanism, args.epsilon, args.k)))
        return
    if args.widths:
        widths(args)
        return
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.mechanism, args.epsilon, args.k)))
        return
    print(
        f"{args.mechanism.upper()} in-process, 8 non-IID parties, m = 48, k = {args.k}, "
        f"ε = {args.epsilon:g}"
    )
    print(
        f"{'users':>12}{'jit s':>7}{'data s':>9}{'run s':>9}{'peak MiB':>10}{'F1':>7}"
        f"{'rounds':>8}{'levels':>8}{'hash evals':>16}"
    )
    for n in args.users:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--mechanism",
                args.mechanism,
                "--epsilon",
                str(args.epsilon),
                "-k",
                str(args.k),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout)
        print(
            f"{r['users']:>12,}{r['jit_s']:>7.2f}{r['data_s']:>9.2f}{r['run_s']:>9.2f}"
            f"{r['peak_mib']:>10.0f}{r['f1']:>7.3f}{r['rounds']:>8}{r['levels']:>8}"
            f"{r['hash_evals']:>16,}"
        )
    print("reproduce: .venv/bin/python experiments/bench_mechanisms.py")


if __name__ == "__main__":
    main()
