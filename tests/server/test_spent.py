"""The coordinator's account of each party (in this process, no gRPC): a party's central cap,
reported with its ledger, refuses an over-cap run when it is started (nothing stored); a run
that did not finish but took a party's reply counts towards the coordinator at its ε₀ (δ = 0),
a party that answered nothing of it is not charged, and so does a finished run stored before
results stated their central guarantee."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedhh.errors import ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Party
from fedhh.protocol.admission import admit_run, fresh_budget
from fedhh.protocol.encoding import encode
from fedhh.protocol.limits import Limits
from fedhh.server.spent import central_runs
from fedhh.server.state import CoordinatorState
from fedhh.server.store import Store

PARTIES = ["party-0", "party-1"]


def test_a_cap_refuses_at_start_and_unfinished_runs_count_at_their_eps0(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.sqlite")
    state = CoordinatorState(store, 60.0)
    try:
        capped = {**fresh_budget(40, 10, max_central=0.05).fields()}
        state.register("party-0", 500, "int:8", "data", capped)
        state.register("party-1", 500, "int:8", "data", fresh_budget().fields())
        params = MechanismParams(mechanism="pem-global", k=2, m=8, eta=2, epsilon=2.0)
        with pytest.raises(ParameterError) as refused:
            state.start_run("alice", "over", params, PARTIES, "continue", 60.0)
        with pytest.raises(ParameterError) as in_process:
            admit_run(
                params,
                PARTIES,
                [500, 500],
                Limits(),
                budgets={"party-0": fresh_budget(40, 10, 0.05)},
            )
        assert str(refused.value) == str(in_process.value)
        assert "at party party-0's smallest group of" in str(refused.value)
        assert store.runs() == []  # nothing stored

        state.register("party-0", 500, "int:8", "data", fresh_budget().fields())  # cap lifted
        state.start_run("alice", "r", params, PARTIES, "continue", 60.0)
        found = state.next_request("party-0", 1.0)
        assert found is not None
        spec, sent, _ = found
        reply = Party(spec, "party-0", np.arange(500, dtype=np.uint64) % 256).handle(sent.request)
        assert reply is not None
        state.submit("party-0", reply, encode(reply))
        state.cancel("alice", "r")
        assert central_runs(store, PARTIES) == {"party-0": [("r", 2.0, 0.0)], "party-1": []}
        state.close()
        # a finished run stored before results stated their central guarantee counts at its ε₀
        store.insert_run("old", params.to_dict(), PARTIES, "continue", 60.0, "alice")
        cost = {"reports_per_party": {"party-0": 0, "party-1": 500}}
        with store.transaction() as db:
            Store.update_run(
                db, "old", state="done", result={"privacy": {"epsilon": 3.0}, "cost": cost}
            )
        assert central_runs(store, PARTIES) == {
            "party-0": [("r", 2.0, 0.0)],
            "party-1": [("old", 3.0, 0.0)],
        }
    finally:
        state.close()
        store.close()
