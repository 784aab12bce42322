"""Wall time of one TAPS run in-process, in Flower simulation and on Flower's local deployment
engine, with 3 and 10 parties (prints figures; not a test).

The same run each time: a synthetic Zipf federation (``--users`` users over M parties, Dirichlet
α = 0.5 split, data seed 0), TAPS with ε = 4, k = ``-k``, run seed 0. Every engine must return the
in-process top-k and estimates (checked). Columns:

* ``total``: end to end: in-process = ``simulate()``; simulation = ``run_simulation`` (Ray start,
  virtual SuperNodes, ServerApp, shutdown); deployment = from ``flwr run`` until the result file is
  written and the run is finished (SuperLink/SuperNodes already up; their start-up is ``setup``);
* ``protocol``: the coordinator's rounds only (the result's ``wall_seconds``: from the first
  request to the result, after the discovery step);
* ``per round``: protocol time / rounds.

The deployment engine runs each message in a new ClientApp process and its SuperNodes poll the
SuperLink every 3 s when idle, so a round costs seconds there whatever the data size.

Reproduce:  .venv/bin/python experiments/bench_flower.py  [--users N] [-k K] [--parties 3 10]
            (needs flwr[simulation]==1.42.0 for Ray)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test tooling
from flower_deploy import start_local

from fedhh.datasets import synthetic_zipf
from fedhh.flower.simulation import run_config_for, simulate_flower
from fedhh.mechanisms.params import MechanismParams
from fedhh.run.engine import simulate
from fedhh.run.settings import DatasetParams

ROOT = Path(__file__).resolve().parents[1]


def _row(engine: str, m: int, total: float, protocol: float, rounds: int, setup: str) -> str:
    return (
        f"{engine:<12}{m:>8}{total:>10.2f}{protocol:>11.2f}{protocol / rounds:>11.2f}"
        f"{rounds:>8}  {setup}"
    )


def _same(a_items: np.ndarray, a_est: np.ndarray, b_items: np.ndarray, b_est: np.ndarray) -> None:
    if not (np.array_equal(a_items, b_items) and np.array_equal(a_est, b_est)):
        raise SystemExit("engines disagree: the Flower run differs from the in-process run")


def bench(n_parties: int, users: int, k: int, root: Path, engines: list[str]) -> list[str]:
    ds = synthetic_zipf(users, n_parties, m=32, n_items=10_000, s=1.1, seed=0)
    params = MechanismParams(mechanism="taps", k=k, m=32, seed=0)
    rows = []
    t = time.perf_counter()
    ref = simulate(ds.parties, ds.codec, params)
    total = time.perf_counter() - t
    rounds = int(ref.cost["rounds"])
    rows.append(_row("in-process", n_parties, total, ref.cost["wall_seconds"], rounds, ""))
    print(rows[-1], flush=True)
    cfg = run_config_for(params, DatasetParams(users=users, data_seed=0), n_parties=n_parties)
    if "simulation" in engines:
        t = time.perf_counter()
        res = simulate_flower(cfg, n_parties, total_cpus=os.cpu_count())
        total = time.perf_counter() - t
        _same(ref.items, ref.estimates, res.items, res.estimates)
        rows.append(
            _row(
                "simulation",
                n_parties,
                total,
                res.cost["wall_seconds"],
                rounds,
                "Ray, 1 CPU/client",
            )
        )
        print(rows[-1], flush=True)
    if "deployment" in engines:
        nodes = [
            {"partition-id": i, "num-partitions": n_parties, "users": users, "data-seed": 0}
            for i in range(n_parties)
        ]
        t = time.perf_counter()
        dep = start_local(root / f"deploy-{n_parties}", nodes)
        try:
            setup = time.perf_counter() - t
            t = time.perf_counter()
            doc = dep.run_app(
                ROOT,
                {**cfg, "parties": n_parties},
                root / f"result-{n_parties}.json",
                timeout=1800,
            )
            total = time.perf_counter() - t
        finally:
            dep.stop()
        items = np.array([r["code"] for r in doc["top_k"]], dtype=np.uint64)
        est = np.array([r["estimate"] for r in doc["top_k"]])
        _same(ref.items, ref.estimates, items, est)
        rows.append(
            _row(
                "deployment",
                n_parties,
                total,
                doc["cost"]["wall_seconds"],
                rounds,
                f"SuperLink + {n_parties} SuperNodes up in {setup:.1f} s",
            )
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=30_000, help="users in the whole federation")
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--parties", type=int, nargs="+", default=[3, 10])
    ap.add_argument(
        "--engines", nargs="+", default=["simulation", "deployment"], help="besides in-process"
    )
    args = ap.parse_args()
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        root = Path(tmp)
        os.environ["FLWR_HOME"] = str(root / "flwr-home")
        print(
            f"TAPS, ε = 4, k = {args.k}, m = 32, {args.users:,} users (Zipf 1.1, Dirichlet 0.5), "
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        )
        print(
            f"{'engine':<12}{'parties':>8}{'total s':>10}{'protocol s':>11}{'s/round':>11}"
            f"{'rounds':>8}  setup"
        )
        for m in args.parties:
            bench(m, args.users, args.k, root, args.engines)
    print(
        "reproduce: .venv/bin/python experiments/bench_flower.py --users "
        f"{args.users} -k {args.k} --parties {' '.join(map(str, args.parties))}"
    )


if __name__ == "__main__":
    main()
