"""Deployment over gRPC, end to end with real processes on 127.0.0.1: one coordinator (TLS,
tokens, SQLite) and three party agents complete a TAPS run; the analyst CLI and the Python client
read the top-k, which equals `fedhh simulate` on the same data and seed. Then the recovery
scenarios: a party agent and the coordinator killed mid-run and restarted."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_harness import FEDHH, Cluster, codec, party_data, running_cluster, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedhh.datasets import load_party_files
from fedhh.mechanisms.params import MechanismParams
from fedhh.run.engine import simulate
from fedhh.run.settings import run_spec_text
from fedhh.server.analyst import AnalystClient
from fedhh.wire.security import open_channel
from fedhh.wire.tokens import read_token_file

PARTIES = ["party-0", "party-1", "party-2"]
# step_rule "adaptive" pins the run's shape: one shared level and three sequential searches
PARAMS = MechanismParams(mechanism="taps", k=8, m=16, seed=3, step_rule="adaptive")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, PARTIES) as c:
        yield c


def expected(files: list[Path], params: MechanismParams = PARAMS, run_id: str = "expected"):
    ds = load_party_files(files, codec=codec())
    return simulate(ds.parties, ds.codec, params, run_id=run_id, party_ids=PARTIES)


def check_same(top: list[dict], files: list[Path], params: MechanismParams = PARAMS) -> None:
    want = expected(files, params)
    assert [r["code"] for r in top] == [int(c) for c in want.items]
    assert [r["item"] for r in top] == [str(int(c)) for c in want.items]
    np.testing.assert_array_equal([r["estimate"] for r in top], want.estimates)
    np.testing.assert_array_equal([r["stderr"] for r in top], want.stderrs)
    np.testing.assert_array_equal([r["parties"] for r in top], want.contributors)


def test_taps_run_matches_simulate(cluster: Cluster) -> None:
    files = party_data(cluster.root)
    cluster.start_coordinator()
    # a run spec without m, before any party registered: the run takes their item width
    spec = cluster.root / "no-m.toml"
    names = [f.name for f in fields(PARAMS) if f.name != "m"]
    spec.write_text(run_spec_text(PARTIES, PARAMS, names, run_id="taps-early"))
    assert "\nm = " not in spec.read_text()
    early = cluster.query("start", str(spec))
    assert early.returncode == 0 and json.loads(early.stdout)["state"] == "waiting", early.stderr
    for pid, f in zip(PARTIES, files, strict=True):
        cluster.start_party(pid, f)
    started = cluster.start_run("taps-1", PARTIES, PARAMS, "--wait")
    assert started.returncode == 0, started.stderr
    said = started.stderr.splitlines()  # --wait tells the run's progress, a line a change
    assert said[-1].startswith("run taps-1: done") and any("round 2" in ln for ln in said), said
    assert json.loads(started.stdout)["state"] == "done"

    top = cluster.query("top", "taps-1")
    assert top.returncode == 0, top.stderr
    check_same(json.loads(top.stdout), files)

    table = cluster.query("top", "taps-1", "-k", "3", json_out=False)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 4

    runs = {r["run_id"]: r for r in json.loads(cluster.query("runs").stdout)}
    assert set(runs) == {"taps-1", "taps-early"} and runs["taps-1"]["round"] == 4
    assert cluster.query("watch", "taps-early").returncode == 0
    assert json.loads(cluster.query("top", "taps-early").stdout) == json.loads(top.stdout)
    spec.write_text(run_spec_text(PARTIES, PARAMS, names, run_id="taps-late"))  # registered now
    late = cluster.query("start", str(spec), "--wait")
    assert late.returncode == 0, late.stderr
    assert json.loads(cluster.query("top", "taps-late").stdout) == json.loads(top.stdout)

    # What the run guaranteed, per recipient and group: the same block as in-process
    privacy = cluster.query("privacy", "taps-1")
    assert privacy.returncode == 0, privacy.stderr
    shown = json.loads(privacy.stdout)
    # the parties' budgets come with it, hidden from an analyst (query parties' rule)
    assert shown.pop("budgets") == {p: {"hidden": True} for p in PARTIES}
    assert shown == expected(files).privacy
    text = cluster.query("privacy", "taps-1", json_out=False).stdout
    # the connection from the environment, --json after the subcommand
    env = {
        **os.environ,
        "FEDHH_COORDINATOR": cluster.target,
        "FEDHH_TOKEN_FILE": str(cluster.token("analyst", "alice")),
        "FEDHH_CA_CERT": str(cluster.certs.ca),
    }
    again = subprocess.run(
        [*FEDHH, "query", "top", "taps-1", "--json"], capture_output=True, text=True, env=env
    )
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(top.stdout)
    freq = subprocess.run(
        [*FEDHH, "query", "freq", "taps-1", "1"], capture_output=True, text=True, env=env
    )
    row = freq.stdout.splitlines()[1].split()
    assert freq.returncode == 0 and row[:5] == ["1", "False", "-", "-", "-"], freq.stdout
    assert "coordinator" in text and "(DP, δ = 1e-08)" in text and "central_epsilon" in text

    # The Python client: the same operations.
    token = read_token_file(cluster.token("analyst", "alice"))
    with AnalystClient(cluster.target, token=token, ca_cert=cluster.certs.ca) as client:
        top3 = client.top("taps-1", k=3)
        assert top3 == json.loads(top.stdout)[:3]
        freq = client.freq("taps-1", [top3[0]["item"], "1"])
        assert freq[0]["found"] and freq[0]["estimate"] == top3[0]["estimate"]
        assert not freq[1]["found"]
        cost = client.cost("taps-1")
        assert cost["cost"]["rounds"] == 4
        assert sum(cost["cost"]["reports_per_party"].values()) == cost["privacy"]["users_reported"]
        doc = client.document("taps-1")
        assert doc["format"] == "fedhh.result/1" and doc["failed_parties"] == []

    # Health answers without a token; reflection needs one.
    with open_channel(cluster.target, token=None, ca_cert=cluster.certs.ca) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            list(
                refl.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with open_channel(cluster.target, token=token, ca_cert=cluster.certs.ca) as ch:
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"fedhh.v1.PartyService", "fedhh.v1.AnalystService"} <= names

    # The audit log holds the run's history.
    db = sqlite3.connect(cluster.root / "coord.sqlite")
    actions = [r[0] for r in db.execute("SELECT action FROM audit WHERE run_id='taps-1'")]
    assert actions[0] == "start" and "launched" in actions and actions[-1] == "done"
    assert actions.count("reply") == 6


def test_every_mechanism_matches_simulate(cluster: Cluster) -> None:
    """The other federated mechanisms over the same agents: each the in-process result, with
    the same byte costs."""
    files = party_data(cluster.root)
    cluster.start_coordinator()
    for pid, f in zip(PARTIES, files, strict=True):
        cluster.start_party(pid, f)
    for mechanism in ("pem-local", "pem-global", "tap"):
        params = replace(PARAMS, mechanism=mechanism)
        started = cluster.start_run(mechanism, PARTIES, params, "--wait")
        assert json.loads(started.stdout)["state"] == "done", started.stdout
        check_same(json.loads(cluster.query("top", mechanism).stdout), files, params)
        cost = json.loads(cluster.query("cost", mechanism).stdout)["cost"]
        want = expected(files, params, run_id=mechanism).cost  # the run id is in every request
        assert [cost[k] for k in ("rounds", "bytes_to_parties", "bytes_to_coordinator")] == [
            want[k] for k in ("rounds", "bytes_to_parties", "bytes_to_coordinator")
        ]


def test_party_and_coordinator_killed_mid_run(cluster: Cluster) -> None:
    """party-1 (the smallest, last in the TAPS order) crashes after its first reply; the other
    parties complete rounds 2 and 3; the coordinator is then killed (SIGKILL) with round 4
    outstanding and party-0 as well. Everything restarts on its SQLite file: the run resumes and
    ends with exactly the uninterrupted result, and no party answered a request twice."""
    files = party_data(cluster.root)
    coord = cluster.start_coordinator()
    parties = {
        "party-0": cluster.start_party("party-0", files[0]),
        "party-1": cluster.start_party("party-1", files[1], "--stop-after", "1"),
        "party-2": cluster.start_party("party-2", files[2]),
    }
    assert cluster.start_run("resume-1", PARTIES, PARAMS).returncode == 0

    def stalled() -> dict | None:
        out = cluster.query("status", "resume-1")
        info = json.loads(out.stdout) if out.returncode == 0 else None
        return info if info and info["round"] == 4 and not parties["party-1"].alive() else None

    info = wait_until(stalled, what="the run to wait for party-1 in round 4")
    assert info["state"] == "running" and info["outstanding"] == 1
    assert parties["party-1"].popen.returncode == 3  # the fault drill's abrupt exit

    coord.stop()  # SIGKILL, mid-run
    parties["party-0"].stop()  # SIGKILL
    db = sqlite3.connect(cluster.root / "coord.sqlite")
    assert db.execute("SELECT COUNT(*) FROM replies WHERE run_id='resume-1'").fetchone()[0] == 5
    db.close()

    cluster.start_coordinator()
    cluster.start_party("party-0", files[0])
    cluster.start_party("party-1", files[1])

    def finished() -> dict | None:
        out = cluster.query("status", "resume-1")
        info = json.loads(out.stdout) if out.returncode == 0 else None
        return info if info and info["state"] in ("done", "failed") else None

    info = wait_until(finished, what="the resumed run to end")
    assert info["state"] == "done", info
    top = cluster.query("top", "resume-1")
    check_same(json.loads(top.stdout), files)

    db = sqlite3.connect(cluster.root / "coord.sqlite")
    assert db.execute("SELECT COUNT(*) FROM replies WHERE run_id='resume-1'").fetchone()[0] == 6
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action='resumed'").fetchone()[0] == 1
    cluster.check_answered_once(PARTIES, 2)
