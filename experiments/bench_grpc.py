"""Load check of the gRPC deployment (prints figures; not a test).

1. Reports per second accepted by one party agent's report endpoint: a device-mode agent
   (separate process, SQLite with synchronous=FULL and group commit: a report is acknowledged
   only once durable) and a PEM-Global run whose one report task takes every enrolled user;
   the agent process's CPU time a report is printed beside the rate (the rate depends on what
   else the 2 cores run).
   ``--devices`` concurrent devices (coroutines of this process on ``--channels`` aio channels,
   the lightest gRPC client Python has; each call with its user's credential) submit pre-made
   reports, first one per call
   (``SubmitReport``), then ``--batch`` per call (``SubmitReportBatch``). Perturbation and
   credentials are made beforehand, so the figures are the endpoint's.
2. Nothing acknowledged is lost: batches keep coming while the agent is killed (SIGKILL); every
   report acknowledged before the kill is in its SQLite file afterwards.
3. The coordinator's round-trip overhead per round with 8 and 32 parties: a coordinator process
   and M party agents (the real agent code, as threads of this process, over gRPC on loopback)
   run PEM-Global (m = 16, η = 4: 4 rounds) on tiny parties, and the in-process engine runs the
   same; overhead per round = (gRPC wall time − in-process time) / rounds. Best of ``--repeat``.

Everything listens on 127.0.0.1; plaintext (``--insecure``) unless ``--tls`` is given.

Reproduce:  .venv/bin/python experiments/bench_grpc.py  [--devices 256] [--batch 100] [--tls]
            [--no-rounds] [--wire 1|2] [--ingest-processes N]

``--ingest-processes N``: the agent runs N ingestion processes on its one port; each device
channel is its own connection, so the kernel spreads them over the processes; the agent CPU
counts its processes' too, and part 2 kills one of them (not the agent).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil

from fedhh.clients.agent import PartyAgent
from fedhh.clients.budget import PrivacyLedger
from fedhh.clients.credentials import Credentials, new_key
from fedhh.clients.device_wire import report_to_pb
from fedhh.clients.reporter import ReporterClient, ReportTask
from fedhh.clients.store import AgentStore
from fedhh.core.items import IntCodec
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Party
from fedhh.protocol.host import PartyHost
from fedhh.run.engine import simulate
from fedhh.server.analyst import AnalystClient
from fedhh.wire.security import open_channel
from fedhh.wire.tokens import add_token, read_token_file
from fedhh.wire.v1 import report_pb2

FEDHH = [sys.executable, "-m", "fedhh.cli"]


class Procs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "wb") as log:
            p = subprocess.Popen(
                [*FEDHH, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_port(path: Path, proc: subprocess.Popen[bytes]) -> int:
    while not (path.exists() and path.read_text().strip()):
        if proc.poll() is not None:
            raise RuntimeError(f"process exited; see {path.parent}")
        time.sleep(0.05)
    return int(path.read_text())


def security(root: Path, tls: bool) -> list[str]:
    if not tls:
        return ["--insecure"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from grpc_harness import make_certs

    c = make_certs(root / "certs")
    return ["--tls-cert", str(c.cert), "--tls-key", str(c.key)]


def start_coordinator(procs: Procs, root: Path, sec: list[str], tokens: Path) -> int:
    port_file = root / "coord.port"
    p = procs.start(
        "coordinator",
        "coordinator",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(root / "coord.sqlite"),
        "--tokens",
        str(tokens),
        "--port-file",
        str(port_file),
        "--log-level",
        "warning",
        *sec,
    )
    return wait_port(port_file, p)


def client_sec(root: Path, tls: bool) -> dict:
    return {"ca_cert": root / "certs" / "ca.pem"} if tls else {"insecure": True}


class Ingest:
    """A device party agent with ``users`` enrolled users and the first report task open."""

    def __init__(
        self,
        root: Path,
        procs: Procs,
        users: int,
        tls: bool,
        channels: int,
        wire: int = 2,
        shards: int = 1,
    ) -> None:
        self.root, self.procs, self.users, self.tls = root, procs, users, tls
        self.shards = shards
        sec = security(root, tls)
        tokens = root / "tokens.json"
        add_token(tokens, "analyst", "a", root / "a.token")
        add_token(tokens, "party", "party-0", root / "p.token")
        port = start_coordinator(procs, root, sec, tokens)
        self.db = root / "party.sqlite"
        store = AgentStore(self.db)  # the agent's credential key, made before it starts
        creds = Credentials("party-0", store.meta_default("credential-key", new_key()), users)
        store.close()
        self.creds = [creds.issue(u) for u in range(users)]
        port_file = root / "report.port"
        self.agent = procs.start(
            "agent",
            *("party", "serve", "--party-id", "party-0", "--coordinator", f"127.0.0.1:{port}"),
            *("--token-file", str(root / "p.token"), "--db", str(self.db)),
            *("--devices", str(users), "--item-bits", "8", "--listen", "127.0.0.1:0"),
            *("--port-file", str(port_file), "--log-level", "warning"),
            *("--ingest-processes", str(shards)),
            *(["--ca-cert", str(root / "certs" / "ca.pem")] if tls else []),
            *sec,
        )
        self.target = f"127.0.0.1:{wait_port(port_file, self.agent)}"
        cs = client_sec(root, tls)
        with AnalystClient(f"127.0.0.1:{port}", token=read_token_file(root / "a.token"), **cs) as a:
            # m = 8, η = 7: one level, whose report task takes every enrolled user
            a.start(MechanismParams(mechanism="pem-global", k=2, m=8, eta=7), ["party-0"])
        self.channels = [open_channel(self.target, token=None, **cs) for _ in range(channels)]
        probe = self.client(users - 1)
        while True:
            try:
                self.task: ReportTask = probe.fetch_task()
                break
            except Exception:
                time.sleep(0.05)
        oracle = self.task.build_oracle()
        values = np.random.default_rng(0).integers(0, 256, users).astype(np.uint64)
        cand = self.task.candidates if self.task.candidates.size else None
        reps = oracle.perturb(
            values >> np.uint64(8 - self.task.length), np.random.default_rng(1), cand
        )
        one = [reps.take(slice(i, i + 1)) for i in range(users)]
        # wire version 2: Report messages; 1: the frames of the previous SDK
        self.reports = [{"ldp_report": report_to_pb(r)} for r in one]
        if wire == 1:
            self.reports = [{"report": r.to_bytes()} for r in one]

    def client(self, user: int) -> ReporterClient:
        return ReporterClient(
            self.target,
            credential=self.creds[user],
            channel=self.channels[user % len(self.channels)],
        )

    def _devices(self, calls: list[tuple[str, bytes, str]], threads: int) -> float:
        """``threads`` devices (coroutines on aio channels: the lightest client Python has)
        make the calls (method, request, credential); returns the seconds taken."""

        async def run() -> float:
            chans = self._aio_channels()
            stubs = {
                name: [c.unary_unary(f"/fedhh.v1.ReportService/{name}") for c in chans]
                for name in ("SubmitReport", "SubmitReportBatch")
            }
            todo = iter(range(len(calls)))

            async def device() -> None:
                for i in todo:
                    name, body, cred = calls[i]
                    md = (("authorization", f"Bearer {cred}"),)
                    await stubs[name][i % len(chans)](body, metadata=md, timeout=60)

            t0 = time.perf_counter()
            await asyncio.gather(*(device() for _ in range(threads)))
            dt = time.perf_counter() - t0
            for c in chans:
                await c.close()
            return dt

        return asyncio.run(run())

    def _aio_channels(self) -> list[grpc.aio.Channel]:
        """The devices' channels, each its own connection (the kernel spreads connections, not
        calls, over the agent's ingestion processes)."""
        opts = [("grpc.use_local_subchannel_pool", 1)]
        if self.tls:
            creds = grpc.ssl_channel_credentials((self.root / "certs" / "ca.pem").read_bytes())
            return [grpc.aio.secure_channel(self.target, creds, opts) for _ in self.channels]
        return [grpc.aio.insecure_channel(self.target, opts) for _ in self.channels]

    def ledgers(self) -> list[Path]:
        """The files the agent stores reports in (its own, or its shards')."""
        if self.shards == 1:
            return [self.db]
        return [self.db.with_name(f"party.shard-{i}.sqlite") for i in range(self.shards)]

    def singles(self, users: range, threads: int) -> float:
        t = self.task
        calls = [
            (
                "SubmitReport",
                report_pb2.SubmitReportRequest(
                    user_id=str(u), run_id=t.run_id, task_id=t.task_id, **self.reports[u]
                ).SerializeToString(),
                self.creds[u],
            )
            for u in users
        ]
        return len(users) / self._devices(calls, threads)

    def batches(self, users: range, threads: int, size: int) -> float:
        calls = [
            (*self._batch(users[i : i + size]), self.creds[users[i]])
            for i in range(0, len(users), size)
        ]
        return len(users) / self._devices(calls, threads)

    def _batch(self, chunk: range) -> tuple[str, bytes]:
        entries = [
            report_pb2.UserReport(credential=self.creds[u], **self.reports[u]) for u in chunk
        ]
        msg = report_pb2.ReportBatch(
            run_id=self.task.run_id, task_id=self.task.task_id, reports=entries
        )
        return "SubmitReportBatch", msg.SerializeToString()

    def kill_during(self, users: range, threads: int, size: int, after: float) -> tuple[int, int]:
        """Batches keep coming; the agent (with shards: one of them) is killed after ``after``
        s. Returns (acknowledged reports, of those found in the agent's files)."""
        acked: list[int] = []
        chunks = [users[i : i + size] for i in range(0, len(users), size)]

        async def run() -> None:
            chans = self._aio_channels()
            stubs = [
                c.unary_unary(
                    "/fedhh.v1.ReportService/SubmitReportBatch",
                    response_deserializer=report_pb2.ReportBatchResult.FromString,
                )
                for c in chans
            ]
            todo = iter(range(len(chunks)))

            async def device() -> None:
                for i in todo:
                    chunk = chunks[i]
                    md = (("authorization", f"Bearer {self.creds[chunk[0]]}"),)
                    try:
                        res = await stubs[i % len(stubs)](
                            self._batch(chunk)[1], metadata=md, timeout=60
                        )
                    except grpc.aio.AioRpcError:
                        continue  # not acknowledged
                    bad = {r.index for r in res.refused}
                    acked.extend(u for j, u in enumerate(chunk) if j not in bad)

            loop = asyncio.get_running_loop()
            if self.shards == 1:
                loop.call_later(after, os.killpg, self.agent.pid, signal.SIGKILL)
            else:
                victim = psutil.Process(self.agent.pid).children()[-1].pid
                loop.call_later(after, os.kill, victim, signal.SIGKILL)
            await asyncio.gather(*(device() for _ in range(threads)))
            for c in chans:
                await c.close()

        asyncio.run(run())
        if self.shards == 1:
            self.agent.wait()
        stored: set[int] = set()
        for path in self.ledgers():  # opening recovers the WAL, as a restarted agent would
            db = sqlite3.connect(path)
            stored |= {int(r[0]) for r in db.execute("SELECT user_id FROM reports")}
            db.close()
        return len(acked), len(set(acked) & stored)

    def close(self) -> None:
        for c in self.channels:
            c.close()


