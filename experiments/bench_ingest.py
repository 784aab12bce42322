"""What a device party's memory and a level's close cost as its users grow (prints figures; not a
test). Issue 26's targets: memory grows by ≤ 100 MB over 10^7 accepted reports, and a level of
2^17 candidates closes in ≤ 2 s whatever the number of reports.

The party's own ingestion code in this process, without gRPC: a :class:`DeviceSource` on a real
state file (SQLite, synchronous=FULL, the group commit) opens one report task over
``--candidates`` candidates with a quota of ``--reports`` users; pre-made canonical reports are
submitted in batches of ``--batch`` (what ``SubmitReportBatch`` hands it after its checks), the
folding thread folds them into the task's tally as they come, and the close folds the rest and
decodes. Printed: accepted reports/s, the process's resident memory before and after (peak),
the close's seconds, the state file's size, and that the estimates equal those of all the
reports decoded at once (``--check``, which holds them all in memory: use it at small sizes).

Reproduce:  .venv/bin/python experiments/bench_ingest.py --reports 10000000 --candidates 131072
            [--oracle olh-pool] [--batch 5000] [--check]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

from fedhh.clients.credentials import Credentials, new_key
from fedhh.clients.devices import DeviceSource
from fedhh.clients.ingest import ReportChecker
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.mechanisms.local import estimate_reports
from fedhh.oracles import make_oracle
from fedhh.protocol.party import Group

M = 32


def canonical_reports(checker: ReportChecker, batch: object, n: int) -> list[bytes]:
    """The canonical frames of a perturbed batch, without a to_bytes call per report."""
    values = np.zeros(n, dtype=checker.layout)
    for name in checker.layout.names:
        values[name] = batch.arrays[name].reshape(values[name].shape)  # type: ignore[attr-defined]
    body, size, head = values.tobytes(), checker.layout.itemsize, checker.head
    return [head + body[i * size : (i + 1) * size] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reports", type=int, default=1_000_000)
    ap.add_argument("--candidates", type=int, default=1 << 17)
    ap.add_argument("--oracle", default="olh-pool")
    ap.add_argument("--epsilon", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=5000, help="reports per submit call")
    ap.add_argument("--check", action="store_true", help="compare with a decode of all at once")
    args = ap.parse_args()
    n, rng = args.reports, np.random.default_rng(0)
    oracle = make_oracle(args.oracle, args.epsilon)
    candidates = cd.as_codes(np.arange(args.candidates, dtype=np.uint64) * 7919 % (1 << M), M)
    keys = cd.oracle_keys(candidates, M)
    with tempfile.TemporaryDirectory() as tmp:
        store = AgentStore.of_party(Path(tmp) / "party.sqlite", "party-0")
        creds = Credentials("party-0", new_key(), n)
        source = DeviceSource(creds, f"int:{M}", store, collect_seconds=1e9)
        request = SimpleNamespace(run_id="bench", request_id=1)
        group = Group(request, np.arange(n), M, candidates, oracle)  # type: ignore[arg-type]
        assert source.reports(group, rng) is None  # the task opens
        assert source.open is not None
        checker = source.open.checker
        proc = psutil.Process()
        rss0 = rss_tenth = proc.memory_info().rss
        kept, spent, t0 = [], 0.0, time.perf_counter()
        for start in range(0, n, args.batch):
            if start < n // 10 <= start + args.batch:
                rss_tenth = proc.memory_info().rss
            size = min(args.batch, n - start)
            held = keys[rng.integers(0, keys.size, size) % max(1, keys.size // 64)]  # heavy head
            rep = oracle.perturb(held, rng, keys)
            blobs = canonical_reports(checker, rep, size)
            if args.check:
                kept.append(rep)
            t = time.perf_counter()
            entries = list(zip(range(start, start + size), blobs, strict=True))
            refused, _ = source.submit(entries, "bench", 1)
            spent += time.perf_counter() - t
            assert not refused, refused[:3]
        wall = time.perf_counter() - t0
        rss1 = proc.memory_info().rss
        t = time.perf_counter()
        tally = source.reports(group, rng)
        assert tally is not None and tally.n == n
        estimate = estimate_reports(tally, M, candidates, oracle, n)
        close = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        file_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        print(f"{args.oracle}, ε = {args.epsilon:g}, {args.candidates} candidates, {n} reports")
        print(f"  accepted {n / spent:,.0f} reports/s in submit calls ({wall:.1f} s in all)")
        print(
            f"  memory: {rss0 / 2**20:.0f} MB when the task opened, {rss_tenth / 2**20:.0f} MB "
            f"after a tenth of the reports (the decode's compiled code is loaded by then), "
            f"{rss1 / 2**20:.0f} MB after all: +{(rss1 - rss_tenth) / 2**20:.0f} MB over the "
            f"last {n - n // 10} reports; peak {peak / 2**20:.0f} MB"
        )
        print(f"  close of the level (fold what is left + decode): {close:.2f} s")
        print(f"  state file: {file_mb:.0f} MB ({file_mb * 2**20 / n:.0f} bytes a report)")
        if args.check:
            whole = kept[0]
            for r in kept[1:]:
                whole = whole.concat(r)
            a, b = estimate, estimate_reports(whole, M, candidates, oracle, n)
            same = np.array_equal(a.estimates, b.estimates) and np.array_equal(a.stderrs, b.stderrs)
            print(f"  estimates equal to all reports decoded at once: {same}")
        source.close()
        store.close()


if __name__ == "__main__":
    main()
