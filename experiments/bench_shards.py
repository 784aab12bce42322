"""A device party's ingestion over several processes (issue 26 items 2 and 4; prints figures, not
a test).

This process is the party agent (a :class:`~fedhh.clients.shards.ShardedSource`) and the load
generator: ``--shards`` ingestion processes share one port on 127.0.0.1 (SO_REUSEPORT), one
report task over ``--candidates`` candidates takes ``--reports`` users, and ``--streams``
devices (coroutines on aio channels, each its own connection, so the kernel spreads them over
the shards) send ``SubmitReportBatch`` calls of ``--batch`` reports (``--batch 1``: one
``SubmitReport`` a call). Reports are perturbed and credentials issued while sending, in this
process, which shares the cores with the shards. Printed: accepted reports/s, the shards' CPU
time a report, each shard's resident memory after a tenth of the reports and at the end, its
peak, the close of the level (stop the shards, add their tallies, decode) and, with
``--check``, that the estimates equal one decode of all the reports at once.

Reproduce:  .venv/bin/python experiments/bench_shards.py --shards 2 --reports 1000000
            [--batch 1000] [--streams 16] [--oracle olh-pool] [--candidates 131072] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import psutil
from bench_ingest import canonical_reports  # experiments/ is the script's directory

from fedhh.clients.credentials import Credentials, new_key
from fedhh.clients.ingest import ReportChecker
from fedhh.clients.shard import ShardConfig
from fedhh.clients.shards import start_sharded
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.mechanisms.local import estimate_reports
from fedhh.oracles import make_oracle
from fedhh.protocol.party import Group
from fedhh.wire.v1 import report_pb2

M = 32


class Load:
    """The devices: batches made on the fly, sent on ``streams`` connections."""

    def __init__(self, args: argparse.Namespace, creds: Credentials, checker: ReportChecker):
        self.args, self.creds, self.checker = args, creds, checker
        self.rng = np.random.default_rng(0)
        self.kept: list[object] = []
        self.rss_tenth: list[int] = []

    def chunk(self, start: int, keys: np.ndarray, oracle: object) -> tuple[str, bytes, str]:
        size = min(self.args.batch, self.args.reports - start)
        held = keys[self.rng.integers(0, keys.size, size) % max(1, keys.size // 64)]
        rep = oracle.perturb(held, self.rng, keys)  # type: ignore[attr-defined]
        if self.args.check:
            self.kept.append(rep)
        blobs = canonical_reports(self.checker, rep, size)
        users = range(start, start + size)
        cred = [self.creds.issue(u, 0) for u in users]
        if size == 1:
            msg = report_pb2.SubmitReportRequest(
                user_id=str(start), run_id="bench", task_id=1, report=blobs[0]
            )
            return "SubmitReport", msg.SerializeToString(), cred[0]
        batch = report_pb2.ReportBatch(
            run_id="bench",
            task_id=1,
            reports=[
                report_pb2.UserReport(credential=c, report=b)
                for c, b in zip(cred, blobs, strict=True)
            ],
        )
        return "SubmitReportBatch", batch.SerializeToString(), cred[0]

    def run(self, port: int, keys: np.ndarray, oracle: object, shards: list[int]) -> float:
        opts = [("grpc.use_local_subchannel_pool", 1)]

        async def go() -> float:
            chans = [
                grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts)
                for _ in range(self.args.streams)
            ]
            starts = iter(range(0, self.args.reports, self.args.batch))
            tenth = self.args.reports // 10

            async def device(i: int) -> None:
                stubs = {
                    m: chans[i].unary_unary(f"/fedhh.v1.ReportService/{m}")
                    for m in ("SubmitReport", "SubmitReportBatch")
                }
                for start in starts:
                    if start <= tenth < start + self.args.batch:
                        self.rss_tenth = [psutil.Process(p).memory_info().rss for p in shards]
                    name, body, cred = self.chunk(start, keys, oracle)
                    md = (("authorization", f"Bearer {cred}"),)
                    await stubs[name](body, metadata=md, timeout=120)

            t0 = time.perf_counter()
            await asyncio.gather(*(device(i) for i in range(self.args.streams)))
            dt = time.perf_counter() - t0
            for c in chans:
                await c.close()
            return dt

        return asyncio.run(go())


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--reports", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000, help="reports a call (1: SubmitReport)")
    ap.add_argument("--streams", type=int, default=16, help="concurrent devices (connections)")
    ap.add_argument("--candidates", type=int, default=1 << 17)
    ap.add_argument("--oracle", default="olh-pool")
    ap.add_argument("--epsilon", type=float, default=2.0)
    ap.add_argument("--check", action="store_true", help="compare with one decode of all")
    args = ap.parse_args()
    n = args.reports
    oracle = make_oracle(args.oracle, args.epsilon)
    candidates = cd.as_codes(np.arange(args.candidates, dtype=np.uint64) * 7919 % (1 << M), M)
    keys = cd.oracle_keys(candidates, M)
    print(
        f"{args.shards} ingestion processes, {args.oracle} ε = {args.epsilon:g} over "
        f"{args.candidates} candidates, {n:,} reports in calls of {args.batch} on "
        f"{args.streams} connections ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the start)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "party.sqlite"
        store = AgentStore.of_party(db, "party-0")
        key = store.meta_default("credential-key", new_key())
        creds = Credentials("party-0", key, n)
        base = ShardConfig(
            index=0,
            shards=args.shards,
            party_id="party-0",
            ledger=db,
            agent_db=db,
            gate=db,
            key=key,
            n_users=n,
            codec=f"int:{M}",
            collect_seconds=1e9,
            listen="127.0.0.1:0",
            tls_cert=None,
            tls_key=None,
            insecure=True,
            shared=True,
            log_level="warning",
        )
        source, port = start_sharded(
            processes=args.shards, engine="processes", store=store, base=base
        )
        try:
            pids = [s.pid for s in source.shards.shards]
            group = Group(
                SimpleNamespace(run_id="bench", request_id=1),  # type: ignore[arg-type]
                np.arange(n),
                M,
                candidates,
                oracle,
            )
            rng = np.random.default_rng(0)
            assert source.reports(group, rng) is None  # the task opens on every shard
            procs = [psutil.Process(p) for p in pids]
            cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
            me0 = sum(psutil.Process().cpu_times()[:2])
            load = Load(args, creds, ReportChecker(oracle, keys))
            wall = load.run(port, keys, oracle, pids)
            cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
            me = sum(psutil.Process().cpu_times()[:2]) - me0
            rss = [p.memory_info().rss for p in procs]
            assert source.gate.count() == n, source.gate.count()
            t = time.perf_counter()
            tally = source.reports(group, rng)
            assert tally is not None and tally.n == n
            est = estimate_reports(tally, M, candidates, oracle, n)
            close = time.perf_counter() - t
            peaks = [peak_rss(p) for p in pids]
            files = sum(f.stat().st_size for f in Path(tmp).iterdir() if "shard-" in f.name)
            print(
                f"  accepted {n / wall:,.0f} reports/s ({wall:.1f} s); shards' CPU "
                f"{cpu / n * 1e6:.1f} µs a report ({cpu / wall:.2f} cores), the load "
                f"generator's {me / n * 1e6:.1f} µs"
            )
            mb = [
                f"{a / 2**20:.0f} → {b / 2**20:.0f}"
                for a, b in zip(load.rss_tenth, rss, strict=False)
            ]
            print(
                f"  shard memory (MB, after a tenth → at the end): {', '.join(mb)}; peaks "
                f"{', '.join(f'{p / 2**20:.0f}' for p in peaks)} MB"
            )
            print(f"  close of the level (stop, add {args.shards} tallies, decode): {close:.2f} s")
            print(f"  ledgers: {files / 2**20:.0f} MB ({files / n:.0f} bytes a report)")
            if args.check:
                whole = load.kept[0]
                for r in load.kept[1:]:
                    whole = whole.concat(r)  # type: ignore[attr-defined]
                b = estimate_reports(whole, M, candidates, oracle, n)  # type: ignore[arg-type]
                same = np.array_equal(est.estimates, b.estimates) and np.array_equal(
                    est.stderrs, b.stderrs
                )
                print(f"  estimates equal to all reports decoded at once: {same}")
        finally:
            source.close()
            store.close()


if __name__ == "__main__":
    main()
