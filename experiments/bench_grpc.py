"""Load check of the gRPC deployment (prints figures; not a test).

1. Reports per second accepted by one party agent's report endpoint: a device-mode agent
   (separate process, SQLite with synchronous=FULL) and a PEM-Global run whose first report task
   takes half of the enrolled users; ``--threads`` concurrent devices submit pre-made reports
   (perturbation is done beforehand so the figure is the endpoint's) over 8 channels.
2. The coordinator's round-trip overhead per round with 8 and 32 parties: a coordinator process
   and M party agents (the real agent code, as threads of this process, over gRPC on loopback)
   run PEM-Global (m = 16, η = 4: 4 rounds) on tiny parties, and the in-process engine runs the
   same; overhead per round = (gRPC wall time − in-process time) / rounds. Best of ``--repeat``.

Everything listens on 127.0.0.1; plaintext (``--insecure``) unless ``--tls`` is given.

Reproduce:  .venv/bin/python experiments/bench_grpc.py  [--reports N] [--threads T] [--tls]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fedhh.clients.agent import PartyAgent
from fedhh.clients.reporter import ReporterClient, make_report
from fedhh.clients.store import AgentStore
from fedhh.codec import IntCodec
from fedhh.engine import simulate
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Party
from fedhh.protocol.host import PartyHost
from fedhh.server.analyst import AnalystClient
from fedhh.wire.security import add_token, read_token_file

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


def bench_reports(n_reports: int, threads: int, tls: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        procs = Procs(root)
        try:
            sec = security(root, tls)
            tokens, dev_tokens = root / "tokens.json", root / "devices.json"
            add_token(tokens, "analyst", "a", root / "a.token")
            add_token(tokens, "party", "party-0", root / "p.token")
            add_token(dev_tokens, "device", "app", root / "d.token")
            port = start_coordinator(procs, root, sec, tokens)
            port_file = root / "report.port"
            agent = procs.start(
                "agent",
                "party",
                "serve",
                "--party-id",
                "party-0",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--token-file",
                str(root / "p.token"),
                "--db",
                str(root / "party.sqlite"),
                "--devices",
                str(2 * n_reports + 2),
                "--item-bits",
                "8",
                "--listen",
                "127.0.0.1:0",
                "--device-tokens",
                str(dev_tokens),
                "--port-file",
                str(port_file),
                "--log-level",
                "warning",
                *(["--ca-cert", str(root / "certs" / "ca.pem")] if tls else []),
                *sec,
            )
            target = f"127.0.0.1:{wait_port(port_file, agent)}"
            cs = client_sec(root, tls)
            with AnalystClient(
                f"127.0.0.1:{port}", token=read_token_file(root / "a.token"), **cs
            ) as an:
                an.start(MechanismParams(mechanism="pem-global", k=2, m=8, eta=7), ["party-0"])
            token = read_token_file(root / "d.token")
            clients = [ReporterClient(target, token=token, **cs) for _ in range(8)]
            while True:
                try:
                    task = clients[0].fetch_task("probe")
                    break
                except Exception:
                    time.sleep(0.05)
            rng = np.random.default_rng(0)
            blobs = [make_report(task, int(x), rng) for x in rng.integers(0, 256, n_reports)]

            def submit(i: int) -> None:
                clients[i % 8].submit(f"user-{i}", task, blobs[i])

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(submit, range(n_reports)))
            dt = time.perf_counter() - t0
            assert clients[0].status().accepted == n_reports
            for c in clients:
                c.close()
            return n_reports / dt
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
                    info = an.wait(info["run_id"], interval=0.005)
                    dt = time.perf_counter() - t0
                    assert info["state"] == "done", info
                    best, rounds = min(best, dt), info["round"]
            return best, rounds, t_local, (best - t_local) / rounds
        finally:
            for a in agents:
                a.stop.set()
            procs.stop()


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=int, default=4000, help="reports submitted")
    ap.add_argument("--threads", type=int, default=64, help="concurrent devices")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tls", action="store_true", help="TLS instead of plaintext on loopback")
    args = ap.parse_args()
    print(
        f"fedhh gRPC load check ({'TLS' if args.tls else 'plaintext'} on 127.0.0.1, "
        f"{os.cpu_count()} cores)"
    )
    rate = bench_reports(args.reports, args.threads, args.tls)
    print(
        f"report endpoint: {rate:,.0f} reports/s accepted by one party agent "
        f"({args.reports} reports, {args.threads} concurrent devices)"
    )
    for m in (8, 32):
        wall, rounds, local, per_round = bench_rounds(m, args.tls, args.repeat)
        print(
            f"{m:>2} parties: gRPC run {wall * 1000:7.1f} ms, in-process {local * 1000:6.1f} ms, "
            f"{rounds} rounds -> coordinator round-trip overhead {per_round * 1000:6.1f} ms/round"
        )
    print("reproduce: .venv/bin/python experiments/bench_grpc.py" + (" --tls" if args.tls else ""))


if __name__ == "__main__":
    main()
