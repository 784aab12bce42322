"""The coordinator refuses bad input with precise gRPC statuses and keeps what it stored: wrong or
missing tokens, another party's token, another analyst's run, plaintext against TLS, undecodable,
oversized and malformed messages (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED when over a size
limit), out-of-range values, replies never asked for, duplicates, and replies whose figures
cannot be true (the party then counts as failed). The test process plays party-0 (with the
protocol's Party) so it can send both good and bad replies; the run completes afterwards with
the same result as `fedhh simulate`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_harness import Cluster, running_cluster
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedhh.core.items import IntCodec
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Party, Request, RunSpec, encoding
from fedhh.run.engine import simulate
from fedhh.wire.security import open_channel
from fedhh.wire.tokens import read_token_file
from fedhh.wire.v1 import analyst_pb2, analyst_pb2_grpc, party_pb2, party_pb2_grpc

PARAMS = MechanismParams(mechanism="pem-global", k=4, m=16, seed=5)
CODES = np.random.default_rng(2).zipf(1.3, 3000).clip(max=60000).astype(np.uint64)


def code_of(call, *args, **kw) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10, **kw)
    return err.value.code()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    others = (("analyst", "bob"), ("admin", "root"), ("device", "app"))
    with running_cluster(tmp_path, ["party-0", "party-1"], *others) as c:
        c.start_coordinator("--max-message-bytes", str(1 << 20))
        yield c


def test_refusals_leave_the_run_intact(cluster: Cluster) -> None:
    ca = cluster.certs.ca
    tok = {
        n: read_token_file(cluster.token(r, n))
        for r, n in (("analyst", "alice"), ("party", "party-0"), ("party", "party-1"))
    }
    analyst = analyst_pb2_grpc.AnalystServiceStub(
        open_channel(cluster.target, token=tok["alice"], ca_cert=ca)
    )
    p0 = party_pb2_grpc.PartyServiceStub(
        open_channel(cluster.target, token=tok["party-0"], ca_cert=ca)
    )
    list_runs = analyst_pb2.ListRunsRequest()

    # --- authentication and transport ---------------------------------------------------------
    for token in (None, "not-a-token"):
        stub = analyst_pb2_grpc.AnalystServiceStub(
            open_channel(cluster.target, token=token, ca_cert=ca)
        )
        assert code_of(stub.ListRuns, list_runs) == grpc.StatusCode.UNAUTHENTICATED
    as_party = analyst_pb2_grpc.AnalystServiceStub(
        open_channel(cluster.target, token=tok["party-0"], ca_cert=ca)
    )
    assert code_of(as_party.ListRuns, list_runs) == grpc.StatusCode.PERMISSION_DENIED
    plain = analyst_pb2_grpc.AnalystServiceStub(
        open_channel(cluster.target, token=tok["alice"], insecure=True)
    )
    assert code_of(plain.ListRuns, list_runs) == grpc.StatusCode.UNAVAILABLE
    as_analyst = party_pb2_grpc.PartyServiceStub(
        open_channel(cluster.target, token=tok["alice"], ca_cert=ca)
    )
    reg = party_pb2.RegisterRequest(
        party_id="party-0", n_users=CODES.size, codec="int:16", source="data"
    )
    assert code_of(as_analyst.Register, reg) == grpc.StatusCode.PERMISSION_DENIED

    # --- registration ---------------------------------------------------------------------------
    other = party_pb2.RegisterRequest(party_id="party-1", n_users=10, codec="int:16", source="data")
    assert code_of(p0.Register, other) == grpc.StatusCode.PERMISSION_DENIED
    for bad in (
        party_pb2.RegisterRequest(party_id="party-0", n_users=0, codec="int:16", source="data"),
        party_pb2.RegisterRequest(party_id="party-0", n_users=5, codec="int:99", source="data"),
        party_pb2.RegisterRequest(party_id="party-0", n_users=5, codec="int:16", source="x"),
    ):
        assert code_of(p0.Register, bad) == grpc.StatusCode.INVALID_ARGUMENT
    poll = party_pb2.PollRequest(party_id="party-0", wait_seconds=0)
    assert code_of(p0.Poll, poll) == grpc.StatusCode.FAILED_PRECONDITION  # not registered yet
    nan_budget = party_pb2.RegisterRequest()
    nan_budget.CopyFrom(reg)
    nan_budget.budget.committed = float("nan")
    assert code_of(p0.Register, nan_budget) == grpc.StatusCode.INVALID_ARGUMENT
    # Bytes that are no protobuf message at all: INVALID_ARGUMENT, not INTERNAL.
    raw = open_channel(cluster.target, token=tok["party-0"], ca_cert=ca)
    for method in ("/fedhh.v1.PartyService/Register", "/fedhh.v1.PartyService/SubmitReply"):
        call = raw.unary_unary(method, request_serializer=None, response_deserializer=None)
        assert code_of(call, b"\xff\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT
    p0.Register(reg, timeout=10)

    # --- run parameters -------------------------------------------------------------------------
    def start(**kw) -> analyst_pb2.StartRunRequest:  # type: ignore[no-untyped-def]
        fields = {
            "mechanism": "pem-global",
            "epsilon": 4.0,
            "k": 4,
            "m": 16,
            "eta": 4,
            "seed": 5,
            **kw.pop("params", {}),
        }
        msg = encoding.params_to_pb(PARAMS)
        msg.json = json.dumps({**json.loads(msg.json), **fields})
        return analyst_pb2.StartRunRequest(
            params=msg, party_ids=kw.pop("parties", ["party-0"]), **kw
        )

    for bad in (
        start(params={"epsilon": 0.0}),
        start(params={"epsilon": float("nan")}),
        start(params={"k": 0}),
        start(params={"m": 0}),
        start(params={"eta": 40}),
        start(params={"mechanism": "nope"}),
        start(parties=[]),
        start(parties=["../etc"]),
        start(parties=["party-0", "party-0"]),
        start(policy="maybe"),
        start(deadline_seconds=-1.0),
        start(run_id="bad id!"),
        start(params={"k": 3001}),  # more than party-0's users
    ):
        assert code_of(analyst.StartRun, bad) == grpc.StatusCode.INVALID_ARGUMENT
    for big in (
        start(params={"k": 5000}),  # over the coordinator's k limit
        start(params={"kappa": 1 << 21}),  # candidate sets over the limit
        start(parties=[f"p{i}" for i in range(1025)]),
    ):
        assert code_of(analyst.StartRun, big) == grpc.StatusCode.RESOURCE_EXHAUSTED
    analyst.StartRun(start(run_id="sec-1", deadline_seconds=120.0), timeout=10)
    assert code_of(analyst.StartRun, start(run_id="sec-1")) == grpc.StatusCode.ALREADY_EXISTS
    top = analyst_pb2.TopRequest(run_id="sec-1")
    assert code_of(analyst.GetTop, top) == grpc.StatusCode.FAILED_PRECONDITION  # still running
    assert code_of(analyst.GetTop, analyst_pb2.TopRequest(run_id="nope")) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(analyst.GetTop, analyst_pb2.TopRequest(run_id="sec-1", k=-1)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    many = analyst_pb2.FrequencyRequest(run_id="sec-1", items=["1"] * 10_001)
    assert code_of(analyst.GetFrequency, many) == grpc.StatusCode.RESOURCE_EXHAUSTED

    # --- authorization: runs belong to their analyst; an admin sees every run ------------------
    def channel_of(role: str, name: str) -> grpc.Channel:
        token = read_token_file(cluster.token(role, name))
        return open_channel(cluster.target, token=token, ca_cert=ca)

    bob = analyst_pb2_grpc.AnalystServiceStub(channel_of("analyst", "bob"))
    root = analyst_pb2_grpc.AnalystServiceStub(channel_of("admin", "root"))
    ref = analyst_pb2.RunRef(run_id="sec-1")
    for call in (bob.GetStatus, bob.CancelRun, bob.GetCost):
        assert code_of(call, ref) == grpc.StatusCode.PERMISSION_DENIED
    for stub, run, code in (
        (bob, "sec-1", grpc.StatusCode.PERMISSION_DENIED),  # the stream too: alice's run
        (root, "no-such-run", grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.WatchRun(analyst_pb2.RunRef(run_id=run), timeout=10))
        assert err.value.code() == code
    assert list(bob.ListRuns(list_runs, timeout=10).runs) == []
    assert [r.run_id for r in root.ListRuns(list_runs, timeout=10).runs] == ["sec-1"]
    info = root.GetStatus(ref, timeout=10)
    assert info.owner == "alice" and info.parties[0].party_id == "party-0"
    assert info.parties[0].registered and info.parties[0].seconds_since_seen < 60
    # Reflection: party, analyst and admin tokens; never a device token.
    refl = reflection_pb2_grpc.ServerReflectionStub(channel_of("device", "app"))
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as err:
        list(refl.ServerReflectionInfo(iter([ask]), timeout=10))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    refl = reflection_pb2_grpc.ServerReflectionStub(raw)
    assert list(refl.ServerReflectionInfo(iter([ask]), timeout=10))

    # --- polling and replies --------------------------------------------------------------------
    other_poll = party_pb2.PollRequest(party_id="party-1", wait_seconds=0)
    assert code_of(p0.Poll, other_poll) == grpc.StatusCode.PERMISSION_DENIED
    bad_runs = party_pb2.PollRequest(party_id="party-0", open_runs=["bad id!"])
    assert code_of(p0.Poll, bad_runs) == grpc.StatusCode.INVALID_ARGUMENT
    too_many = party_pb2.PollRequest(party_id="party-0", open_runs=["r"] * 10_001)
    assert code_of(p0.Poll, too_many) == grpc.StatusCode.RESOURCE_EXHAUSTED
    resp = p0.Poll(party_pb2.PollRequest(party_id="party-0", wait_seconds=10), timeout=20)
    spec = encoding.from_pb(RunSpec, resp.spec)
    req = encoding.from_pb(Request, resp.request)
    party = Party(spec, "party-0", CODES)
    good = encoding.to_pb(party.handle(req))
    db = sqlite3.connect(cluster.root / "coord.sqlite")

    def counts() -> tuple[int, int]:
        return tuple(
            db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
            for t in ("requests", "replies")
        )

    before = counts()

    def variant(**change) -> party_pb2.SubmitReplyResponse:  # type: ignore[no-untyped-def]
        msg = type(good)()
        msg.CopyFrom(good)
        for path, value in change.items():
            target = msg
            *parents, last = path.split("__")
            for name in parents:
                target = getattr(target, name)
            if hasattr(value, "CopyFrom"):
                getattr(target, last).CopyFrom(value)
            else:
                setattr(target, last, value)
        return msg

    n = req.task.candidates.size
    short = encoding.array_to_pb(np.zeros(n - 1))
    nan = encoding.array_to_pb(np.full(n, np.nan))
    checks = {
        grpc.StatusCode.NOT_FOUND: [variant(request_id=999)],
        grpc.StatusCode.PERMISSION_DENIED: [variant(party_id="party-1")],
        grpc.StatusCode.INVALID_ARGUMENT: [
            variant(estimate__estimates__data=b"\x00\x01\x02"),  # malformed array
            variant(estimate__estimates__dtype="complex128"),
            variant(estimate__estimates=short),  # wrong length
            variant(estimate__stderrs=nan),  # non-finite
            variant(version=7),
            type(good)(run_id="sec-1", request_id=0, party_id="party-0"),  # no result
        ],
    }
    for status, msgs in checks.items():
        for msg in msgs:
            assert code_of(p0.SubmitReply, msg) == status, msg
    huge = variant(estimate__estimates__data=b"\x00" * (2 << 20))
    assert code_of(p0.SubmitReply, huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert counts() == before  # nothing stored, nothing lost

    assert p0.SubmitReply(good, timeout=10).accepted
    assert code_of(p0.SubmitReply, good) == grpc.StatusCode.ALREADY_EXISTS
    assert counts()[1] == before[1] + 1

    # --- the run is intact: finish it and compare with the in-process engine -----------------
    while True:
        resp = p0.Poll(party_pb2.PollRequest(party_id="party-0", wait_seconds=2), timeout=20)
        if not resp.HasField("request"):
            info = analyst.GetStatus(analyst_pb2.RunRef(run_id="sec-1"), timeout=10)
            if info.state != "running":
                break
            continue
        reply = party.handle(encoding.from_pb(Request, resp.request))
        p0.SubmitReply(encoding.to_pb(reply), timeout=10)
    assert info.state == "done", info.error
    assert code_of(p0.SubmitReply, good) == grpc.StatusCode.FAILED_PRECONDITION  # run over
    rows = analyst.GetTop(analyst_pb2.TopRequest(run_id="sec-1"), timeout=10).rows
    want = simulate([CODES], IntCodec(16), PARAMS, party_ids=["party-0"])
    assert [r.code for r in rows] == want.items.tolist()
    np.testing.assert_array_equal([r.estimate for r in rows], want.estimates)
    refused = db.execute("SELECT COUNT(*) FROM audit WHERE action LIKE 'refused:%'").fetchone()[0]
    assert refused >= 20


@pytest.mark.parametrize("policy", ["continue", "fail"])
def test_party_missing_its_deadline(cluster: Cluster, policy: str) -> None:
    """party-1 registers but never answers: after the deadline the run goes on without it
    (recorded in the result) or fails with the reason, by policy."""
    ca = cluster.certs.ca
    stubs = {
        pid: party_pb2_grpc.PartyServiceStub(
            open_channel(
                cluster.target, token=read_token_file(cluster.token("party", pid)), ca_cert=ca
            )
        )
        for pid in ("party-0", "party-1")
    }
    for pid, stub in stubs.items():
        stub.Register(
            party_pb2.RegisterRequest(
                party_id=pid, n_users=CODES.size, codec="int:16", source="data"
            ),
            timeout=10,
        )
    analyst = analyst_pb2_grpc.AnalystServiceStub(
        open_channel(
            cluster.target, token=read_token_file(cluster.token("analyst", "alice")), ca_cert=ca
        )
    )
    analyst.StartRun(
        analyst_pb2.StartRunRequest(
            run_id="late",
            params=encoding.params_to_pb(PARAMS),
            party_ids=["party-0", "party-1"],
            policy=policy,
            deadline_seconds=1.0,
        ),
        timeout=10,
    )
    party = None
    while True:
        resp = stubs["party-0"].Poll(
            party_pb2.PollRequest(party_id="party-0", wait_seconds=1), timeout=20
        )
        info = analyst.GetStatus(analyst_pb2.RunRef(run_id="late"), timeout=10)
        if info.state != "running":
            break
        if resp.HasField("request"):
            if party is None:
                party = Party(encoding.from_pb(RunSpec, resp.spec), "party-0", CODES)
            reply = party.handle(encoding.from_pb(Request, resp.request))
            try:
                stubs["party-0"].SubmitReply(encoding.to_pb(reply), timeout=10)
            except grpc.RpcError as exc:  # the run may have failed meanwhile
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert list(info.failed_parties) == ["party-1"]
    if policy == "continue":
        assert info.state == "done"
        doc = analyst.GetTop(analyst_pb2.TopRequest(run_id="late"), timeout=10)
        result = json.loads(doc.document_json)
        assert result["failed_parties"] == ["party-1"] and len(doc.rows) == PARAMS.k
        assert result["cost"]["reports_per_party"]["party-1"] == 0
    else:
        assert info.state == "failed"
        assert "party party-1 failed: no reply to request 1 within 1 s" in info.error


def test_absurd_figures_are_refused(cluster: Cluster) -> None:
    """A party of 3,000 users claiming 10^15 reports, or estimates of 1e300: the reply is
    refused (INVALID_ARGUMENT, nothing of it stored) and the party fails under the policy."""
    ca = cluster.certs.ca
    p0 = party_pb2_grpc.PartyServiceStub(
        open_channel(
            cluster.target, token=read_token_file(cluster.token("party", "party-0")), ca_cert=ca
        )
    )
    analyst = analyst_pb2_grpc.AnalystServiceStub(
        open_channel(
            cluster.target, token=read_token_file(cluster.token("analyst", "alice")), ca_cert=ca
        )
    )
    p0.Register(
        party_pb2.RegisterRequest(
            party_id="party-0", n_users=CODES.size, codec="int:16", source="data"
        ),
        timeout=10,
    )
    db = sqlite3.connect(cluster.root / "coord.sqlite")
    for run_id, field, value in (("absurd-1", "reports", 10**15), ("absurd-2", "estimates", 1e300)):
        analyst.StartRun(
            analyst_pb2.StartRunRequest(
                run_id=run_id,
                params=encoding.params_to_pb(PARAMS),
                party_ids=["party-0"],
                policy="fail",
                deadline_seconds=120.0,
            ),
            timeout=10,
        )
        resp = p0.Poll(party_pb2.PollRequest(party_id="party-0", wait_seconds=10), timeout=20)
        party = Party(encoding.from_pb(RunSpec, resp.spec), "party-0", CODES)
        reply = encoding.to_pb(party.handle(encoding.from_pb(Request, resp.request)))
        if field == "reports":
            reply.estimate.cost.reports = value
        else:
            n = len(reply.estimate.estimates.data) // 8
            reply.estimate.estimates.CopyFrom(encoding.array_to_pb(np.full(n, value)))
        with pytest.raises(grpc.RpcError) as err:
            p0.SubmitReply(reply, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "counts as failed" in (err.value.details() or "")
        info = analyst.GetStatus(analyst_pb2.RunRef(run_id=run_id), timeout=10)
        assert info.state == "failed" and list(info.failed_parties) == ["party-0"]
        assert "implausible" in info.error or "estimates up to" in info.error, info.error
        replies = db.execute("SELECT COUNT(*) FROM replies WHERE run_id=?", (run_id,)).fetchone()
        assert replies[0] == 0
