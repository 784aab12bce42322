"""The Flower transport without a Flower engine: the records, the ClientApp (with its
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
from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedhh.clients import flower_app as client_mod
from fedhh.clients import flower_data
from fedhh.clients.flower_app import make_client_app
from fedhh.clients.flower_data import dataset_params, party_data
from fedhh.datasets import synthetic_zipf
from fedhh.errors import ParameterError, ProtocolError
from fedhh.flower import records
from fedhh.flower.records import ESTIMATE, SEARCH
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import EstimateTask
from fedhh.protocol import Request, RunSpec
from fedhh.protocol.encoding import decode_spec, encode
from fedhh.run import settings
from fedhh.run.engine import build_run, run_in_process
from fedhh.server.flower_app import FlowerSettings, make_server_app, run_flower
from fedhh.wire.v1 import protocol_pb2

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


# --- records -------------------------------------------------------------------------------


def test_records_carry_the_protobuf_bytes() -> None:
    """A request's message holds exactly the bytes the driver counts; the ClientApp refuses a
    request under the wrong message type and a message without the bytes."""
    params = MechanismParams(mechanism="taps", k=4, m=16, seed=3, local_start=False)
    spec = RunSpec("r1", params, ("a", "b"), (10, 20), "int:16")
    req = Request("r1", 4, 2, "b", EstimateTask(1, 8, np.array([1, 5], dtype=np.uint64)))
    content = records.content(spec=encode(spec), request=encode(req))
    assert decode_spec(records.entry(content, "spec")) == spec
    assert records.entry(content, "request") == encode(req)
    assert records.message_type(req) == ESTIMATE
    with pytest.raises(ProtocolError, match="no 'reply'"):
        records.entry(RecordDict(), "reply")
    node = _nodes()[0]
    ctx = Context(1, node.node_id, node.node_config, node.state, _run_cfg())
    msg = Message(content, dst_node_id=node.node_id, message_type=SEARCH)
    msg.metadata.__dict__["_message_id"] = "m1"
    with pytest.raises(ProtocolError, match="arrived as message type"):
        make_client_app()(msg, ctx)


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
        assert data.info.party_id == f"party-{i}"
        np.testing.assert_array_equal(data.codes, ds.parties[i])
        assert data.info.codec == "int:32"
    # the node config wins over the run config
    data = party_data({"partition-id": 0, "num-partitions": 3, "users": 3000}, _run_cfg())
    assert data.codes.size < ds.parties[0].size + 1 and json.loads(data.info.data)["users"] == 3000


def test_party_data_from_files(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("abc\nxyz\nabc\n")
    data = party_data({"party-file": str(f), "item-bytes": 3, "party-id": "hospital"}, {})
    info = data.info
    assert (info.party_id, data.codes.size, info.codec, info.data) == ("hospital", 3, "str:3", "")
    run = {"party-files": f"{f},{f}", "item-bytes": 3}
    assert party_data({"partition-id": 1}, run).info.party_id == "party-1"
    with pytest.raises(ParameterError, match="partition-id 2"):
        party_data({"partition-id": 2}, run)


def test_dataset_options_validation() -> None:
    with pytest.raises(ParameterError, match="num-partitions"):
        dataset_params({"dataset": "zipf"})
    with pytest.raises(ParameterError, match="unknown dataset"):
        dataset_params({"num-partitions": 2, "dataset": "mnist"})


def test_settings_validation() -> None:
    with pytest.raises(ParameterError, match="pools every user"):
        FlowerSettings.from_config({"mechanism": "pem"})
    with pytest.raises(ParameterError, match="policy"):
        FlowerSettings.from_config({"policy": "retry"})
    with pytest.raises(ParameterError, match="k must be int"):
        FlowerSettings.from_config({"k": "many"})
    s = FlowerSettings.from_config({"epsilon": 2, "prune-z": "", "local-start": False})
    assert s.params.epsilon == 2.0 and s.params.prune_z is None and not s.params.local_start


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

    def __init__(
        self, nodes: list[_Node], run_config: dict, fresh_process: bool = True, processes: int = 1
    ) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.run_config = run_config
        self.fresh = fresh_process
        # long-lived processes taking the messages in turn (as Ray's actors do): each keeps its
        # own hosts, so a node's host in one process misses what another answered meanwhile
        self.processes: list[dict[Any, Any]] = [{} for _ in range(processes)]
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
                client_mod._HOSTS.clear()
            else:
                turn = sum(1 for n, _ in self.delivered if n == node.node_id)  # the node's k-th
                client_mod._HOSTS = self.processes[turn % len(self.processes)]
            ctx = Context(1, node.node_id, node.node_config, node.state, self.run_config)
            self.replies[mid] = self.app(msg, ctx)
            if node.rename_to and mtype == "query.discover":
                rec = node.state.config_records["fedhh.party"]
                info = protocol_pb2.PartyInfo.FromString(rec["info"])
                info.party_id = node.rename_to
                rec["info"] = info.SerializeToString()
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


@pytest.mark.parametrize(
    ("fresh_process", "processes"),
    [(True, 1), (False, 1), (False, 2)],
    ids=["fresh", "kept", "two"],
)
def test_server_and_client_apps_equal_in_process(fresh_process: bool, processes: int) -> None:
    cfg = _run_cfg(**{"round-timeout": 5.0, "completion": 0.1})
    grid = LocalGrid(_nodes(), cfg, fresh_process, processes)
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


def test_a_process_that_missed_a_request_rebuilds_the_party() -> None:
    """Two long-lived processes take each node's messages in turn (as Ray's actors may): a host
    one process kept is behind the node's log once the other answered, and must not answer from
    its stale party (it would ask the wrong level's users)."""
    cfg = _run_cfg(**{"round-timeout": 5.0, "mechanism": "pem-global"})
    result, _ = run_flower(LocalGrid(_nodes(), cfg, False, processes=2), cfg)
    ds = settings.load_dataset(flower_data.dataset_params(cfg))
    params = MechanismParams(mechanism="pem-global", k=4, m=ds.m, seed=11)
    ref = run_in_process(*build_run(ds.parties, ds.codec, params))
    assert result.failed_parties == [] and result.cost["rounds"] > 2
    np.testing.assert_array_equal(result.items, ref.items)
    np.testing.assert_array_equal(result.estimates, ref.estimates)


@pytest.mark.parametrize("dataset", ["zipf", "aol"])
@pytest.mark.parametrize("mechanism", ["pem-local", "pem-global", "tap", "taps"])
def test_every_mechanism_equals_in_process(mechanism: str, dataset: str) -> None:
    """Every federated mechanism on the demo (Zipf) and the AOL federation: the Flower apps give
    the in-process result bit for bit, byte costs included."""
    data = {"dataset": "aol", "max-users": 12_000} if dataset == "aol" else {}
    cfg = _run_cfg(**{"round-timeout": 5.0, "mechanism": mechanism, **data})
    result, _ = run_flower(LocalGrid(_nodes(), cfg), cfg)
    ds = settings.load_dataset(flower_data.dataset_params(cfg))
    params = MechanismParams(mechanism=mechanism, k=4, m=ds.m, seed=11)
    ref = run_in_process(*build_run(ds.parties, ds.codec, params))
    for name in ("items", "estimates", "stderrs", "contributors"):
        np.testing.assert_array_equal(getattr(result, name), getattr(ref, name))
    for name in ("rounds", "bytes_to_parties", "bytes_to_coordinator", "levels"):
        assert result.cost[name] == ref.cost[name]


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
        client_mod._HOSTS.clear()
        content = records.content(spec=encode(spec), request=encode(req))
        msg = Message(content, dst_node_id=node.node_id, message_type=ESTIMATE)
        msg.metadata.__dict__["_message_id"] = str(uuid4())
        ctx = Context(1, node.node_id, node.node_config, node.state, cfg)
        outs.append(records.entry(app(msg, ctx).content, "reply"))
    assert outs[0] == outs[1]
    assert len(node.state.config_records["fedhh.log"]["requests"]) == 1  # type: ignore[arg-type]


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
