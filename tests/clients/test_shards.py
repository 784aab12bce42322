"""A device party with several ingestion processes (issue 26 item 2), with real shard processes
(and Ray actors) on 127.0.0.1; this test process is the agent that drives them:

* the shards' gate takes a user once across shards and never more than the quota, and a
  crashed shard's share of it is repaired from its ledger;
* the sum of the shards' tallies is exactly the tally of one process given the same reports, and
  so are the estimates; a user's second report at another shard is refused (ALREADY_EXISTS);
* a shard killed (SIGKILL) while devices report is restarted on its ledger, and no acknowledged
  report is lost or counted twice (the device SDK asks again while its shard is down);
* Ray actors as shards answer exactly the same."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_harness import FEDHH, wait_until
from test_device_tally import USERS, _all_at_once, _group, _reports, _source, _submit

from fedhh.clients import gate as gt
from fedhh.clients.cli import _check_layout
from fedhh.clients.credentials import Credentials
from fedhh.clients.reporter import ReporterClient
from fedhh.clients.shard import ShardConfig, ledger_path
from fedhh.clients.shards import ShardedSource, start_sharded
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.errors import ParameterError
from fedhh.mechanisms.local import estimate_reports
from fedhh.protocol.party import Group
from fedhh.wire.v1 import report_pb2

LENGTH = 16


def _agent(tmp: Path, shards: int, shared: bool, engine: str = "processes") -> ShardedSource:
    store = AgentStore.of_party(tmp / "agent.sqlite", "party-0")
    key = store.meta_default("credential-key", b"k" * 32)
    base = ShardConfig(
        index=0,
        shards=shards,
        party_id="party-0",
        ledger=store.path,
        agent_db=tmp / "agent.sqlite",
        gate=store.path,
        key=key,
        n_users=USERS,
        codec="int:16",
        collect_seconds=600.0,
        listen="127.0.0.1:0",
        tls_cert=None,
        tls_key=None,
        insecure=True,
        shared=shared,
        log_level="warning",
    )
    source, _ = start_sharded(processes=shards, engine=engine, store=store, base=base)
    return source


def _stop(source: ShardedSource) -> None:
    source.close()
    source.store.close()


def _creds(source: ShardedSource) -> Credentials:
    return Credentials("party-0", source.shards.shards[0].cfg.key, USERS)


def _stub(port: int) -> tuple[grpc.Channel, object]:
    chan = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    stub = chan.unary_unary(
        "/fedhh.v1.ReportService/SubmitReportBatch",
        request_serializer=report_pb2.ReportBatch.SerializeToString,
        response_deserializer=report_pb2.ReportBatchResult.FromString,
    )
    return chan, stub


def _batch(stub, creds: Credentials, blobs: list[bytes], users) -> list[str]:  # type: ignore[no-untyped-def]
    """Submit the users' reports in one batch; each one's outcome ("OK" or the refusal)."""
    msg = report_pb2.ReportBatch(
        run_id="r",
        task_id=3,
        reports=[report_pb2.UserReport(credential=creds.issue(u), report=blobs[u]) for u in users],
    )
    auth = (("authorization", f"Bearer {creds.issue(users[0])}"),)
    res = stub(msg, metadata=auth, timeout=60)
    out = ["OK"] * len(users)
    for r in res.refused:
        out[r.index] = r.code
    return out


def _ledgers(tmp: Path, shards: int) -> list[dict[int, bytes]]:
    """Each shard's stored reports of the task: user → report."""
    out = []
    for i in range(shards):
        db = sqlite3.connect(ledger_path(tmp / "agent.sqlite", i))
        rows = db.execute("SELECT user_id, report FROM reports WHERE run_id='r' AND task_id=3")
        out.append({int(u): bytes(r) for u, r in rows})
        db.close()
    return out


def _one_process(tmp: Path, group: Group, blobs: list[bytes]):  # type: ignore[no-untyped-def]
    """The tally one process (a DeviceSource) gives for the same reports."""
    source = _source(tmp / "single.sqlite")
    try:
        assert source.reports(group, np.random.default_rng(0)) is None
        _submit(source, blobs, range(USERS))
        return source.reports(group, np.random.default_rng(0))
    finally:
        source.close()
        source.store.close()


