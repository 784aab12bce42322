"""Helpers of the gRPC integration tests: a throwaway CA, tokens, and real processes on 127.0.0.1
(each in its own session, stopped by killing its process group by PID)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedhh.core.items import IntCodec
from fedhh.datasets import synthetic_zipf
from fedhh.mechanisms.params import MechanismParams
from fedhh.ops import deploy, procs
from fedhh.run.settings import run_spec_text
from fedhh.wire.tokens import add_token

FEDHH = [sys.executable, "-m", "fedhh.cli"]
M = 16


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(d: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it (those of
    ``fedhh deploy local``)."""
    return Certs(*deploy.make_certs(d))


@dataclass
class Proc:
    """A process in its own session; ``stop`` kills its whole process group by PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=20)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """Processes of one test (stopped at teardown) and the files they share."""

    root: Path
    certs: Certs
    tokens: Path
    procs: list[Proc] = field(default_factory=list)
    coordinator_port: int = 0

    def start(self, name: str, *args: str) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = Proc(name, procs.start([*FEDHH, *args], log, env=env, cwd=self.root), log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()

    def token(self, role: str, name: str) -> Path:
        out = self.root / f"{role}-{name}.token"
        if not out.exists():
            add_token(self.tokens, role, name, out)
        return out

    def tls_args(self, port_file: Path) -> list[str]:
        """A service's certificate, key and port file flags."""
        key, cert = str(self.certs.key), str(self.certs.cert)
        return ["--tls-cert", cert, "--tls-key", key, "--port-file", str(port_file)]

    def start_coordinator(self, *extra: str, db: str = "coord.sqlite") -> Proc:
        port_file = self.root / "coord.port"
        port_file.unlink(missing_ok=True)
        listen = f"127.0.0.1:{self.coordinator_port}"
        proc = self.start(
            "coordinator",
            "coordinator",
            "serve",
            "--listen",
            listen,
            "--db",
            str(self.root / db),
            "--tokens",
            str(self.tokens),
            *self.tls_args(port_file),
            *extra,
        )
        self.coordinator_port = int(wait_file(port_file, proc))
        return proc

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.coordinator_port}"

    def connect_args(self, role: str, name: str) -> list[str]:
        """The coordinator, token and CA flags of a client (``--party-id`` too for a party)."""
        token, ca = str(self.token(role, name)), str(self.certs.ca)
        party = ["--party-id", name] if role == "party" else []
        return [*party, "--coordinator", self.target, "--token-file", token, "--ca-cert", ca]

    def start_party(self, party_id: str, data: Path, *extra: str) -> Proc:
        return self.start(
            party_id,
            "party",
            "serve",
            *self.connect_args("party", party_id),
            "--db",
            str(self.root / f"{party_id}.sqlite"),
            "--data",
            str(data),
            "--item-bits",
            str(M),
            "--poll-seconds",
            "2",
            *extra,
        )

    def enroll(self, party_id: str, users: int) -> dict[str, str]:
        """Issue the credentials of a device party's users (``fedhh party enroll``)."""
        from fedhh.clients.credentials import read_credentials

        out = self.root / f"{party_id}.credentials"
        db = str(self.root / f"{party_id}.sqlite")
        args = ["party", "enroll", "--party-id", party_id, "--db", db, "--users", str(users)]
        done = subprocess.run([*FEDHH, *args, "--out", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return read_credentials(out)

    def start_device_party(
        self, party_id: str, users: int, *extra: str, bits: int = 8
    ) -> tuple[Proc, str]:
        """A device party agent (``--devices``, TLS report endpoint); returns it and its
        report endpoint's address."""
        port_file = self.root / f"{party_id}.report-port"
        port_file.unlink(missing_ok=True)
        proc = self.start(
            party_id,
            "party",
            "serve",
            *self.connect_args("party", party_id),
            "--db",
            str(self.root / f"{party_id}.sqlite"),
            "--devices",
            str(users),
            "--item-bits",
            str(bits),
            "--listen",
            "127.0.0.1:0",
            *self.tls_args(port_file),
            "--poll-seconds",
            "1",
            *extra,
        )
        return proc, f"127.0.0.1:{wait_file(port_file, proc)}"

    def start_run(
        self,
        run_id: str,
        parties: Sequence[str],
        params: MechanismParams,
        *args: str,
        policy: str = "continue",
        deadline_seconds: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``fedhh query start`` of a run spec of ``params`` over ``parties`` (``args``: more
        flags, e.g. ``--wait``)."""
        spec = self.root / f"{run_id}.toml"
        spec.write_text(
            run_spec_text(
                parties, params, run_id=run_id, policy=policy, deadline_seconds=deadline_seconds
            )
        )
        return self.query("start", str(spec), *args)

    def handled(self, party_id: str) -> list[tuple[str, int]]:
        """(run id, request id) of every request a party agent answered (from its state file)."""
        db = sqlite3.connect(self.root / f"{party_id}.sqlite")
        return [(r[0], r[1]) for r in db.execute("SELECT run_id, request_id FROM handled")]

    def check_answered_once(
        self, parties: Iterable[str], requests: int, run_id: str | None = None
    ) -> None:
        """Each party agent answered ``requests`` requests (of ``run_id``, or of any run), each
        exactly once."""
        for pid in parties:
            ids = [req for run, req in self.handled(pid) if run_id in (None, run)]
            assert len(ids) == len(set(ids)) == requests, (pid, ids)

    def query(
        self, *args: str, json_out: bool = True, admin: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``fedhh query`` as the analyst alice (``admin``: as the admin ops, who also sees
        the parties' privacy budgets)."""
        cmd = [
            *FEDHH,
            "query",
            *(
                self.connect_args("admin", "ops")
                if admin
                else self.connect_args("analyst", "alice")
            ),
            *(["--json"] if json_out else []),
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)


@contextmanager
def running_cluster(
    root: Path, parties: Iterable[str], *others: tuple[str, str]
) -> Iterator[Cluster]:
    """A test's cluster under ``root``: a fresh CA, the tokens of the analyst alice, of each party
    in ``parties`` and of the ``others`` (role, name); every process it started is stopped on
    exit (the body of each test module's ``cluster`` fixture)."""
    c = Cluster(root, make_certs(root / "certs"), root / "tokens.json")
    for role, name in (
        ("analyst", "alice"),
        ("admin", "ops"),
        *(("party", p) for p in parties),
        *others,
    ):
        c.token(role, name)
    try:
        yield c
    finally:
        c.stop_all()


def wait_file(path: Path, proc: Proc, timeout: float = 60.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not write {path}:\n{proc.output()}")


def wait_until(cond, timeout: float = 120.0, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def party_data(root: Path, users: int = 7500, parties: int = 3) -> list[Path]:
    """Non-IID party files of M-bit integer items (one per line), of different sizes."""
    ds = synthetic_zipf(
        users,
        parties,
        m=M,
        n_items=400,
        s=1.1,
        split="dirichlet",
        alpha=0.5,
        sizes="skewed",
        seed=7,
    )
    files = []
    for i, part in enumerate(ds.parties):
        path = root / f"party-{i}.txt"
        path.write_text("".join(f"{int(c)}\n" for c in part))
        files.append(path)
    return files


def codec() -> IntCodec:
    return IntCodec(M)