def bench_reports(args: argparse.Namespace) -> None:
    n_single, n_batch, n_kill = args.singles, args.reports, args.reports
    users = n_single + n_batch + n_kill
    with tempfile.TemporaryDirectory() as tmp:
        procs = Procs(Path(tmp))
        try:
            ing = Ingest(
                Path(tmp), procs, users, args.tls, args.channels, args.wire, args.ingest_processes
            )
            agent = psutil.Process(ing.agent.pid)
            cpu = _cpu(agent)
            single = ing.singles(range(n_single), args.devices)
            cpu, used = _cpu(agent), _cpu(agent) - cpu
            who = f"one party agent of {args.ingest_processes} ingestion process(es)"
            print(
                f"report endpoint, single reports: {single:,.0f} reports/s accepted by {who} "
                f"({n_single:,} reports, {args.devices} concurrent devices on {args.channels} "
                f"connections; agent CPU {used / n_single * 1e6:,.0f} µs a report)"
            )
            batch = ing.batches(range(n_single, n_single + n_batch), args.devices, args.batch)
            used = _cpu(agent) - cpu
            print(
                f"report endpoint, batches of {args.batch}: {batch:,.0f} reports/s accepted by "
                f"{who} ({n_batch:,} reports, {args.devices} concurrent devices; agent "
                f"CPU {used / n_batch * 1e6:,.1f} µs a report)"
            )
            after = 0.5 * n_kill / batch  # about half-way through a burst like the last one
            kill = range(n_single + n_batch, users)
            acked, kept = ing.kill_during(kill, args.devices, args.batch, after)
            what = "agent" if args.ingest_processes == 1 else "one ingestion process"
            print(
                f"{what} killed (SIGKILL) {after:.2f} s into {n_kill:,} more reports in batches: "
                f"{acked:,} acknowledged before, {kept:,} of them in the SQLite files afterwards "
                f"({acked - kept} lost)"
            )
            ing.close()
        finally:
            procs.stop()