def _same(a, b, group: Group) -> None:  # type: ignore[no-untyped-def]
    assert (a.n, a.nbytes) == (b.n, b.nbytes) and np.array_equal(a.state, b.state)
    ea = estimate_reports(a, LENGTH, group.candidates, group.oracle, USERS)
    eb = estimate_reports(b, LENGTH, group.candidates, group.oracle, USERS)
    assert np.array_equal(ea.estimates, eb.estimates) and np.array_equal(ea.stderrs, eb.stderrs)


def test_gate_takes_a_user_once_and_repairs_a_crashed_shard(tmp_path: Path) -> None:
    gate = gt.ShardGate.create(tmp_path / "g", 100, 2, 16)
    other = gt.ShardGate(tmp_path / "g", 100, 2, 16)  # another shard's map of the same file
    try:
        assert gate.begin("r", 1, 5) is True
        assert gate.admit(0, "r", 1, [1])[0] == [gt.CLOSED]  # not open yet
        gate.set_open(True)
        said, s0 = gate.admit(0, "r", 1, [1, 2, 3, 3])
        assert said == [gt.ACCEPTED, gt.ACCEPTED, gt.ACCEPTED, gt.ALREADY]
        assert other.admit(1, "r", 1, [2, 4])[0] == [gt.BUSY, gt.ACCEPTED]  # 2: being stored
        gate.settle(0, s0, stored=True)
        said, _ = other.admit(1, "r", 1, [2, 5, 6])
        assert said == [gt.ALREADY, gt.ACCEPTED, gt.FULL]  # quota 5
        assert other.count() == gate.count() == 5 and gate.run_count("r") == 5
        # shard 1 is killed with 4 and 5 in flight; its ledger has 4 only
        lost = other.repair(1, lambda run, u: u == 4, lambda run, task: (1, 1))
        assert lost == 1 and gate.count() == 4
        assert gate.state(np.array([1, 4, 5])).tolist() == [gt.DONE, gt.DONE, gt.NONE]
        assert gate.admit(0, "r", 1, [5, 4])[0] == [gt.ACCEPTED, gt.ALREADY]
        assert gate.begin("r2", 1, 5) is True  # a new run: nobody has reported in it
        assert gate.state(np.array([1, 4, 5])).tolist() == [0, 0, 0] and gate.count() == 0
        assert gate.repair(0, lambda run, u: u < 0, lambda run, task: (0, 0)) == 0  # r's slot
    finally:
        gate.close()
        other.close()
    with pytest.raises(ParameterError, match="not the shard state"):
        gt.ShardGate(tmp_path / "g", 101, 2, 16)


def test_shards_answer_as_one_process_and_refuse_a_second_report(tmp_path: Path) -> None:
    """Two shards on ports of their own (so each report goes where the test sends it): even
    users report to one, odd to the other; a user's report sent again to the other shard is
    refused. The shards' tallies add up to one process's tally of the same reports."""
    group, blobs = _group("olh-pool"), _reports(_group("olh-pool"), seed=1)
    source = _agent(tmp_path, 2, shared=False)
    chans = []
    try:
        creds = _creds(source)
        stubs = []
        for port in source.shards.ports:
            chan, stub = _stub(port)
            chans.append(chan)
            stubs.append(stub)
        assert source.reports(group, np.random.default_rng(0)) is None  # opens on both
        first = list(range(0, USERS - 100))
        for start in range(0, len(first), 50):
            for s in (0, 1):
                users = [u for u in first[start : start + 50] if u % 2 == s]
                assert set(_batch(stubs[s], creds, blobs, users)) == {"OK"}
        again = _batch(stubs[1], creds, blobs, [0, 2, 4]) + _batch(stubs[0], creds, blobs, [1])
        assert again == ["ALREADY_EXISTS"] * 4
        assert source.reports(group, np.random.default_rng(0)) is None  # quota not reached
        rest = list(range(USERS - 100, USERS))
        assert set(_batch(stubs[0], creds, blobs, rest)) == {"OK"}
        assert _batch(stubs[1], creds, blobs, [3]) == ["ALREADY_EXISTS"]
        tally = source.reports(group, np.random.default_rng(0))  # the quota: closes, merges
        assert tally is not None and tally.n == USERS
        ledgers = _ledgers(tmp_path, 2)
        assert len(ledgers[0]) == (USERS - 100) // 2 + 100 and len(ledgers[1]) == 700
        assert not set(ledgers[0]) & set(ledgers[1])
        _same(tally, _one_process(tmp_path, group, blobs), group)
        cand = cd.oracle_keys(group.candidates, LENGTH)
        replay = source._merge(("r", 3), group.oracle, cand)  # asked again (a replay)
        assert replay is not None and np.array_equal(replay.state, tally.state)
        users = source.close_run("r")
        assert np.array_equal(users, np.arange(USERS))
    finally:
        for c in chans:
            c.close()
        _stop(source)


