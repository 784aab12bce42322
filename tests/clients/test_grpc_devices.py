"""User devices report through a party agent's report endpoint (TLS, per-user credentials)
during PEM-Global runs, with real processes on 127.0.0.1:

* 200 devices report concurrently: every accepted report is counted exactly once, a second
  report of a user is refused with ALREADY_EXISTS (the first kept), a credential never reports
  for another user, forged or unenrolled credentials are refused, malformed and oversized
  reports are refused, a device refuses a task over its own ε limit, and the run's answer comes
  from exactly the accepted reports;
* a batch of many users' reports: each entry checked and counted once; a cancelled run closes
  its report task (FAILED_PRECONDITION afterwards) and settles the users' privacy budget."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_harness import FEDHH, Cluster, running_cluster, wait_until

from fedhh.clients.credentials import read_credentials
from fedhh.clients.device_wire import ReportFields
from fedhh.clients.reporter import (
    BadCredential,
    EndpointUnavailable,
    ReporterClient,
    ReportTask,
    make_report,
)
from fedhh.errors import ParameterError, TransportError
from fedhh.mechanisms.params import MechanismParams
from fedhh.oracles import Reports
from fedhh.wire.security import open_channel
from fedhh.wire.v1 import report_pb2, report_pb2_grpc

DEVICES = 200
DOMINANT = 77
PARAMS = MechanismParams(mechanism="pem-global", k=2, m=8, epsilon=4.0, seed=1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, ["party-0"]) as c:
        yield c


def code_of(fn, *args, **kw) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """The status a call was refused with (the SDK's typed TransportError, or a raw stub's)."""
    with pytest.raises((grpc.RpcError, TransportError)) as err:
        fn(*args, **kw)
    if isinstance(err.value, TransportError):
        return grpc.StatusCode[err.value.code]
    return err.value.code()


def start_run(cluster: Cluster, run_id: str) -> None:
    done = cluster.start_run(run_id, ["party-0"], PARAMS)
    assert done.returncode == 0, done.stderr


def status(cluster: Cluster, run_id: str) -> dict:
    out = cluster.query("status", run_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def open_task(client: ReporterClient):  # type: ignore[no-untyped-def]
    try:
        return client.fetch_task()
    except TransportError as exc:
        if exc.code == "NOT_FOUND":
            return None
        raise


def test_sdk_errors_are_typed(tmp_path: Path) -> None:
    """No endpoint on the port: EndpointUnavailable; a CA file that is not there or a string
    that is no credential: ParameterError (never a raw grpc or OS error)."""
    cred = "fhc2:party-0:3:0:0:tag"
    with ReporterClient("127.0.0.1:1", credential=cred, insecure=True, timeout=5) as c:
        with pytest.raises(EndpointUnavailable) as err:
            c.fetch_task()
        assert err.value.code == "UNAVAILABLE"
    with pytest.raises(ParameterError, match="CA certificate"):
        ReporterClient("127.0.0.1:1", credential=cred, ca_cert=tmp_path / "none.pem")
    for bad in ("token", cred + "\n", cred + "é"):  # a header value it could not send
        with pytest.raises(ParameterError, match="not a fedhh user credential"):
            ReporterClient("127.0.0.1:1", credential=bad, insecure=True)


def test_200_devices_report_concurrently(cluster: Cluster) -> None:
    cluster.start_coordinator()
    creds = cluster.enroll("party-0", DEVICES)
    assert len(creds) == DEVICES and len(set(creds.values())) == DEVICES
    agent, target = cluster.start_device_party("party-0", DEVICES, "--collect-seconds", "60")
    start_run(cluster, "dev-1")

    ca = cluster.certs.ca
    channel = open_channel(target, token=None, ca_cert=ca)
    clients = [
        ReporterClient(target, credential=creds[str(i)], channel=channel) for i in range(DEVICES)
    ]
    task = wait_until(lambda: open_task(clients[0]), what="the first report task")
    good = make_report(task, 5)

    # Credentials: forged, unenrolled, another party's, or used for another user.
    c0 = creds["0"]
    forged = c0[:-2] + ("AA" if not c0.endswith("AA") else "BB")
    unenrolled = c0.replace(":0:", f":{DEVICES}:")
    other_party = c0.replace("party-0", "party-1")
    for bad in ("wrong", forged, unenrolled, other_party):
        with ReporterClient(target, credential=c0, ca_cert=ca) as probe:
            probe._auth = (("authorization", f"Bearer {bad}"),)
            with pytest.raises(BadCredential) as refusal:  # typed by what a device does
                probe.fetch_task()
            assert refusal.value.code == "UNAUTHENTICATED"
            assert probe.report(5, wait=1).status == "bad-credential"  # typed, not a raw error
    as_other = ReporterClient(target, credential=c0, channel=channel)
    as_other.user_id = "1"  # user 0's credential, claiming to be user 1
    assert code_of(as_other.fetch_task) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(as_other.submit, task, good) == grpc.StatusCode.PERMISSION_DENIED

    # Malformed and oversized reports; a device over its own ε limit makes no report.
    deep = b"[" * 20000 + b"]" * 20000  # a header that overflows the parser's stack
    huge_size = b'{"kind":"grr","size":1e999,"fields":{}}'  # a size that is no integer
    for junk in (
        b"junk",
        Reports("grr", 3, {"symbol": np.zeros(2, np.uint32)}).to_bytes(),
        struct.pack("<4sBI", b"FHHR", 2, len(deep)) + deep,
        struct.pack("<4sBI", b"FHHR", 2, len(huge_size)) + huge_size,
    ):
        assert code_of(clients[0].submit, task, junk) == grpc.StatusCode.INVALID_ARGUMENT
    raw = channel.unary_unary("/fedhh.v1.ReportService/SubmitReport")  # not a protobuf message
    assert code_of(raw, b"\xff\xff", metadata=clients[0]._auth, timeout=10) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # Wire version 2: a field over its limit, a field missing, another oracle's report.
    name, limit = next(iter(task.build_oracle().report_layout(task.candidates.size).limits.items()))
    case = good.WhichOneof("oracle")
    out_of_range, missing = report_pb2.Report(), report_pb2.Report()
    out_of_range.CopyFrom(good)
    setattr(getattr(out_of_range, case), name, limit)
    missing.CopyFrom(good)
    getattr(missing, case).ClearField(name)
    other = report_pb2.Report(olh=report_pb2.OlhReport(seed=1, bucket=0))
    for bad, why in (
        (out_of_range, f"report field {case}.{name} = {limit} is out of range"),
        (missing, f"report field {case}.{name} is missing"),
        (other, f"the task wants a {case} report, got olh"),
    ):
        with pytest.raises(TransportError, match=why) as refused:
            clients[0].submit(task, bad)
        assert refused.value.code == "INVALID_ARGUMENT"
    huge = b"\x00" * (1 << 17)
    assert code_of(clients[0].submit, task, huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    careful = ReporterClient(target, credential=creds["0"], channel=channel, max_epsilon=1.0)
    assert careful.report(3).status == "epsilon-too-high"
    assert clients[0].status("dev-1").accepted == 0  # nothing stored

    rng = np.random.default_rng(11)
    items = np.where(rng.random(DEVICES) < 0.5, DOMINANT, rng.integers(0, 256, DEVICES))

    def device(i: int) -> tuple[str, str]:
        client = clients[i]
        gen = np.random.default_rng(1000 + i)
        first = client.report(int(items[i]), gen, wait=120)
        # A second report of the same user is refused, whatever task is open.
        try:
            t = client.fetch_task()
            client.submit(t, make_report(t, int(items[i]), gen))
            second = "accepted"
        except TransportError as exc:
            second = exc.code
        return first.status, second

    with ThreadPoolExecutor(max_workers=64) as pool:
        outcomes = list(pool.map(device, range(DEVICES)))
    assert all(first == "accepted" for first, _ in outcomes), outcomes
    assert all(second in ("ALREADY_EXISTS", "NOT_FOUND") for _, second in outcomes), outcomes
    # After the run no task is open: a repeated submit of the last task is still refused.
    assert code_of(clients[0].submit, task, good) == grpc.StatusCode.ALREADY_EXISTS

    info = wait_until(
        lambda: (s := status(cluster, "dev-1"))["state"] != "running" and s,
        what="the device run to end",
    )
    assert info["state"] == "done", info
    cost = json.loads(cluster.query("cost", "dev-1").stdout)["cost"]
    assert cost["reports_per_party"] == {"party-0": DEVICES}
    assert [lv["reports"] for lv in cost["levels"]] == [100, 100]
    top = json.loads(cluster.query("top", "dev-1").stdout)
    assert top[0]["code"] == DOMINANT

    assert clients[0].status("dev-1").accepted == DEVICES
    db = sqlite3.connect(cluster.root / "party-0.sqlite")
    users = [r[0] for r in db.execute("SELECT user_id FROM reports WHERE run_id='dev-1'")]
    assert sorted(users, key=int) == [str(i) for i in range(DEVICES)]
    channel.close()
    assert agent.alive()


def test_batch_and_cancelled_run(cluster: Cluster) -> None:
    cluster.start_coordinator()
    creds = cluster.enroll("party-0", DEVICES)
    _, target = cluster.start_device_party("party-0", DEVICES, "--collect-seconds", "600")
    start_run(cluster, "batch-1")
    ca = cluster.certs.ca
    relay = ReporterClient(target, credential=creds["0"], ca_cert=ca)
    task = wait_until(lambda: open_task(relay), what="the first report task")
    rng = np.random.default_rng(3)
    entries = [(creds[str(i)], make_report(task, int(rng.integers(256)), rng)) for i in range(40)]
    entries += [
        (creds["3"], entries[3][1]),  # user 3 twice in one batch
        ("fhc1:party-0:7:forged", entries[7][1]),  # not a credential of this party
        (creds["50"], b"junk"),  # malformed
        (creds["51"], b"\x00" * (1 << 17)),  # oversized
    ]
    accepted, refused = relay.submit_batch(task, entries)
    assert accepted == 40
    assert [(i, code) for i, code, _ in refused] == [
        (40, "ALREADY_EXISTS"),
        (41, "UNAUTHENTICATED"),
        (42, "INVALID_ARGUMENT"),
        (43, "RESOURCE_EXHAUSTED"),
    ]
    again, refused = relay.submit_batch(task, entries[:5])  # counted once
    assert again == 0 and {code for _, code, _ in refused} == {"ALREADY_EXISTS"}
    assert relay.status("batch-1").accepted == 40

    # Wire version 1 (an SDK of the previous version): the task's candidates as the NDArray,
    # the report as a frame; still served and accepted. A report in both forms is refused.
    old_sdk = report_pb2_grpc.ReportServiceStub(open_channel(target, token=None, ca_cert=ca))
    md = (("authorization", f"Bearer {creds['45']}"),)
    v1_task = old_sdk.GetTask(report_pb2.GetTaskRequest(), metadata=md, timeout=10)
    assert not v1_task.candidate_keys
    assert np.array_equal(ReportTask.from_pb(v1_task).candidates, task.candidates)
    fields = ReportFields(task.build_oracle().report_layout(task.candidates.size))
    frame = fields.frame(make_report(task, 5, rng))
    both = report_pb2.SubmitReportRequest(
        run_id=task.run_id, task_id=task.task_id, report=frame, ldp_report=make_report(task, 5)
    )
    md46 = (("authorization", f"Bearer {creds['46']}"),)
    with pytest.raises(grpc.RpcError) as err:
        old_sdk.SubmitReport(both, metadata=md46, timeout=10)
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in err.value.details()
    )
    assert relay.submit_batch(task, [(creds["45"], frame)]) == (1, [])

    # Revocation while the agent runs: user 70's credential is refused within a second or so
    # (the precise reason reaches the device); a credential issued afterwards works.
    db_flag = ["--party-id", "party-0", "--db", str(cluster.root / "party-0.sqlite")]
    revoke = subprocess.run(
        [*FEDHH, "party", "revoke", *db_flag, "--user", "70"], capture_output=True, text=True
    )
    assert revoke.returncode == 0 and "revoked the credentials of 1 user" in revoke.stdout

    user70 = ReporterClient(target, credential=creds["70"], ca_cert=ca)

    def refused_70() -> str | None:  # asks for the task: nothing is reported meanwhile
        try:
            user70.fetch_task()
        except TransportError as exc:
            return exc.message if exc.code == "UNAUTHENTICATED" else None
        return None

    why = wait_until(refused_70, what="user 70's revoked credential to be refused")
    assert why.startswith("user credential revoked at "), why
    got = relay.submit_batch(task, [(creds["70"], entries[0][1])])
    assert got[0] == 0 and got[1][0][1:] == ("UNAUTHENTICATED", why), got
    user70.close()
    out = cluster.root / "user-70.credentials"
    enroll = subprocess.run(
        [*FEDHH, "party", "enroll", *db_flag, "--users", str(DEVICES), "--only", "70",
         "--valid-days", "1", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert enroll.returncode == 0, enroll.stderr
    fresh = read_credentials(out)
    assert list(fresh) == ["70"] and fresh["70"] != creds["70"]
    assert relay.submit_batch(task, [(fresh["70"], entries[0][1])]) == (1, [])
    assert relay.status("batch-1").accepted == 42

    # A cancelled run closes its report task: later reports are refused, nothing more stored.
    assert cluster.query("cancel", "batch-1").returncode == 0

    def closed() -> bool:
        try:  # a malformed report: refused on its own while the task is open
            relay.submit_batch(task, [(creds["60"], b"junk")])
        except TransportError as exc:
            return exc.code == "FAILED_PRECONDITION"
        return False

    wait_until(closed, what="the cancelled run's task to close")
    single = ReporterClient(target, credential=creds["61"], ca_cert=ca)
    assert code_of(single.submit, task, entries[0][1]) == grpc.StatusCode.FAILED_PRECONDITION
    assert relay.status("batch-1").accepted == 42  # user 0 reported in it
    # a user who took no part in a run that is not open learns nothing about it
    assert code_of(single.status, "batch-1") == grpc.StatusCode.PERMISSION_DENIED
    # The users who reported were charged ε = 4 (the others nothing).
    parties = json.loads(cluster.query("parties", admin=True).stdout)
    assert parties[0]["party_id"] == "party-0" and parties[0]["epsilon_budget"] == 40.0
    db = sqlite3.connect(cluster.root / "party-0.sqlite")
    spent = np.frombuffer(db.execute("SELECT value FROM meta WHERE key='spent'").fetchone()[0])
    assert (spent[:40] == 4.0).all() and spent[45] == 4.0 and spent[70] == 4.0
    assert np.count_nonzero(spent) == 42
    relay.close()
    single.close()
