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

import json
import os
import signal
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from grpc_harness import FEDHH, running_cluster, wait_until
from test_device_tally import USERS, _all_at_once, _group, _reports, _source, _submit

from fedhh.clients import gate as gt
from fedhh.clients.cli import _check_layout
from fedhh.clients.credentials import Credentials
from fedhh.clients.reporter import NoOpenTask, ReporterClient, ReportTask, make_report
from fedhh.clients.shard import ShardConfig, ledger_path
from fedhh.clients.shards import ShardedSource, start_sharded
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.errors import ParameterError
from fedhh.mechanisms.local import estimate_reports
from fedhh.mechanisms.params import MechanismParams
from fedhh.ops import procs
from fedhh.protocol.party import Group
from fedhh.wire.tokens import add_token
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
    """Three shards on one port; 24 device threads report one report a call through 24
    connections (the SDK asks again while its shard is down). One shard is killed (SIGKILL)
    a third of the way: it is restarted on its ledger, every acknowledged report is stored once,
    every user reports once, and the task closes with exactly the quota."""
    group = _group("olh")
    source = _agent(tmp_path, 3, shared=True)
    port = source.shards.ports[0]
    chans = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(24)
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
        # (the devices may be done first: the other shards took the new connections)
        wait_until(lambda: source.shards.restarts >= 1, timeout=60, what="the restart")
        assert victim.pid != pid  # type: ignore[attr-defined]
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


def test_ray_actor_shards_answer_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same reports through two shards in Ray actors (Ray on 127.0.0.1 only): exactly the
    tally one process gives."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
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


def _level(target: str, ca: Path, creds: dict[str, str], users: range, items) -> ReportTask:  # type: ignore[no-untyped-def]
    """The users report (in batches of 4, each batch on a connection of its own) to the open
    task; returns the task."""
    probe = ReporterClient(target, credential=creds[str(users[0])], ca_cert=ca)
    task = wait_until(lambda: _open_task(probe), what="a report task")
    probe.close()
    tls = grpc.ssl_channel_credentials(ca.read_bytes())
    for start in range(users.start, users.stop, 4):
        chunk = range(start, min(start + 4, users.stop))
        entries = [
            report_pb2.UserReport(
                credential=creds[str(u)],
                ldp_report=make_report(task, int(items[u]), np.random.default_rng(1000 + u)),
            )
            for u in chunk
        ]
        msg = report_pb2.ReportBatch(run_id=task.run_id, task_id=task.task_id, reports=entries)
        chan = grpc.secure_channel(target, tls, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = chan.unary_unary(
            "/fedhh.v1.ReportService/SubmitReportBatch",
            request_serializer=report_pb2.ReportBatch.SerializeToString,
            response_deserializer=report_pb2.ReportBatchResult.FromString,
        )
        auth = (("authorization", f"Bearer {creds[str(chunk[0])]}"),)
        res = stub(msg, metadata=auth, timeout=60)
        chan.close()
        assert res.accepted == len(chunk), res.refused
    return task


def _open_task(client: ReporterClient) -> ReportTask | None:
    try:
        return client.fetch_task()
    except NoOpenTask:
        return None


def test_a_party_of_three_ingestion_processes_answers_as_one(tmp_path: Path) -> None:
    """``fedhh party serve --ingest-processes 3`` (TLS, one port) and a single-process agent,
    each under its own coordinator, get the same device reports for the same run: the runs'
    answers are equal. The shards die with their agent, killed alone (SIGKILL)."""
    params = MechanismParams(mechanism="pem-global", k=4, m=8, epsilon=4.0, seed=1, answer_alpha=0)
    items = np.where(
        np.random.default_rng(11).random(200) < 0.5,
        77,
        np.random.default_rng(12).integers(0, 256, 200),
    )
    answers: list[tuple[object, ...]] = []
    for name, extra in (("sharded", ["--ingest-processes", "3"]), ("single", [])):
        with running_cluster(tmp_path / name, ["party-0"]) as cluster:
            cluster.start_coordinator()
            creds = cluster.enroll("party-0", 200)
            agent, target = cluster.start_device_party("party-0", 200, *extra)
            done = cluster.start_run("dev", ["party-0"], params)
            assert done.returncode == 0, done.stderr
            first = _level(target, cluster.certs.ca, creds, range(0, 100), items)
            second = _level(target, cluster.certs.ca, creds, range(100, 200), items)
            assert (first.task_id, second.task_id) != (first.task_id, first.task_id)
            info = wait_until(
                lambda c=cluster: _state(c) != "running" and _state(c), what="the run to end"
            )
            assert info == "done", agent.output()
            top = cluster.query("result", "dev")
            assert top.returncode == 0, top.stderr
            doc = json.loads(top.stdout)
            levels = [(lv["length"], lv["reports"]) for lv in doc["cost"]["levels"]]
            answers.append((doc["top_k"], levels))
            if name == "sharded":
                kids = psutil.Process(agent.popen.pid).children()
                shard_pids = [k.pid for k in kids]
                assert len(shard_pids) == 3
                counts = [
                    sqlite3.connect(ledger_path(cluster.root / "party-0.sqlite", i))
                    .execute("SELECT COUNT(*) FROM reports")
                    .fetchone()[0]
                    for i in range(3)
                ]
                assert sum(counts) == 200 and all(counts), counts  # every shard took reports
                os.kill(agent.popen.pid, signal.SIGKILL)  # the agent alone
                agent.popen.wait(timeout=20)
                wait_until(lambda p=shard_pids: not any(map(procs.running, p)), timeout=30)
    assert answers[0] == answers[1] and len(answers[0][0]) == 4  # type: ignore[arg-type]


def _state(cluster) -> str:  # type: ignore[no-untyped-def]
    out = cluster.query("status", "dev")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["state"])


def test_ingest_processes_bad_input(tmp_path: Path) -> None:
    """A number of ingestion processes out of range, one for a data party, or another than a
    state file was first served with: one precise error, nothing started."""
    token = tmp_path / "p.token"
    add_token(tmp_path / "tokens.json", "party", "party-0", token)
    base = [*FEDHH, "party", "serve", "--party-id", "party-0", "--coordinator", "127.0.0.1:1"]
    base += ["--token-file", str(token), "--insecure", "--db", str(tmp_path / "a.sqlite")]
    dev = ["--devices", "10", "--item-bits", "8", "--listen", "127.0.0.1:0"]
    data = tmp_path / "d.txt"
    data.write_text("1\n2\n")
    for extra, why in (
        ([*dev, "--ingest-processes", "0"], "--ingest-processes must be in 1..256, got 0"),
        (
            ["--data", str(data), "--item-bits", "8", "--ingest-processes", "2"],
            "--ingest-processes/--ingest-engine ray are for a device party (--devices N)",
        ),
    ):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and f"fedhh: error: {why}" in done.stderr, done.stderr
    store = AgentStore.of_party(tmp_path / "b.sqlite", "party-0")
    try:
        _check_layout(store, 3, tmp_path / "b.sqlite")
        _check_layout(store, 3, tmp_path / "b.sqlite")
        with pytest.raises(ParameterError, match="serve it with --ingest-processes 3"):
            _check_layout(store, 1, tmp_path / "b.sqlite")
    finally:
        store.close()
