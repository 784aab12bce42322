"""The coordinator killed (SIGKILL, by PID) three times in the middle of a run while the party
agents are left running: two data parties and a device party (its users report through the
agent's report endpoint, so the test decides when each round can end). Every agent survives
every reconnect (heartbeats every 0.3 s straddle each restart), the run resumes each time and
ends with exactly the result of the same run without interruption, with every user of every
party counted once."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from grpc_harness import Cluster, M, codec, party_data, running_cluster, wait_until

from fedhh.clients.device_wire import ReportFields
from fedhh.clients.reporter import ReporterClient, ReportTask, make_report
from fedhh.datasets import load_party_files
from fedhh.errors import TransportError
from fedhh.mechanisms.params import MechanismParams
from fedhh.oracles import Reports
from fedhh.protocol import Party, RunDriver, RunSpec
from fedhh.protocol.encoding import encode
from fedhh.protocol.party import Group
from fedhh.wire.security import open_channel

DEVICES = 400
PARTIES = ["party-0", "party-1", "party-2"]  # party-2: devices
PARAMS = MechanismParams(mechanism="pem-global", k=4, m=M, eta=4, seed=9)  # 4 rounds


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, PARTIES) as c:
        yield c


class Replayed:
    """The device party's reports as the test submitted them, level by level."""

    def __init__(self, levels: list[list[bytes]]) -> None:
        self.levels = levels
        self.n_users = DEVICES
        self.next = 0

    def reports(self, group: Group, rng: np.random.Generator) -> Reports:
        parts = [Reports.from_bytes(b) for b in self.levels[self.next]]
        self.next += 1
        arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
        return Reports(parts[0].kind, parts[0].size, arrays)


def uninterrupted(files: list[Path], levels: list[list[bytes]]):  # type: ignore[no-untyped-def]
    """The same run in one process, without any interruption."""
    data = load_party_files(files, codec=codec()).parties
    sizes = (int(data[0].size), int(data[1].size), DEVICES)
    spec = RunSpec("kills", PARAMS, tuple(PARTIES), sizes, f"int:{M}")
    parties = {
        "party-0": Party(spec, "party-0", data[0]),
        "party-1": Party(spec, "party-1", data[1]),
        "party-2": Party(spec, "party-2", Replayed(levels)),
    }
    driver = RunDriver(spec)
    sent = driver.start()
    while sent:
        nxt = []
        for s in sent:
            reply = parties[s.party_id].handle(s.request)
            assert reply is not None
            nxt = driver.receive(encode(reply)) or nxt
        sent = nxt
    return driver.outcome(), sizes


def test_coordinator_killed_three_times_mid_run(cluster: Cluster) -> None:
    files = party_data(cluster.root, users=6000, parties=2)
    coord = cluster.start_coordinator("--heartbeat-seconds", "0.3")
    creds = cluster.enroll("party-2", DEVICES)
    agents = [cluster.start_party(pid, f) for pid, f in zip(PARTIES, files, strict=False)]
    device_agent, target = cluster.start_device_party("party-2", DEVICES, bits=M)
    agents.append(device_agent)
    pids = [a.popen.pid for a in agents]
    assert cluster.start_run("kills", PARTIES, PARAMS).returncode == 0

    channel = open_channel(target, token=None, ca_cert=cluster.certs.ca)
    rng = np.random.default_rng(5)
    items = np.where(rng.random(DEVICES) < 0.4, 0x1234, rng.integers(0, 1 << M, DEVICES))
    pending = list(range(DEVICES))
    levels: list[list[bytes]] = []
    seen: set[int] = set()

    def relay() -> ReporterClient:  # a user who has not reported yet fetches the task
        return ReporterClient(target, credential=creds[str(pending[-1])], channel=channel)

    def next_task() -> ReportTask | None:
        try:
            t = relay().fetch_task()
        except TransportError:
            return None
        return t if t.task_id not in seen else None

    for level in range(4):
        task = wait_until(next_task, what=f"the device task of round {level + 1}")
        seen.add(task.task_id)
        if level > 0:  # rounds 2, 3 and 4: kill the coordinator with the round outstanding
            coord.stop()  # SIGKILL
            time.sleep(1.0)  # heartbeats and polls of every agent hit the dead coordinator
            coord = cluster.start_coordinator("--heartbeat-seconds", "0.3")
        reports = {u: make_report(task, int(items[u]), np.random.default_rng(u)) for u in pending}
        entries = [(creds[str(u)], reports[u]) for u in pending]
        accepted, refused = relay().submit_batch(task, entries)
        full = {i for i, code, _ in refused if code == "FAILED_PRECONDITION"}
        assert len(full) == len(refused), refused
        taken = [u for i, u in enumerate(pending) if i not in full]
        assert len(taken) == accepted > 0
        fields = ReportFields(task.build_oracle().report_layout(task.candidates.size))
        levels.append([fields.frame(reports[u]) for u in taken])  # as the agent stores them
        pending = [u for u in pending if u not in set(taken)]
    assert pending == []  # the last level takes every user left

    def finished() -> dict | None:
        out = cluster.query("status", "kills")
        info = json.loads(out.stdout) if out.returncode == 0 else None
        return info if info and info["state"] not in ("running", "waiting") else None

    info = wait_until(finished, what="the run to end")
    assert info["state"] == "done", info
    assert [a.popen.pid for a in agents] == pids and all(a.alive() for a in agents), [
        a.output()[-2000:] for a in agents if not a.alive()
    ]
    want, sizes = uninterrupted(files, levels)
    doc = json.loads(cluster.query("top", "kills").stdout)
    assert [r["code"] for r in doc] == want.items.tolist()
    np.testing.assert_array_equal([r["estimate"] for r in doc], want.estimates)
    np.testing.assert_array_equal([r["stderr"] for r in doc], want.stderrs)
    np.testing.assert_array_equal([r["parties"] for r in doc], want.contributors)
    cost = json.loads(cluster.query("cost", "kills").stdout)
    assert cost["cost"]["reports_per_party"] == dict(zip(PARTIES, sizes, strict=True))
    assert cost["privacy"]["users_reported"] == sum(sizes)

    db = sqlite3.connect(cluster.root / "coord.sqlite")
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action='resumed'").fetchone()[0] == 3
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    cluster.check_answered_once(PARTIES, 4, "kills")  # each of its four requests
    assert not [p.name for p in cluster.procs if p.name in PARTIES and "Traceback" in p.output()]
    # The analyst sees each party's last heartbeat and remaining budget.
    parties = {p["party_id"]: p for p in json.loads(cluster.query("parties", admin=True).stdout)}
    assert set(parties) == set(PARTIES)
    assert all(
        p["seconds_since_seen"] < 30 and p["epsilon_remaining"] > 0 for p in parties.values()
    )
    channel.close()
