"""Operability with real processes on 127.0.0.1 (issue 24 item 5): a coordinator and three party
agents serve Prometheus metrics (``--metrics-listen``), scraped while a run waits and after it
finished: runs by state, rounds, requests and replies, refusals by status at the coordinator;
requests answered, levels, user reports and the ε left at each agent, equal to what the run's
result and the agents' state files say. The coordinator logs JSON lines (``--log-format json``)."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_harness import FEDHH, Cluster, party_data, running_cluster, wait_until
from prometheus_client.parser import text_string_to_metric_families

from fedhh.mechanisms.params import MechanismParams
from fedhh.server.analyst import AnalystClient
from fedhh.server.services import MAX_WATCHERS
from fedhh.wire.security import open_channel
from fedhh.wire.tokens import read_token_file
from fedhh.wire.v1 import analyst_pb2, analyst_pb2_grpc

PARTIES = ["party-0", "party-1", "party-2"]
PARAMS = MechanismParams(mechanism="taps", k=8, m=16, seed=3, epsilon=2.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, PARTIES) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_and_json_logs_during_and_after_a_run(cluster: Cluster) -> None:
    files = party_data(cluster.root)
    ports = {name: _free_port() for name in ("coordinator", *PARTIES)}
    coordinator = cluster.start_coordinator(
        "--metrics-listen", f"127.0.0.1:{ports['coordinator']}", "--log-format", "json"
    )
    started = cluster.start_run("taps-1", PARTIES, PARAMS)  # waits: no party registered yet
    assert started.returncode == 0, started.stderr
    waiting = scrape(ports["coordinator"])
    assert waiting[("fedhh_runs", (("state", "waiting"),))] == 1
    assert waiting[("fedhh_rounds_total", ())] == 0 and waiting[("fedhh_parties", ())] == 0
    assert waiting[("fedhh_state_writable", ())] == 1

    for pid, f in zip(PARTIES, files, strict=True):
        cluster.start_party(pid, f, "--metrics-listen", f"127.0.0.1:{ports[pid]}")
    wait_until(
        lambda: scrape(ports["coordinator"])[("fedhh_runs", (("state", "done"),))] == 1,
        what="the run to finish",
    )
    token = read_token_file(cluster.token("analyst", "alice"))
    with AnalystClient(cluster.target, token=token, ca_cert=cluster.certs.ca) as client:
        doc = client.document("taps-1")
    missing = cluster.query("status", "no-such-run")
    assert missing.returncode != 0

    after = scrape(ports["coordinator"])
    rounds = doc["cost"]["rounds"]
    assert after[("fedhh_rounds_total", ())] == rounds > 0
    assert after[("fedhh_requests_total", ())] == after[("fedhh_replies_total", ())] >= rounds
    assert after[("fedhh_parties", ())] == 3 and after[("fedhh_party_failures_total", ())] == 0
    refused = {k: v for k, v in after.items() if k[0] == "fedhh_refusals_total"}
    assert any(dict(labels)["code"] == "NOT_FOUND" for _, labels in refused), refused

    levels = doc["cost"]["levels"]
    for pid in PARTIES:
        got = scrape(ports[pid])
        answered = len(cluster.handled(pid))
        assert got[("fedhh_party_requests_total", (("outcome", "answered"),))] == answered > 0
        mine = [lv for lv in levels if lv["party"] == pid]
        assert got[("fedhh_party_levels_total", ())] == len(mine)
        assert got[("fedhh_party_reports_total", ())] == sum(lv["reports"] for lv in mine) > 0
        assert got[("fedhh_party_answer_seconds_count", ())] == answered
        assert got[("fedhh_party_epsilon_left", ())] == pytest.approx(40.0 - PARAMS.epsilon)

    lines = [json.loads(line) for line in coordinator.output().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    assert any("done after" in e["message"] for e in lines)

    # a run that waits for a party that never registers: --wait gives up after --timeout, exit 1
    late = cluster.start_run("late", ["party-9"], PARAMS, "--wait", "--timeout", "1")
    assert late.returncode == 1 and "still waiting" in late.stderr, late.stderr
    assert "run late: waiting for party-9 to register" in late.stderr, late.stderr
    status = cluster.query("status", "late", json_out=False)
    assert status.stdout.strip().endswith("waiting for party-9 to register"), status.stdout

    # watch: the coordinator streams each change until the run ends (waiting, then cancelled)
    watch = subprocess.Popen(
        [*FEDHH, "query", *cluster.connect_args("analyst", "alice"), "watch", "late", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        assert first["state"] == "waiting" and first["run_id"] == "late", first
        # each watcher holds a server thread: MAX_WATCHERS at once, one more is refused
        with open_channel(cluster.target, token=token, ca_cert=cluster.certs.ca) as ch:
            stub = analyst_pb2_grpc.AnalystServiceStub(ch)
            ref = analyst_pb2.RunRef(run_id="late")
            streams = [stub.WatchRun(ref, timeout=60) for _ in range(MAX_WATCHERS - 1)]
            assert all(next(st).state == "waiting" for st in streams)
            with pytest.raises(grpc.RpcError) as err:
                next(stub.WatchRun(ref, timeout=60))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for st in streams:
                st.cancel()
        assert cluster.query("cancel", "late").returncode == 0
        rest, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["state"] == "cancelled" and "cancelled by alice" in last["error"], last
    assert watch.returncode == 1 and "run late cancelled" in err, err
    done = cluster.query("watch", "taps-1", json_out=False)  # an ended run: one line, exit 0
    assert done.returncode == 0 and done.stdout.startswith("run taps-1: done"), done.stdout
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    result = cluster.query("result", "taps-1", json_out=False)  # the whole document
    assert result.returncode == 0 and json.loads(result.stdout) == doc
