"""Admission on the Flower transport, as on every other: the ServerApp refuses a run over its
run config's bounds or over a SuperNode's privacy budget before any request, with the message
the other transports give; each SuperNode's ledger is its operator's (node config), kept across
runs in its ``state-db``, and a run's config cannot raise it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity
from test_flower import PARTIES, LocalGrid, _Node, _run_cfg

from fedhh.errors import BudgetExceeded, ParameterError, ParameterLimit
from fedhh.mechanisms.params import MechanismParams
from fedhh.server.flower_app import run_flower


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    saved = {a: TaskIdentity.__dict__.get(a) for a in ("_run_id", "_node_id", "_task_id")}
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    for attr, value in saved.items():
        setattr(TaskIdentity, attr, value)


def _nodes(tmp_path: Path, **node: object) -> list[_Node]:
    """Fresh SuperNodes (a new run's node state) with the operator's node config ``node``."""
    return [
        _Node(
            100 + i,
            {"partition-id": i, "num-partitions": PARTIES, "state-db": str(tmp_path / f"n{i}.db")}
            | node,
        )
        for i in range(PARTIES)
    ]


def test_the_nodes_ledgers_carry_over_runs_and_refuse_the_one_too_many(tmp_path: Path) -> None:
    for n in (1, 2):  # budget 10: two runs of ε = 4 leave 2
        cfg = _run_cfg(**{"run-id": f"run-{n}", "epsilon": 4.0, "round-timeout": 5.0})
        result, _ = run_flower(LocalGrid(_nodes(tmp_path, **{"epsilon-budget": 10}), cfg), cfg)
        assert result.failed_parties == []
    cfg = _run_cfg(**{"run-id": "run-3", "epsilon": 4.0, "epsilon-budget": 100})  # run config:
    grid = LocalGrid(_nodes(tmp_path, **{"epsilon-budget": 10}), cfg)  # not the node's budget
    with pytest.raises(BudgetExceeded, match=r"party party-0's privacy budget \(2 of 10 left\)"):
        run_flower(grid, cfg)
    assert {t for _, t in grid.delivered} == {"query.discover"}  # refused before any request


def test_over_a_nodes_maximum_or_the_run_configs_bounds(tmp_path: Path) -> None:
    cfg = _run_cfg(epsilon=4.0)
    grid = LocalGrid(_nodes(tmp_path, **{"max-epsilon": 3}), cfg)
    with pytest.raises(ParameterError, match="ε = 4 is over party party-0's maximum of 3 per run"):
        run_flower(grid, cfg)
    cfg = _run_cfg(**{"max-k": 2})  # k = 4
    with pytest.raises(ParameterLimit, match="k = 4 is over the limit of 2"):
        run_flower(LocalGrid(_nodes(tmp_path), cfg), cfg)


@pytest.mark.parametrize(
    ("node", "said"),
    [
        ({"max-epsilon": 3}, "ε = 4 is over party party-0's maximum of 3 per run"),
        ({"max-central-epsilon": 0.05}, "users, over its maximum of 0.05 per run"),
    ],
)
def test_the_client_app_admits_at_the_first_request(
    tmp_path: Path, node: dict[str, float], said: str
) -> None:
    """A request reaching a SuperNode whose operator allows less than the run asks, in ε₀ or
    in ε_c (whatever the ServerApp checked), gets an error reply before any user reports."""
    from uuid import uuid4

    from flwr.app import Context, Message
    from test_flower import DATA_SEED, ITEMS, USERS

    from fedhh.clients.flower_app import make_client_app
    from fedhh.datasets import synthetic_zipf
    from fedhh.flower import records
    from fedhh.flower.records import ESTIMATE
    from fedhh.mechanisms.params import MechanismParams
    from fedhh.mechanisms.tasks import ErrorResult
    from fedhh.protocol import Coordinator
    from fedhh.protocol.encoding import decode_reply, encode
    from fedhh.run.engine import build_run

    ds = synthetic_zipf(
        USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, split="dirichlet", seed=DATA_SEED
    )
    spec, _ = build_run(ds.parties, ds.codec, MechanismParams(k=4, m=32, seed=11, epsilon=4.0))
    node = _nodes(tmp_path, **node)[0]
    req = next(r for r in Coordinator(spec).start() if r.party_id == "party-0")
    msg = Message(
        records.content(spec=encode(spec), request=encode(req)),
        dst_node_id=node.node_id,
        message_type=ESTIMATE,
    )
    msg.metadata.__dict__["_message_id"] = str(uuid4())
    ctx = Context(1, node.node_id, node.node_config, node.state, _run_cfg())
    reply = decode_reply(records.entry(make_client_app()(msg, ctx).content, "reply"))
    assert isinstance(reply.result, ErrorResult) and reply.result.code == "refused"
    assert said in reply.result.message


def test_a_central_target_and_a_nodes_central_cap(tmp_path: Path) -> None:
    """The run config's central-epsilon: the ServerApp's admission picks ε₀ and the nodes
    perturb at it. A SuperNode whose operator caps ε_c (node config) tells the ServerApp its
    cap with its ledger at discovery, so an over-cap run is refused before any request, with
    the message ``fedhh simulate`` gives for the same run and cap."""
    from test_flower import DATA_SEED, ITEMS, USERS

    from fedhh.datasets import synthetic_zipf
    from fedhh.protocol.admission import fresh_budget
    from fedhh.run.engine import simulate

    cfg = _run_cfg(**{"run-id": "target", "epsilon": 8.0, "central-epsilon": 1.0})
    result, _ = run_flower(LocalGrid(_nodes(tmp_path), cfg), cfg)
    eps0 = result.params["epsilon"]
    assert eps0 < 8.0 and result.privacy["epsilon"] == eps0 and result.failed_parties == []
    assert {g["epsilon"] for g in result.privacy["central"]["groups"]} == {eps0}

    cfg = _run_cfg(**{"run-id": "capped", "epsilon": 4.0})
    (tmp_path / "capped").mkdir()
    nodes = _nodes(tmp_path / "capped")
    nodes[0].node_config["max-central-epsilon"] = 0.05
    grid = LocalGrid(nodes, cfg)
    with pytest.raises(ParameterError) as refused:
        run_flower(grid, cfg)
    assert {t for _, t in grid.delivered} == {"query.discover"}  # refused before any request
    ds = synthetic_zipf(
        USERS, PARTIES, m=32, n_items=ITEMS, s=1.1, split="dirichlet", seed=DATA_SEED
    )
    params = MechanismParams(k=4, m=32, seed=11, epsilon=4.0)
    with pytest.raises(ParameterError) as in_process:
        simulate(ds.parties, ds.codec, params, budgets={"party-0": fresh_budget(max_central=0.05)})
    assert str(refused.value) == str(in_process.value)
    assert "at party party-0's smallest group of" in str(refused.value)
    assert "over its maximum of 0.05 per run" in str(refused.value)
