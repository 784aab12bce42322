"""A coordinator whose disk refuses writes (here: a file-size limit on its process) answers
UNAVAILABLE with nothing stored and health NOT_SERVING, instead of INTERNAL with a traceback each
time; once writes succeed again (the limit lifted) it serves again with nothing lost (issue 24
item 1, storage errors). A real process on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import faults
import grpc
import pytest
from grpc_harness import FEDHH, Proc, wait_file
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedhh.errors import StorageError, TransportError
from fedhh.mechanisms.params import MechanismParams
from fedhh.server.analyst import AnalystClient
from fedhh.server.store import Store
from fedhh.wire.tokens import add_token

LIMIT = 256 << 10  # bytes any file of the process may reach


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        req = health_pb2.HealthCheckRequest()
        return int(health_pb2_grpc.HealthStub(ch).Check(req, timeout=10).status)


def test_a_full_disk_is_unavailable_and_nothing_is_lost(tmp_path: Path) -> None:
    add_token(tmp_path / "tokens.json", "analyst", "alice", tmp_path / "alice.token")
    port_file, db = tmp_path / "port", tmp_path / "c.sqlite"
    argv = ["coordinator", "serve", "--listen", "127.0.0.1:0", "--insecure"]
    argv += ["--db", str(db), "--tokens", str(tmp_path / "tokens.json")]
    log = tmp_path / "coordinator.log"
    popen = subprocess.Popen(
        [*FEDHH, *argv, "--port-file", str(port_file)],
        stderr=log.open("w"),
        preexec_fn=faults.refuse_writes_beyond(LIMIT),
        start_new_session=True,
    )
    proc = Proc("coordinator", popen, log)
    try:
        target = f"127.0.0.1:{int(wait_file(port_file, proc))}"
        token = (tmp_path / "alice.token").read_text().strip()
        started, refusal = [], None
        big = MechanismParams(mechanism="taps", k=4, m=32)
        with AnalystClient(target, token=token, insecure=True) as client:
            for i in range(5000):  # waiting runs (no party registered) until the file is full
                try:
                    client.start(big, [f"party-{j}" for j in range(64)], run_id=f"run-{i:05d}")
                    started.append(f"run-{i:05d}")
                except TransportError as exc:
                    refusal = exc
                    break
            assert refusal is not None and refusal.code == "UNAVAILABLE", refusal
            assert "refused a write" in refusal.message and "nothing was stored" in refusal.message
            assert _health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert proc.alive()  # still serving reads
            assert {r["run_id"] for r in client.runs()} == set(started)
            faults.lift_write_limit(popen.pid)  # the disk is fixed
            client.start(big, ["party-0"], run_id="after")
            assert _health(target) == health_pb2.HealthCheckResponse.SERVING
            assert {r["run_id"] for r in client.runs()} == {*started, "after"}
    finally:
        proc.stop()
    text = proc.output()
    assert "Traceback" not in text and "NOT_SERVING" in text, text[-3000:]
    store = Store(db)  # the file is whole: every acknowledged run is in it
    try:
        assert {r.run_id for r in store.runs(("waiting",))} == {*started, "after"}
    finally:
        store.close()


def test_a_refused_audit_line_stores_neither_the_run_nor_the_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run and its "start" audit line (a registration and its line) are one transaction: when
    the disk refuses the audit line, the run is not stored either, as the refusal says (the
    run and the line used to be two transactions, so a full disk could keep the run)."""
    store = Store(tmp_path / "c.sqlite")

    def full(*_args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "audit_in", staticmethod(full))
    with pytest.raises(StorageError, match="nothing was stored"):
        store.insert_run("r1", {"k": 4}, ["party-0"], "wait", 60.0, "alice")
    with pytest.raises(StorageError, match="nothing was stored"):
        store.register_party("party-0", 10, "int:32", "data", {})
    monkeypatch.undo()
    assert not store.run_exists("r1") and store.parties() == {} and store.audit_log() == []
    store.insert_run("r1", {"k": 4}, ["party-0"], "wait", 60.0, "alice")
    assert store.run_exists("r1") and [a[2] for a in store.audit_log()] == ["start"]
