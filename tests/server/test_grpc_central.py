"""Budgets in central terms over gRPC, with real processes on 127.0.0.1: a coordinator and two
party agents, one of which caps the central ε_c per run (--max-central-epsilon).

* a run with a central target gets its ε₀ at the coordinator's admission (the largest that meets
  the target at the smallest planned group), the agents perturb at that ε₀ and the privacy block
  shows it and meets the target;
* each user's budget at each party: the local one its agent reported, and the central one
  composed over the coordinator's runs with the party;
* the capped party's agent tells the coordinator its cap with its ledger (PrivacyBudget's
  max_central), so a run whose ε_c at that party's smallest group is over the cap is refused
  when it is started (INVALID_ARGUMENT), with the message ``fedhh simulate`` gives for the
  same run and cap (:func:`~fedhh.protocol.admission.admit_run`), before any party works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grpc_harness import M, party_data, running_cluster, wait_until

from fedhh.core.accounting import compose, party_guarantees
from fedhh.errors import ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol.admission import admit_run, central_at_floor, choose_epsilon, fresh_budget
from fedhh.protocol.limits import Limits

PARTIES = ["party-0", "party-1"]


def test_central_target_and_cap_over_grpc(tmp_path: Path) -> None:
    with running_cluster(tmp_path, PARTIES) as cluster:
        files = party_data(cluster.root, users=6000, parties=2)
        cluster.start_coordinator("--heartbeat-seconds", "0.3")
        cluster.start_party("party-0", files[0], "--max-central-epsilon", "1.0")
        cluster.start_party("party-1", files[1])

        def rows() -> dict[str, dict]:
            return {
                p["party_id"]: p for p in json.loads(cluster.query("parties", admin=True).stdout)
            }

        wait_until(lambda: len(rows()) == 2 and all(r.get("n_users") for r in rows().values()),
                   what="both parties to register")  # fmt: skip
        sizes = [rows()[p]["n_users"] for p in PARTIES]

        target = MechanismParams("pem-global", k=4, m=M, epsilon=8.0, seed=2, central_epsilon=0.8)
        done = cluster.start_run("target", PARTIES, target, "--wait", deadline_seconds=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["failed_parties"] == []
        privacy = json.loads(cluster.query("privacy", "target").stdout)
        expected = choose_epsilon(target, sizes).epsilon
        assert privacy["epsilon"] == expected < 8.0  # what the agents perturbed at
        assert {g["epsilon"] for g in privacy["central"]["groups"]} == {expected}
        assert privacy["central"]["epsilon"] <= 0.8

        # each user's remaining budget at each party: the admin sees it once the agents have
        # settled the run (default budget 40), an analyst does not
        def budgets() -> dict[str, dict]:
            return json.loads(cluster.query("privacy", "target", admin=True).stdout)["budgets"]

        wait_until(lambda: all(b["epsilon_remaining"] < 40 for b in budgets().values()),
                   what="the agents to settle the run")  # fmt: skip
        for b in budgets().values():
            assert b["epsilon_budget"] == 40 and b["keeps_ledger"]
            assert b["epsilon_remaining"] == pytest.approx(40 - expected)
        assert privacy["budgets"] == {p: {"hidden": True} for p in PARTIES}
        text = cluster.query("privacy", "target", admin=True, json_out=False).stdout
        assert "each user's budget at each party" in text and "bound" in text

        # ε = 4 without a target: party-0's smallest group is over its cap of 1.0, which its
        # agent reported with its ledger: the coordinator refuses the run when it is started
        assert {r["max_central_epsilon"] for r in rows().values()} == {1.0, 0.0}
        plain = MechanismParams("pem-global", k=4, m=M, epsilon=4.0, seed=2)
        assert central_at_floor(plain, sizes[0]) > 1.0
        with pytest.raises(ParameterError) as in_process:  # what fedhh simulate says
            admit_run(
                plain, PARTIES, sizes, Limits(), budgets={"party-0": fresh_budget(40, 10, 1.0)}
            )
        out = cluster.start_run("over-cap", PARTIES, plain, "--wait", deadline_seconds=60)
        assert out.returncode == 1, out.stdout
        assert out.stderr.strip() == f"fedhh: error: INVALID_ARGUMENT: {in_process.value}"
        assert "at party party-0's smallest group" in out.stderr
        assert cluster.query("status", "over-cap").returncode != 0  # nothing stored
        assert [r for r, _ in cluster.handled("party-0") if r == "over-cap"] == []
        # a run whose ε₀ meets the cap is admitted by both sides
        low = MechanismParams("pem-global", k=4, m=M, epsilon=1.0, seed=2)
        assert central_at_floor(low, sizes[0]) <= 1.0
        ok = cluster.start_run("under-cap", PARTIES, low, "--wait", deadline_seconds=60)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["failed_parties"] == []

        # towards the coordinator each party's users have spent both runs, composed: the
        # coordinator's state file has the two privacy blocks (the refused run is not there)
        second = json.loads(cluster.query("privacy", "under-cap").stdout)
        shown = json.loads(cluster.query("privacy", "under-cap", admin=True).stdout)["budgets"]
        for pid in PARTIES:
            runs = [party_guarantees(block)[pid] for block in (privacy, second)]
            spent = shown[pid]["central_spent"]
            assert spent == compose(runs).fields() and spent["runs"] == 2
            assert max(e for e, _ in runs) < spent["epsilon"] <= sum(e for e, _ in runs)
        assert shown["party-0"]["max_central_epsilon"] == 1.0
        text = cluster.query("privacy", "under-cap", admin=True, json_out=False).stdout
        assert "over 2 runs" in text and "cost each user towards the coordinator" in text
