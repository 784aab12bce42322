"""The party agent's parts, in one process: per-user credentials, the privacy ledger, report
checking, the group commit (acknowledged means stored) and the connection lifecycle (one
heartbeat per connection, stopped before its channel closes, across coordinator restarts)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedhh.clients.agent import Heartbeat, PartyAgent
from fedhh.clients.budget import PrivacyLedger
from fedhh.clients.credentials import Credentials, new_key
from fedhh.clients.ingest import ReportChecker
from fedhh.clients.reporter import ReportTask, make_report
from fedhh.clients.store import AgentStore, GroupCommit, StorageError
from fedhh.errors import BudgetExceeded, ParameterError
from fedhh.oracles import GRR, OLH, OUE, OLHPool, Reports
from fedhh.protocol import Party
from fedhh.protocol.host import PartyHost
from fedhh.server.serving import build_server
from fedhh.server.state import CoordinatorState
from fedhh.server.store import Store
from fedhh.wire.security import Identity
from fedhh.wire.tokens import TokenStore, add_token, read_token_file


def test_credentials_bind_a_user_and_cannot_be_forged() -> None:
    creds = Credentials("party-1", new_key(), 100)
    c7 = creds.issue(7)
    assert creds.verify(c7) == 7
    assert creds.identity_of([("authorization", f"Bearer {c7}")]) == Identity("device", "7")
    tag = c7.rsplit(":", 1)[1]
    forged = [
        c7.replace(":7:", ":8:"),  # another user, same tag
        c7[:-1] + ("A" if c7[-1] != "A" else "B"),  # another tag
        c7.replace("party-1", "party-2"),  # another party
        f"fhc1:party-1:007:{tag}",  # not the canonical id
        f"fhc1:party-1:100:{creds.issue(99).rsplit(':', 1)[1]}",  # not enrolled
        "fhc1:party-1:7",
        c7 + ":x",
        "x" * 1000,
        "",
    ]
    assert [creds.verify(f) for f in forged] == [None] * len(forged)
    other_key = Credentials("party-1", new_key(), 100)
    assert other_key.verify(c7) is None  # another agent's key
    with pytest.raises(ParameterError):
        creds.issue(100)


def test_credentials_expire_are_revoked_and_the_first_format_still_works() -> None:
    day = 86_400_000
    revoked: dict[int, int] = {}
    creds = Credentials("party-1", new_key(), 100, lambda: revoked)
    c3 = creds.issue(3, valid_days=2, issued=10 * day)
    assert creds.check(c3, now=11 * day) == (3, "")
    user, why = creds.check(c3, now=12 * day)  # two days on: expired
    assert user is None and why.startswith("user credential expired at 1970-01-13 00:00:00 UTC")
    longer = c3.replace(f":{12 * day}:", f":{40 * day}:")  # a later expiry, the same tag
    assert longer != c3 and creds.check(longer, now=11 * day)[0] is None
    forever = creds.issue(4, valid_days=0, issued=10 * day)
    assert forever.split(":")[4] == "0" and creds.check(forever, now=10**15)[0] == 4
    # the first format (no times): never expires, issued at time 0
    legacy = f"fhc1:party-1:5:{creds._tag(5)}"
    assert creds.check(legacy, now=10**15)[0] == 5
    revoked.update({3: 11 * day, 5: 1})  # every credential of users 3 and 5 issued until then
    assert creds.check(c3, now=11 * day) == (
        None,
        "user credential revoked at 1970-01-12 00:00:00 UTC",
    )
    assert creds.verify(legacy) is None
    again = creds.issue(3, valid_days=2, issued=11 * day + 1)  # issued after the revocation
    assert creds.check(again, now=11 * day + 2)[0] == 3
    for bad in (c3.replace(f":{10 * day}:", ":010:"), c3.replace(":3:", ":-3:"), c3[:-1]):
        assert creds.check(bad, now=11 * day)[0] is None


def test_a_revocation_from_another_process_reaches_the_agent(tmp_path: Path) -> None:
    from fedhh.clients import credentials as credmod

    store = AgentStore(tmp_path / "a.sqlite")
    creds = Credentials("party-1", new_key(), 10, credmod.RevocationList(store.revocations))
    c2 = creds.issue(2)
    assert creds.verify(c2) == 2
    other = AgentStore(tmp_path / "a.sqlite")  # fedhh party revoke: another connection
    other.revoke([2, 7], credmod.now_ms())
    other.revoke([2], 5)  # an earlier time does not shorten a revocation
    assert other.revocations()[2] > 5
    other.close()
    deadline = time.monotonic() + credmod.REVOCATION_REFRESH + 5
    while creds.verify(c2) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert creds.verify(c2) is None
    assert "revoked" in creds.check(c2)[1]
    store.close()


def test_privacy_ledger(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "a.sqlite")
    ledger = PrivacyLedger(store, 10, budget=10.0, max_epsilon=4.0)
    with pytest.raises(ParameterError, match="maximum of 4 per run"):  # INVALID_ARGUMENT
        ledger.admit("r0", 5.0)
    ledger.admit("r1", 4.0)
    ledger.admit("r2", 4.0)
    assert ledger.committed() == 8.0 and ledger.open_runs() == ["r1", "r2"]
    with pytest.raises(BudgetExceeded, match="2 of 10 left"):
        ledger.admit("r3", 3.0)  # could take a user to 11
    ledger.admit("r1", 4.0)  # admitted already: nothing changes
    ledger.settle("r1", np.array([0, 3]))  # only users 0 and 3 reported
    assert ledger.spent.tolist() == [4, 0, 0, 4, 0, 0, 0, 0, 0, 0]
    assert ledger.committed() == 8.0  # r2 still open
    ledger.settle("r2", None)  # a data party: every user
    assert ledger.committed() == 8.0 and ledger.remaining() == 2.0
    ledger.admit("r4", 2.0)
    store.close()
    again = PrivacyLedger(AgentStore(tmp_path / "a.sqlite"), 12, budget=10.0, max_epsilon=4.0)
    assert again.spent.tolist() == [8, 4, 4, 8, 4, 4, 4, 4, 4, 4, 0, 0]
    assert again.open_runs() == ["r4"] and again.committed() == 10.0
    state = again.state()
    assert state["admitted_runs"] == ["r4"] and state["budget"] == 10.0
    with pytest.raises(ParameterError):
        PrivacyLedger(again.store, 12, budget=1.0, max_epsilon=2.0)


@pytest.mark.parametrize(
    "oracle",
    [GRR(2.0), OUE(2.0), OLH(2.0), OLHPool(2.0, pool_size=64, pool_seed=3)],
    ids=lambda o: o.name,
)
def test_report_checker(oracle) -> None:  # type: ignore[no-untyped-def]
    cand = np.arange(20, dtype=np.uint64)
    task = ReportTask.for_oracle("r", 1, 8, 5, "int:8", oracle, cand)
    checker = ReportChecker(oracle, task.candidates if task.candidates.size else cand)
    rng = np.random.default_rng(1)
    good = [checker.fields.frame(make_report(task, int(x), rng)) for x in rng.integers(0, 256, 300)]
    assert checker.check(good) == [None] * 300
    assert checker.check(good[:1]) == [None]
    # The same report in a valid but non-canonical encoding (spaces in its header).
    rep = Reports.from_bytes(good[0])
    head = json.dumps(
        {
            "kind": rep.kind,
            "size": rep.size,
            "fields": json.loads(good[0][9 : 9 + struct.unpack_from("<I", good[0], 5)[0]])[
                "fields"
            ],
        },
        indent=1,
    ).encode()
    body = good[0][9 + struct.unpack_from("<I", good[0], 5)[0] :]
    spaced = struct.pack("<4sBI", b"FHHR", 2, len(head)) + head + body
    assert spaced != good[0] and checker.check([spaced]) == [None]
    bad = [b"", b"junk", good[0][:-1], good[0] + b"\x00", Reports.concat(rep, rep).to_bytes()]
    if oracle.name != "oue":  # a value out of range (OUE's bits have none)
        over = bytearray(good[0])
        over[-4:] = (1 << 31).to_bytes(4, "little")
        bad.append(bytes(over))
    assert all(problem is not None for problem in checker.check(bad))
    assert all(checker.check([b])[0] is not None for b in bad)


def test_group_commit_acknowledges_only_stored_reports(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "a.sqlite")
    commit = GroupCommit(store)
    rows = [[("r", str(t * 100 + i), 1, b"x") for i in range(100)] for t in range(16)]
    threads = [threading.Thread(target=commit.write, args=(r,)) for r in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_reports("r") == 1600
    assert 1 <= commit.commits <= 16  # rows of waiting writers share a commit
    store.close()  # a store that cannot write: every waiter hears it
    with pytest.raises(StorageError):
        commit.write([("r", "x", 1, b"x")])
    commit.close()
    with pytest.raises(StorageError):
        commit.write([("r", "y", 1, b"x")])


class _Call:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def result(self) -> None:
        if not self.cancelled.wait(10):
            raise AssertionError("a heartbeat call was never cancelled")
        raise grpc.FutureCancelledError()

    def cancel(self) -> None:
        self.cancelled.set()


class _Stub:
    """Heartbeat calls that never answer until cancelled."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.Heartbeat = self

    def future(self, request: object, timeout: float) -> _Call:
        self.calls.append(_Call())
        return self.calls[-1]


