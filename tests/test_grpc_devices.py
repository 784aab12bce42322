"""200 user devices report concurrently through a party agent's report endpoint (TLS, device
token) during a PEM-Global run: every accepted report is counted exactly once, a second report
of a user is refused with ALREADY_EXISTS (the first kept), malformed reports are refused, and the
run's answer comes from exactly those reports."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_harness import Cluster, make_certs, wait_file, wait_until

from fedhh.clients.reporter import ReporterClient, make_report
from fedhh.oracles import Reports
from fedhh.wire.security import read_token_file

DEVICES = 200
DOMINANT = 77


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, make_certs(tmp_path / "certs"), tmp_path / "tokens.json")
    c.token("analyst", "alice")
    c.token("party", "party-0")
    try:
        yield c
    finally:
        c.stop_all()


def test_200_devices_report_concurrently(cluster: Cluster) -> None:
    cluster.start_coordinator()
    device_tokens = cluster.root / "device-tokens.json"
    from fedhh.wire.security import add_token

    add_token(device_tokens, "device", "app", cluster.root / "device.token")
    port_file = cluster.root / "report.port"
    agent = cluster.start(
        "party-0",
        "party",
        "serve",
        *cluster.connect_args("party", "party-0"),
        "--db",
        str(cluster.root / "party-0.sqlite"),
        "--devices",
        str(DEVICES),
        "--item-bits",
        "8",
        "--listen",
        "127.0.0.1:0",
        "--device-tokens",
        str(device_tokens),
        *cluster.tls_args(port_file),
        "--collect-seconds",
        "60",
        "--poll-seconds",
        "1",
    )
    target = f"127.0.0.1:{wait_file(port_file, agent)}"
    spec = cluster.root / "spec.toml"
    spec.write_text(
        'run_id = "dev-1"\nparties = ["party-0"]\ndeadline_seconds = 120\n'
        '[params]\nmechanism = "pem-global"\nk = 2\nm = 8\nepsilon = 4.0\nseed = 1\n'
    )
    assert cluster.query("start", str(spec)).returncode == 0

    rng = np.random.default_rng(11)
    items = np.where(rng.random(DEVICES) < 0.5, DOMINANT, rng.integers(0, 256, DEVICES))
    token = read_token_file(cluster.root / "device.token")
    clients = [ReporterClient(target, token=token, ca_cert=cluster.certs.ca) for _ in range(8)]

    # Wrong token and malformed reports are refused.
    with ReporterClient(target, token="wrong", ca_cert=cluster.certs.ca) as bad:
        with pytest.raises(grpc.RpcError) as err:
            bad.fetch_task("u-x")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    task = wait_until(lambda: _task(clients[0], "probe"), what="the first report task")
    for junk in (b"junk", Reports("grr", 3, {"symbol": np.zeros(2, np.uint32)}).to_bytes()):
        with pytest.raises(grpc.RpcError) as err:
            clients[0].submit("probe", task, junk)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def device(i: int) -> tuple[str, str]:
        client = clients[i % len(clients)]
        gen = np.random.default_rng(1000 + i)
        first = client.report(f"user-{i}", int(items[i]), gen, wait=120)
        # A second report of the same user is refused, whatever task is open.
        try:
            t = client.fetch_task(f"user-{i}")
            client.submit(f"user-{i}", t, make_report(t, int(items[i]), gen))
            second = "accepted"
        except grpc.RpcError as exc:
            second = exc.code().name
        return first.status, second

    with ThreadPoolExecutor(max_workers=DEVICES) as pool:
        outcomes = list(pool.map(device, range(DEVICES)))
    assert all(first == "accepted" for first, _ in outcomes), outcomes
    assert all(second in ("ALREADY_EXISTS", "NOT_FOUND") for _, second in outcomes), outcomes
    # After the run no task is open: a repeated submit of the last task is still refused.
    last_task = task
    with pytest.raises(grpc.RpcError) as err:
        clients[0].submit("user-0", last_task, make_report(last_task, 1))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

    def finished() -> dict | None:
        out = cluster.query("status", "dev-1")
        info = json.loads(out.stdout) if out.returncode == 0 else None
        return info if info and info["state"] != "running" else None

    info = wait_until(finished, what="the device run to end")
    assert info["state"] == "done", info
    cost = json.loads(cluster.query("cost", "dev-1").stdout)["cost"]
    assert cost["reports_per_party"] == {"party-0": DEVICES}
    assert [lv["reports"] for lv in cost["levels"]] == [100, 100]
    top = json.loads(cluster.query("top", "dev-1").stdout)
    assert top[0]["code"] == DOMINANT

    assert clients[0].status("dev-1").accepted == DEVICES
    db = sqlite3.connect(cluster.root / "party-0.sqlite")
    users = [r[0] for r in db.execute("SELECT user_id FROM reports WHERE run_id='dev-1'")]
    assert len(users) == len(set(users)) == DEVICES
    for c in clients:
        c.close()


def _task(client: ReporterClient, user: str):  # type: ignore[no-untyped-def]
    try:
        return client.fetch_task(user)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
