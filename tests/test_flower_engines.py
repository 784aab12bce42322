"""The Flower apps on Flower's engines: the Simulation Engine (Ray backend) and the deployment
engine (flower-superlink + three flower-supernode processes on 127.0.0.1, ``flwr run``). Both
must give the in-process result for the same data and seed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedhh.datasets import synthetic_zipf
from fedhh.engine import simulate
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import RunResult

ROOT = Path(__file__).resolve().parents[1]
USERS, PARTIES, ITEMS, DATA_SEED, SEED, K = 6000, 3, 500, 3, 7, 8


@pytest.fixture(autouse=True)
def _flower_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")


def _in_process() -> RunResult:
    ds = synthetic_zipf(USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, seed=DATA_SEED)
    params = MechanismParams(mechanism="taps", k=K, m=32, seed=SEED)
    return simulate(ds.parties, ds.codec, params)


def test_flower_simulation_equals_in_process() -> None:
    pytest.importorskip("ray")
    from fedhh.flower_sim import run_config_for, simulate_flower
    from fedhh.settings import DatasetParams

    ref = _in_process()
    params = MechanismParams(mechanism="taps", k=K, m=32, seed=SEED)
    data = DatasetParams(users=USERS, items=ITEMS, data_seed=DATA_SEED)
    cfg = run_config_for(params, data, n_parties=PARTIES)
    res = simulate_flower(cfg, PARTIES, total_cpus=2)
    assert res.items.size > 0
    np.testing.assert_array_equal(res.items, ref.items)
    np.testing.assert_array_equal(res.estimates, ref.estimates)
    np.testing.assert_array_equal(res.stderrs, ref.stderrs)
    assert res.cost["rounds"] == ref.cost["rounds"]
    assert res.cost["bytes_to_parties"] == ref.cost["bytes_to_parties"]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[object]:
    from flower_deploy import start_local

    nodes = [
        {
            "partition-id": i,
            "num-partitions": PARTIES,
            "dataset": "zipf",
            "users": USERS,
            "items": ITEMS,
            "data-seed": DATA_SEED,
        }
        for i in range(PARTIES)
    ]
    dep = start_local(tmp_path / "deploy", nodes)
    try:
        yield dep
    finally:
        dep.stop()
        # every process started, and every child Flower started under them, is gone
        assert len(dep.stopped_pids) >= 1 + PARTIES
        assert dep.leftovers() == []


def test_flower_deployment_equals_in_process(deployment: object, tmp_path: Path) -> None:
    from flower_deploy import LocalDeployment

    assert isinstance(deployment, LocalDeployment)
    ref = _in_process()
    out = tmp_path / "result.json"
    doc = deployment.run_app(ROOT, {"k": K, "seed": SEED, "parties": PARTIES}, out, timeout=240)
    assert doc["format"] == "fedhh.result/1"
    assert [row["code"] for row in doc["top_k"]] == [int(c) for c in ref.items]
    assert [row["estimate"] for row in doc["top_k"]] == [float(e) for e in ref.estimates]
    assert [row["stderr"] for row in doc["top_k"]] == [float(e) for e in ref.stderrs]
    assert doc["cost"]["rounds"] == ref.cost["rounds"]
    assert doc["failed_parties"] == []
    assert doc["evaluation"]["k"] == K  # the ServerApp rebuilt the named federation