def test_heartbeat_stops_and_cancels_its_call() -> None:
    stub = _Stub()
    beat = Heartbeat(stub, lambda: None, 0.05).start()
    deadline = time.monotonic() + 10
    while not stub.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert not beat.thread.is_alive() and stub.calls[0].cancelled.is_set()


class _Coordinator:
    def __init__(self, db: Path, tokens: TokenStore, port: int) -> None:
        self.store = Store(db)
        self.state = CoordinatorState(self.store, 60.0, heartbeat_seconds=0.05)
        self.server, _ = build_server(self.state, tokens)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait()
        self.state.close()
        self.store.close()


def test_one_heartbeat_per_agent_across_restarts(tmp_path: Path) -> None:
    """The coordinator (in this process) stops and starts again three times under a running
    agent: the agent reconnects each time and never holds more than one heartbeat thread."""
    add_token(tmp_path / "tokens.json", "party", "party-0", tmp_path / "p.token")
    tokens = TokenStore.load(tmp_path / "tokens.json")
    coord = _Coordinator(tmp_path / "c.sqlite", tokens, 0)
    port = coord.port
    store = AgentStore(tmp_path / "a.sqlite")
    codes = np.arange(50, dtype=np.uint64)
    agent = PartyAgent(
        party_id="party-0",
        coordinator=f"127.0.0.1:{port}",
        token=read_token_file(tmp_path / "p.token"),
        host=PartyHost("party-0", lambda spec: Party(spec, "party-0", codes), store),
        source_kind="data",
        n_users=50,
        codec="int:8",
        ledger=PrivacyLedger(store, 50),
        insecure=True,
        poll_seconds=0.2,
    )
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    most = 0
    try:
        for restart in range(4):
            end = time.monotonic() + 30
            while time.monotonic() < end and (
                agent.connections <= restart or agent.heartbeat is None or not agent.heartbeat.beats
            ):
                beats = [t for t in threading.enumerate() if t.name == "heartbeat"]
                most = max(most, len(beats))
                time.sleep(0.02)
            assert agent.connections == restart + 1 and agent.heartbeat and agent.heartbeat.beats
            coord.stop()
            if restart < 3:
                coord = _Coordinator(tmp_path / "c.sqlite", tokens, port)
    finally:
        agent.stop.set()
        runner.join(30)
    assert not runner.is_alive() and most == 1
    assert not [t for t in threading.enumerate() if t.name == "heartbeat"]