def test_a_shard_killed_while_devices_report_loses_nothing(tmp_path: Path) -> None:
    """Three shards on one port; 24 device threads report one report a call through 12
    connections (the SDK asks again while its shard is down). One shard is killed (SIGKILL)
    a third of the way: it is restarted on its ledger, every acknowledged report is stored once,
    every user reports once, and the task closes with exactly the quota."""
    group = _group("olh")
    source = _agent(tmp_path, 3, shared=True)
    port = source.shards.ports[0]
    chans = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(12)
    ]
    try:
        creds = _creds(source)
        assert source.reports(group, np.random.default_rng(0)) is None
        outcome: dict[int, str] = {}
        items = group.candidates[np.random.default_rng(5).integers(0, group.candidates.size, USERS)]

        def device(u: int) -> None:
            client = ReporterClient(
                f"127.0.0.1:{port}", credential=creds.issue(u), channel=chans[u % len(chans)]
            )
            gen = np.random.default_rng(100 + u)
            outcome[u] = client.report(int(items[u]), gen, wait=120).status

        victim = source.shards.shards[1]
        pid = victim.pid  # type: ignore[attr-defined]
        with ThreadPoolExecutor(max_workers=24) as pool:
            futures = [pool.submit(device, u) for u in range(USERS)]
            wait_until(lambda: source.gate.count() >= USERS // 3, what="a third of the reports")
            os.kill(pid, signal.SIGKILL)
            for f in futures:
                f.result()
        assert source.shards.restarts >= 1 and victim.pid != pid  # type: ignore[attr-defined]
        tally = source.reports(group, np.random.default_rng(0))
        assert tally is not None and tally.n == USERS
        ledgers = _ledgers(tmp_path, 3)
        stored = [u for led in ledgers for u in led]
        assert sorted(stored) == list(range(USERS))  # each user once, in one ledger
        acked = [u for u, o in outcome.items() if o == "accepted"]
        assert set(outcome.values()) <= {"accepted", "already-reported"}
        assert len(acked) >= USERS - 200 and set(acked) <= set(stored)
        assert all(len(led) for led in ledgers)  # every shard took reports
        n, counts, nbytes = _all_at_once(group, [r for led in ledgers for r in led.values()])
        assert (tally.n, tally.nbytes) == (n, nbytes) and np.array_equal(tally.state, counts)
    finally:
        for c in chans:
            c.close()
        _stop(source)


def test_ray_actor_shards_answer_as_one_process(tmp_path: Path) -> None:
    """The same reports through two shards in Ray actors (Ray on 127.0.0.1 only): exactly the
    tally one process gives."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    group, blobs = _group("oue"), _reports(_group("oue"), seed=3)
    source = None
    chans = []
    try:
        source = _agent(tmp_path, 2, shared=False, engine="ray")
        creds = _creds(source)
        assert source.reports(group, np.random.default_rng(0)) is None
        stubs = []
        for p in source.shards.ports:
            chan, stub = _stub(p)
            chans.append(chan)
            stubs.append(stub)
        for start in range(0, USERS, 100):
            users = list(range(start, min(start + 100, USERS)))
            assert set(_batch(stubs[(start // 100) % 2], creds, blobs, users)) == {"OK"}
        assert _batch(stubs[1], creds, blobs, [0]) == ["ALREADY_EXISTS"]  # 0 went to shard 0
        tally = source.reports(group, np.random.default_rng(0))
        assert tally is not None
        assert all(len(led) for led in _ledgers(tmp_path, 2))
        _same(tally, _one_process(tmp_path, group, blobs), group)
    finally:
        for c in chans:
            c.close()
        if source is not None:
            _stop(source)
        ray.shutdown()
