"""Golden check for items of at most 64 bits (prints figures; not a test).

Runs every mechanism on the demo federation (``fedhh simulate``'s default data), on AOL (48-bit
items) and on the baby names cut to 8 bytes (64-bit items), plus one integer party-file run, and
writes per run a SHA-256 of the answer (items, estimates, standard errors) and the byte costs.
Run it before and after a change to the code representation and compare the two files: for
m ≤ 64 the answers must be bit-identical.

Reproduce:  .venv/bin/python experiments/golden_m64.py OUT.json  [--compare OLD.json]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MECHANISMS = ("pem", "pem-local", "pem-global", "tap", "taps")


def _answer_hash(res: Any) -> str:
    h = hashlib.sha256()
    for arr in (res.items, res.estimates, res.stderrs):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _datasets() -> dict[str, Any]:
    from fedhh.core.items import IntCodec
    from fedhh.datasets import load_aol, load_babynames, load_party_files
    from fedhh.run.settings import DatasetParams, load_dataset

    out: dict[str, Any] = {"demo": load_dataset(DatasetParams())}
    out["aol"] = load_aol(seed=0)
    kw: dict[str, Any] = {"item_bytes": 8, "seed": 0, "max_users": 1_000_000}
    if "truncate" in inspect.signature(load_babynames).parameters:
        kw["truncate"] = True
    out["babynames8"] = load_babynames(**kw)
    tmp = Path(tempfile.mkdtemp(prefix="fedhh-golden-"))
    rng = np.random.default_rng(7)
    files = []
    for i in range(4):  # integer items through party files (--item-bits 20)
        path = tmp / f"p{i}.txt"
        vals = rng.zipf(1.3, size=20_000 + 5_000 * i) % (1 << 20)
        path.write_text("\n".join(str(int(v)) for v in vals) + "\n")
        files.append(path)
    out["int20-files"] = load_party_files(files, codec=IntCodec(20))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--compare", type=Path, help="an earlier output to compare with")
    args = ap.parse_args()
    from fedhh.mechanisms import MechanismParams
    from fedhh.run.engine import simulate

    results: dict[str, Any] = {}
    for name, ds in _datasets().items():
        for mech in MECHANISMS:
            t0 = time.perf_counter()
            params = MechanismParams(mechanism=mech, m=ds.m, epsilon=4.0, k=16, seed=3)
            res = simulate(ds.parties, ds.codec, params)
            key = f"{name}/{mech}"
            results[key] = {
                "answer": _answer_hash(res),
                "rounds": res.cost["rounds"],
                "bytes_to_parties": res.cost["bytes_to_parties"],
                "bytes_to_coordinator": res.cost["bytes_to_coordinator"],
                "f1": ds.evaluate(res.items, res.estimates, 16).f1,
            }
            print(
                f"{key:<24} {results[key]['answer'][:16]}  F1 {results[key]['f1']:.3f}  "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.compare:
        old = json.loads(args.compare.read_text())
        bad = [k for k in old if old[k]["answer"] != results.get(k, {}).get("answer")]
        for k in old:
            for f in ("bytes_to_parties", "bytes_to_coordinator"):
                if old[k][f] != results[k][f]:
                    print(f"{k}: {f} {old[k][f]:,} -> {results[k][f]:,}")
        print("answers identical" if not bad else f"answers differ: {', '.join(bad)}")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
