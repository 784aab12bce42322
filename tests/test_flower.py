"""The Flower transport without a Flower engine: record converters, the ClientApp (with its
replay of the node state, as a SuperNode runs every message in a fresh process) and the ServerApp
driving a Grid that delivers to ClientApps in this process (parties failing or gone)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
from fedhh.clients import flower_app as client_mod
from fedhh.clients.flower_app import make_client_app
from fedhh.clients.flower_data import dataset_options, describe_options, party_data
from fedhh.server.flower_app import FlowerRunSettings, make_server_app, run_flower
from flwr.app import Array, Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedhh.datasets import synthetic_zipf
from fedhh.engine import build_run, run_in_process
from fedhh.errors import ParameterError, ProtocolError
from fedhh.flower_records import (
    ESTIMATE,
    SEARCH,
    PartyInfo,
    party_info_from_content,
    party_info_to_content,
    reply_from_content,
    reply_to_content,
    request_from_content,
    request_to_content,
    spec_from_record,
    spec_to_record,
)
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
    SearchTask,
)
from fedhh.protocol import Reply, Request, RunSpec

USERS, PARTIES, ITEMS, DATA_SEED = 6000, 3, 400, 5


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    """Messages take run/node/task ids from Flower's TaskIdentity (set by Flower in an app's
    process); set them for the ServerApp driven here, and restore them afterwards."""
    saved = {a: TaskIdentity.__dict__.get(a) for a in ("_run_id", "_node_id", "_task_id")}
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    for attr, value in saved.items():
        setattr(TaskIdentity, attr, value)


def _spec(**kw: Any) -> RunSpec:
    params = MechanismParams(mechanism="taps", k=4, m=16, epsilon=2.5, prune_z=None, seed=3, **kw)
    return RunSpec("r1", params, ("a", "b"), (10, 20), "int:16")


def _roundtrip_request(req: Request, spec: RunSpec) -> tuple[RunSpec, Request]:
    kind = ESTIMATE if isinstance(req.task, EstimateTask) else SEARCH
    return request_from_content(request_to_content(spec, req), kind)


# --- records -------------------------------------------------------------------------------


def test_spec_roundtrip_keeps_defaults_unset() -> None:
    spec = _spec(completion=0.1, local_start=False)
    rec = spec_to_record(spec)
    assert "param.prune_z" not in rec  # None stays "the mechanism's default"
    back = spec_from_record(rec)
    assert back == spec


def test_estimate_request_roundtrip() -> None:
    spec = _spec()
    cand = np.array([1, 5, 2**15], dtype=np.uint64)
    req = Request("r1", 4, 2, "b", EstimateTask(1, 8, cand, "reserve"))
    content = request_to_content(spec, req)
    assert content.array_records["arrays"]["candidates"].dtype == "uint64"
    spec2, req2 = _roundtrip_request(req, spec)
    assert spec2 == spec
    assert (req2.run_id, req2.request_id, req2.round, req2.party_id) == ("r1", 4, 2, "b")
    assert isinstance(req2.task, EstimateTask)
    assert (req2.task.level, req2.task.length, req2.task.group) == (1, 8, "reserve")
    np.testing.assert_array_equal(req2.task.candidates, cand)
    assert req2.task.candidates.dtype == np.uint64


def test_search_request_roundtrip_and_message_type_check() -> None:
    spec = _spec()
    task = SearchTask(
        "phase2",
        6,
        np.array([3, 9], dtype=np.uint64),
        np.array([2**64 - 1], dtype=np.uint64),
        np.array([12.5]),
    )
    req = Request("r1", 7, 3, "a", task)
    _, req2 = _roundtrip_request(req, spec)
    assert isinstance(req2.task, SearchTask)
    assert (req2.task.mode, req2.task.start_length) == ("phase2", 6)
    np.testing.assert_array_equal(req2.task.prior_items, task.prior_items)
    np.testing.assert_array_equal(req2.task.prior_estimates, task.prior_estimates)
    with pytest.raises(ProtocolError, match="arrived as message type"):
        request_from_content(request_to_content(spec, req), ESTIMATE)


def test_replies_roundtrip() -> None:
    cost = LevelCost(8, 4, 3, 100, "oue", 0, 400)
    est = Reply("r1", 1, "a", EstimateResult(np.array([1.0, -2.0, 3.5]), np.ones(3), cost))
    back = reply_from_content(reply_to_content(est))
    assert isinstance(back.result, EstimateResult)
    np.testing.assert_array_equal(back.result.estimates, [1.0, -2.0, 3.5])
    assert back.result.cost == cost and back.request_id == 1 and back.party_id == "a"

    levels = (cost, LevelCost(16, 8, 50, 200, "olh-pool", 9000, 800))
    search = SearchResult(
        np.array([7, 8], dtype=np.uint64), np.array([5.0, 4.0]), np.array([1.0, 1.5]), levels
    )
    back = reply_from_content(reply_to_content(Reply("r1", 2, "b", search)))
    assert isinstance(back.result, SearchResult) and back.result.levels == levels
    np.testing.assert_array_equal(back.result.items, [7, 8])

    err = reply_from_content(reply_to_content(Reply("r1", 3, "b", ErrorResult("failed", "x"))))
    assert err.result == ErrorResult("failed", "x")


def test_bad_records_raise_protocol_error() -> None:
    spec = _spec()
    req = Request("r1", 0, 1, "a", EstimateTask(0, 4, np.arange(4, dtype=np.uint64)))
    content = request_to_content(spec, req)
    content.array_records["arrays"]["candidates"] = Array(np.arange(4, dtype=np.int32))
    with pytest.raises(ProtocolError, match="uint64"):
        request_from_content(content, ESTIMATE)
    with pytest.raises(ProtocolError, match="no 'reply'"):
        reply_from_content(RecordDict())
    content = request_to_content(spec, req)
    content.config_records["spec"]["param.epsilon"] = -1.0
    with pytest.raises(ProtocolError, match="invalid run spec"):
        request_from_content(content, ESTIMATE)


def test_party_info_roundtrip() -> None:
    info = PartyInfo("party-2", 123, "str:6", 2, '{"dataset":"aol"}')
    assert party_info_from_content(party_info_to_content(info)) == info


# --- node data -----------------------------------------------------------------------------


def _run_cfg(**kw: object) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "dataset": "zipf",
        "users": USERS,
        "items": ITEMS,
        "data-seed": DATA_SEED,
        "k": 4,
        "seed": 11,
        "parties": PARTIES,
    }
    cfg.update(kw)
    return cfg


def test_party_data_is_the_partition_of_the_simulated_federation() -> None:
    ds = synthetic_zipf(USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, split="dirichlet", seed=5)
    for i in range(PARTIES):
        data = party_data({"partition-id": i, "num-partitions": PARTIES}, _run_cfg())
        assert data.party_id == f"party-{i}"
        np.testing.assert_array_equal(data.codes, ds.parties[i])
        assert data.codec_name == "int:32"
    # the node config wins over the run config
    data = party_data({"partition-id": 0, "num-partitions": 3, "users": 3000}, _run_cfg())
    assert data.codes.size < ds.parties[0].size + 1 and json.loads(data.source)["users"] == 3000


def test_party_data_from_files(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("abc\nxyz\nabc\n")
    data = party_data({"party-file": str(f), "item-bytes": 3, "party-id": "hospital"}, {})
    assert (data.party_id, data.codes.size, data.codec_name, data.source) == (
        "hospital",
        3,
        "str:3",
        "",
    )
    run = {"party-files": f"{f},{f}", "item-bytes": 3}
    assert party_data({"partition-id": 1}, run).party_id == "party-1"
    with pytest.raises(ParameterError, match="partition-id 2"):
        party_data({"partition-id": 2}, run)


def test_dataset_options_validation() -> None:
    with pytest.raises(ParameterError, match="num-partitions"):
        dataset_options({}, {"dataset": "zipf"})
    with pytest.raises(ParameterError, match="unknown dataset"):
        dataset_options({"num-partitions": 2, "dataset": "mnist"}, {})
    a = describe_options(dataset_options({"num-partitions": 2}, {"users": 10}))
    b = describe_options(dataset_options({"num-partitions": 2, "users": 10}, {}))
    assert a == b


def test_settings_validation() -> None:
    with pytest.raises(ParameterError, match="pools every user"):
        FlowerRunSettings.from_config({"mechanism": "pem"})
    with pytest.raises(ParameterError, match="policy"):
        FlowerRunSettings.from_config({"policy": "retry"})
    with pytest.raises(ParameterError, match="'k' must be int"):
        FlowerRunSettings.from_config({"k": "many"})
    s = FlowerRunSettings.from_config({"epsilon": 2, "prune-z": -1.0})
    assert s.epsilon == 2.0 and s.prune_z is None


# --- the apps over an in-process grid ------------------------------------------------------


@dataclass
class _Node:
    node_id: int
    node_config: dict[str, Any]
    state: RecordDict = field(default_factory=RecordDict)
    crash_on: str | None = None  # message type on which the ClientApp raises (Flower error)
    silent_on: str | None = None  # message type it never answers (node gone)
    rename_to: str | None = None  # after discovery the node claims another party id


class LocalGrid(Grid):
    """Delivers every message to a ClientApp in this process, each in a fresh Context (and, with
    ``fresh_process``, with the ClientApp's in-memory cache cleared: a SuperNode's process)."""

    def __init__(self, nodes: list[_Node], run_config: dict, fresh_process: bool = True) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.run_config = run_config
        self.fresh = fresh_process
        self.app = make_client_app()
        self.replies: dict[str, Message] = {}
        self.delivered: list[tuple[int, str]] = []

    def set_run(self, run: Run) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    @property
    def run(self) -> Run:  # pragma: no cover - not used
        raise NotImplementedError

    def create_message(self, *args: object, **kw: object) -> Message:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = str(uuid4())
            msg.metadata.__dict__["_message_id"] = mid
            node = self.nodes[msg.metadata.dst_node_id]
            mtype = msg.metadata.message_type
            self.delivered.append((node.node_id, mtype))
            ids.append(mid)
            if node.silent_on == mtype:
                continue
            if node.crash_on == mtype:
                self.replies[mid] = Message(Error(2, "ClientApp raised"), reply_to=msg)
                continue
            if self.fresh:
                client_mod._PARTIES.clear()
            ctx = Context(1, node.node_id, node.node_config, node.state, self.run_config)
            self.replies[mid] = self.app(msg, ctx)
            if node.rename_to and mtype == "query.discover":
                node.state.config_records["fedhh.party"]["party-id"] = node.rename_to
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(  # pragma: no cover - the ServerApp uses push/pull
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        raise NotImplementedError


def _nodes(**extra: object) -> list[_Node]:
    # node ids in a different order than the partitions: discovery must sort by partition
    return [
        _Node(900 - 7 * i, {"partition-id": i, "num-partitions": PARTIES}, **extra)  # type: ignore[arg-type]
        for i in range(PARTIES)
    ]


def _reference(cfg: dict[str, Any], **params: object) -> object:
    ds = synthetic_zipf(USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, split="dirichlet", seed=5)
    p = MechanismParams(mechanism="taps", k=4, m=32, seed=11, **params)  # type: ignore[arg-type]
    spec, parties = build_run(ds.parties, ds.codec, p)
    return run_in_process(spec, parties)


@pytest.mark.parametrize("fresh_process", [True, False])
def test_server_and_client_apps_equal_in_process(fresh_process: bool) -> None:
    cfg = _run_cfg(**{"round-timeout": 5.0, "completion": 0.1})
    grid = LocalGrid(_nodes(), cfg, fresh_process)
    result, doc = run_flower(grid, cfg)
    ref = _reference(cfg, completion=0.1)
    np.testing.assert_array_equal(result.items, ref.items)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.estimates, ref.estimates)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.stderrs, ref.stderrs)  # type: ignore[attr-defined]
    assert result.cost["bytes_to_parties"] == ref.cost["bytes_to_parties"]  # type: ignore[attr-defined]
    assert doc["evaluation"]["k"] == 4  # the server rebuilt the named federation
    # TAPS sequential pass: rounds that address exactly one node
    rounds = [t for t in grid.delivered if t[1] == SEARCH]
    assert len(rounds) == PARTIES and len({n for n, _ in rounds}) == PARTIES


def test_redelivered_request_gets_the_same_reply() -> None:
    node = _nodes()[0]
    cfg = _run_cfg()
    ds = synthetic_zipf(USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, split="dirichlet", seed=5)
    p = MechanismParams(mechanism="taps", k=4, m=32, seed=11)
    spec, _ = build_run(ds.parties, ds.codec, p)
    app = make_client_app()
    from fedhh.protocol import Coordinator

    req = next(r for r in Coordinator(spec).start() if r.party_id == "party-0")
    outs = []
    for _ in range(2):
        client_mod._PARTIES.clear()
        msg = Message(
            request_to_content(spec, req), dst_node_id=node.node_id, message_type=ESTIMATE
        )
        msg.metadata.__dict__["_message_id"] = str(uuid4())
        ctx = Context(1, node.node_id, node.node_config, node.state, cfg)
        outs.append(reply_from_content(app(msg, ctx).content))
    a, b = (o.result for o in outs)
    assert isinstance(a, EstimateResult) and isinstance(b, EstimateResult)
    np.testing.assert_array_equal(a.estimates, b.estimates)
    assert len(node.state.config_records["fedhh.log"]["ids"]) == 1  # type: ignore[arg-type]


def test_party_gone_continue_policy() -> None:
    nodes = _nodes()
    nodes[1].silent_on = ESTIMATE  # the node is gone from the first shared level on
    # TAP: with TAPS the coordinator ends the run at the gone party's own sequential round
    cfg = _run_cfg(mechanism="tap", **{"round-timeout": 0.3})
    result, doc = run_flower(LocalGrid(nodes, cfg), cfg)
    assert result.failed_parties == ["party-1"]
    assert doc["failed_parties"] == ["party-1"] and doc["top_k"]


def test_party_crash_fail_policy() -> None:
    nodes = _nodes()
    nodes[2].crash_on = ESTIMATE
    cfg = _run_cfg(policy="fail")
    with pytest.raises(ProtocolError, match="party-2 failed: Flower error"):
        run_flower(LocalGrid(nodes, cfg), cfg)


def test_party_error_reply_continue_and_output_file(tmp_path: Path) -> None:
    nodes = _nodes()
    nodes[0].rename_to = "intruder"  # its party is not in the run: every reply is an error
    out = tmp_path / "out" / "r.json"
    cfg = _run_cfg(mechanism="pem-global", output=str(out))
    result, _ = run_flower(LocalGrid(nodes, cfg), cfg)
    assert result.failed_parties == ["party-0"]
    doc = json.loads(out.read_text())
    assert doc["format"] == "fedhh.result/1" and doc["failed_parties"] == ["party-0"]
    assert [r["code"] for r in doc["top_k"]] == [int(c) for c in result.items]


def test_discovery_needs_every_node() -> None:
    nodes = _nodes()
    nodes[0].crash_on = "query.discover"
    cfg = _run_cfg()
    with pytest.raises(ProtocolError, match="discovery failed"):
        run_flower(LocalGrid(nodes, cfg), cfg)
    with pytest.raises(ProtocolError, match="only 3 of 4 SuperNodes"):
        run_flower(LocalGrid(_nodes(), cfg), {**cfg, "parties": 4, "node-wait": 0.3})


def test_server_app_factory_runs_on_a_grid() -> None:
    cfg = _run_cfg()
    results: list[object] = []
    app = make_server_app(cfg, on_result=results.append)
    ctx = Context(1, 0, {}, RecordDict(), {})
    app(LocalGrid(_nodes(), cfg), ctx)
    assert len(results) == 1


def test_cli_flower_engine_rejects_pem_before_starting_ray(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fedhh.cli import main

    argv = ["simulate", "--engine", "flower", "--mechanism", "pem", "--users", "200", "--quiet"]
    assert main([*argv, "--parties", "2"]) == 2
    assert "pools every user" in capsys.readouterr().err
