"""Bounds and budgets before any work, with real processes on 127.0.0.1: a coordinator and two
party agents with their own limits and privacy budgets.

* k beyond a bound (the coordinator's, the federation's users, an agent's own) and runs whose
  estimated memory is over the limit are refused before any party works on them;
* the privacy budget: ε above an agent's maximum per run, and a run that would take its users
  over their budget, are refused before any report; the analyst sees what is left;
* a party that refused a run has no reports and counts in no row's ``parties``;
  ``query start --wait`` exits non-zero when the run fails."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_harness import Cluster, party_data, running_cluster, wait_until

from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol.limits import run_memory

PARTIES = ["party-0", "party-1"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, PARTIES) as c:
        yield c


def start(  # type: ignore[no-untyped-def]
    cluster: Cluster,
    run_id: str,
    *,
    k: int = 4,
    epsilon: float = 4.0,
    policy: str = "continue",
    parties: list[str] = PARTIES,
    wait: bool = False,
):
    params = MechanismParams("pem-global", k=k, m=16, epsilon=epsilon, seed=2)
    flags = ["--wait"] if wait else []
    return cluster.start_run(run_id, parties, params, *flags, policy=policy, deadline_seconds=60)


def party_rows(cluster: Cluster) -> dict[str, dict]:
    return {p["party_id"]: p for p in json.loads(cluster.query("parties", admin=True).stdout)}


def test_bounds_and_budget_before_any_work(cluster: Cluster) -> None:
    files = party_data(cluster.root, users=3000, parties=2)
    # a memory limit between the estimates of a k = 4 and a k = 1500 run at these parties
    small, large = (run_memory(MechanismParams("pem-global", k=k, m=16), 3000) for k in (4, 1500))
    mb = str((small + large) / 2 / (1 << 20))
    cluster.start_coordinator(
        "--max-k", "2000", "--max-memory-mb", mb, "--heartbeat-seconds", "0.3"
    )
    cluster.start_party("party-0", files[0], "--epsilon-budget", "6", "--max-epsilon", "5")
    cluster.start_party("party-1", files[1], "--max-k", "8")
    wait_until(lambda: all(p.get("n_users") for p in party_rows(cluster).values())
               and len(party_rows(cluster)) == 2, what="both parties to register")  # fmt: skip
    sizes = {p: r["n_users"] for p, r in party_rows(cluster).items()}

    def refused(out, code: str) -> str:  # type: ignore[no-untyped-def]
        assert out.returncode == 1, out.stdout  # the coordinator refused: a failure, not usage
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"fedhh: error: {code}: "), out.stderr
        return lines[0]

    # Refused at StartRun, before anything is stored or sent.
    assert "limit of 2000" in refused(start(cluster, "k-max", k=2001), "RESOURCE_EXHAUSTED")
    k = sizes["party-0"] + 1  # more heavy hitters than the party has users
    line = refused(start(cluster, "k-users", k=k, parties=["party-0"]), "INVALID_ARGUMENT")
    assert f"{sizes['party-0']:,} users" in line
    memory = refused(start(cluster, "memory", k=1500), "RESOURCE_EXHAUSTED")
    assert "MB at party" in memory
    refused(start(cluster, "eps-max", epsilon=8.0), "INVALID_ARGUMENT")
    coord = sqlite3.connect(cluster.root / "coord.sqlite")
    assert coord.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert coord.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0

    # party-1 refuses k = 16 itself (its own bound) before any work: with "continue" the run
    # goes on without it; it counts in no row's parties.
    done = start(cluster, "k-agent", k=16, wait=True)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["state"] == "done" and info["failed_parties"] == ["party-1"]
    top = json.loads(cluster.query("top", "k-agent").stdout)
    assert top and all(r["parties"] == 1 for r in top)
    cost = json.loads(cluster.query("cost", "k-agent").stdout)["cost"]
    assert cost["reports_per_party"]["party-1"] == 0
    assert cluster.handled("party-1") == [("k-agent", 1)]  # its one answer: the refusal
    reply = sqlite3.connect(cluster.root / "party-1.sqlite").execute("SELECT reply FROM handled")
    assert b"resource-exhausted" in reply.fetchone()[0]

    # With "fail", the same refusal fails the run: --wait exits 1.
    failed = start(cluster, "k-agent-fail", k=16, epsilon=1.0, policy="fail", wait=True)
    assert failed.returncode == 1 and json.loads(failed.stdout)["state"] == "failed"
    assert "over the limit of 8" in json.loads(failed.stdout)["error"]

    # party-0's budget is 6: k-agent cost its users ε = 4, k-agent-fail up to 1 more. Once the
    # agent has reported its ledger, the analyst sees at most 2 left, and a run with ε = 4 is
    # refused before any report.
    left = lambda: party_rows(cluster)["party-0"]["epsilon_remaining"]  # noqa: E731
    wait_until(lambda: left() <= 2.0, what="party-0's ledger to reach the coordinator")
    over = refused(start(cluster, "over", epsilon=4.0, parties=["party-0"]), "RESOURCE_EXHAUSTED")
    assert "privacy budget" in over
    assert "over" not in {run for run, _ in cluster.handled("party-0")}
    assert coord.execute("SELECT COUNT(*) FROM runs WHERE run_id='over'").fetchone()[0] == 0
    assert party_rows(cluster)["party-0"]["epsilon_budget"] == 6.0
    # an analyst does not see the parties' budgets; the admin does
    seen = json.loads(cluster.query("parties").stdout)
    assert all(p["budget_hidden"] and p["epsilon_budget"] == 0 for p in seen), seen
    table = cluster.query("parties", json_out=False).stdout
    assert "hidden" in table and not any(p["budget_hidden"] for p in party_rows(cluster).values())