def test_runs_over_for_a_party(tmp_path: Path) -> None:
    """A party that failed in a run (here: an implausible reply) is told the run is over for it
    (its agent then closes the run's report task and settles its ε) while the run goes on with
    the others; a cancelled run is over for everyone."""
    from fedhh.protocol.encoding import encode
    from fedhh.wire.rpc import Refused

    with _two_party_run(tmp_path, "data") as state:
        assert state.finished_for("party-1", ["r", "gone"]) == ["gone"]
        found = state.next_request("party-1", 1.0)
        assert found is not None
        spec, sent, left = found
        assert 0 < left <= 60.0
        reply = Party(spec, "party-1", np.arange(500, dtype=np.uint64) % 256).handle(sent.request)
        assert reply is not None
        absurd = dataclasses.replace(
            reply,
            result=dataclasses.replace(
                reply.result, cost=dataclasses.replace(reply.result.cost, reports=10**9)
            ),
        )
        with pytest.raises(Refused, match="counts as failed"):
            state.submit("party-1", absurd, encode(absurd))
        assert state.finished_for("party-1", ["r"]) == ["r"]  # failed: over for party-1
        assert state.finished_for("party-0", ["r"]) == []  # the run goes on for party-0
        state.cancel("alice", "r")
        assert state.finished_for("party-0", ["r"]) == ["r"]


def test_a_held_request_is_not_sent_again(tmp_path: Path) -> None:
    """A device party's agent holds a level's request while its users report; its polls name
    it, and the coordinator sends it only to an agent that does not hold it (a level's request
    can carry 2^17 candidates)."""
    with _two_party_run(tmp_path, "devices") as state:
        found = state.next_request("party-1", 1.0)
        assert found is not None
        _, sent, _ = found
        assert state.next_request("party-1", 0.05, holding={("r", sent.request_id)}) is None
        assert state.next_request("party-1", 0.05, holding={("other", sent.request_id)})
        again = state.next_request("party-1", 0.05)  # an agent that lost it gets it again
        assert again is not None and again[1].request_id == sent.request_id


@contextlib.contextmanager
def _two_party_run(tmp_path: Path, source: str) -> Iterator[CoordinatorState]:
    """A coordinator (in this process) with parties 0 and 1 registered and PEM-Global run "r"
    started over them."""
    from fedhh.mechanisms.params import MechanismParams

    store = Store(tmp_path / "c.sqlite")
    state = CoordinatorState(store, 60.0)
    try:
        for pid in ("party-0", "party-1"):
            state.register(pid, 500, "int:8", source, {})
        params = MechanismParams(mechanism="pem-global", k=2, m=8, eta=2)
        state.start_run("alice", "r", params, ["party-0", "party-1"], "continue", 60.0)
        yield state
    finally:
        state.close()
        store.close()