def bench_rounds(n_parties: int, tls: bool, repeat: int) -> tuple[float, int, float, float]:
    rng = np.random.default_rng(1)
    parties = [rng.zipf(1.3, 400).clip(max=60000).astype(np.uint64) for _ in range(n_parties)]
    ids = [f"party-{i}" for i in range(n_parties)]
    params = MechanismParams(mechanism="pem-global", k=4, m=16, eta=4, seed=0)
    t_local = min(
        _timed(lambda: simulate(parties, IntCodec(16), params, party_ids=ids))
        for _ in range(repeat)
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        procs = Procs(root)
        agents: list[PartyAgent] = []
        try:
            sec = security(root, tls)
            tokens = root / "tokens.json"
            add_token(tokens, "analyst", "a", root / "a.token")
            for pid in ids:
                add_token(tokens, "party", pid, root / f"{pid}.token")
            port = start_coordinator(procs, root, sec, tokens)
            target = f"127.0.0.1:{port}"
            cs = client_sec(root, tls)
            for pid, codes in zip(ids, parties, strict=True):
                store = AgentStore(root / f"{pid}.sqlite")
                agent = PartyAgent(
                    party_id=pid,
                    coordinator=target,
                    token=read_token_file(root / f"{pid}.token"),
                    host=PartyHost(
                        pid, lambda spec, pid=pid, codes=codes: Party(spec, pid, codes), store
                    ),
                    source_kind="data",
                    n_users=int(codes.size),
                    codec="int:16",
                    ledger=PrivacyLedger(store, int(codes.size)),
                    poll_seconds=5.0,
                    **cs,
                )
                threading.Thread(target=agent.run, daemon=True).start()
                agents.append(agent)
            best, rounds = float("inf"), 0
            with AnalystClient(target, token=read_token_file(root / "a.token"), **cs) as an:
                for r in range(repeat):
                    t0 = time.perf_counter()
                    info = an.start(params, ids, run_id=f"bench-{r}")
                    info = an.wait(info["run_id"])
                    dt = time.perf_counter() - t0
                    assert info["state"] == "done", info
                    best, rounds = min(best, dt), info["round"]
            return best, rounds, t_local, (best - t_local) / rounds
        finally:
            for a in agents:
                a.stop.set()
            procs.stop()


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of the process and its children (an agent's ingestion processes)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=256, help="concurrent devices")
    ap.add_argument("--singles", type=int, default=12_000, help="single reports submitted")
    ap.add_argument("--reports", type=int, default=120_000, help="reports submitted in batches")
    ap.add_argument("--batch", type=int, default=100, help="reports per batch")
    ap.add_argument("--channels", type=int, default=8, help="client channels the devices share")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--ingest-processes", type=int, default=1, help="the agent's ingestion processes"
    )
    ap.add_argument("--no-rounds", action="store_true", help="skip the round-trip figures")
    ap.add_argument("--tls", action="store_true", help="TLS instead of plaintext on loopback")
    ap.add_argument(
        "--wire", type=int, choices=(1, 2), default=2, help="device wire version of the reports"
    )
    args = ap.parse_args()
    print(
        f"fedhh gRPC load check ({'TLS' if args.tls else 'plaintext'} on 127.0.0.1, device wire "
        f"version {args.wire}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start)"
    )
    bench_reports(args)
    if not args.no_rounds:
        for m in (8, 32):
            wall, rounds, local, per_round = bench_rounds(m, args.tls, args.repeat)
            print(
                f"{m:>2} parties: gRPC run {wall * 1000:7.1f} ms, in-process {local * 1000:6.1f} "
                f"ms, {rounds} rounds -> coordinator round-trip overhead "
                f"{per_round * 1000:6.1f} ms/round"
            )
    more = (" --tls" if args.tls else "") + (
        f" --ingest-processes {args.ingest_processes}" if args.ingest_processes > 1 else ""
    )
    print(f"reproduce: .venv/bin/python experiments/bench_grpc.py{more}")


if __name__ == "__main__":
    main()
