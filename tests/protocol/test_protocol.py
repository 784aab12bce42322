"""Protocol state machines: the wire encoding, reply validation, refusals, failure policy and the
run driver (any reply order, deadlines, replay)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedhh.datasets import synthetic_zipf
from fedhh.errors import ParameterError, ProtocolError
from fedhh.mechanisms import MechanismParams
from fedhh.mechanisms.tasks import ErrorResult, EstimateResult, EstimateTask, SearchTask
from fedhh.oracles import Reports
from fedhh.protocol import Coordinator, Party, Reply, Request, RunDriver, RunSpec
from fedhh.protocol.encoding import decode_reply, decode_request, decode_spec, encode
from fedhh.protocol.party import Group, LocalUsers
from fedhh.run.engine import build_run, run_in_process


@pytest.fixture(scope="module")
def fed():
    return synthetic_zipf(30_000, 3, m=16, n_items=200, s=1.3, split="dirichlet", alpha=0.5, seed=2)


def _run(fed, mechanism: str = "taps", **kw):
    params = MechanismParams(mechanism=mechanism, epsilon=3.0, k=4, m=16, seed=4, **kw)
    return build_run(fed.parties, fed.codec, params)


@pytest.mark.parametrize("mechanism", ["taps", "pem-local"])
def test_encoding_round_trips_every_message(fed, mechanism: str) -> None:
    spec, parties = _run(fed, mechanism=mechanism, completion=0.1 if mechanism == "taps" else 0.0)
    assert decode_spec(encode(spec)) == spec
    coord = Coordinator(spec)
    seen_kinds = set()
    queue = coord.start()
    while queue:
        nxt = []
        for req in queue:
            back = decode_request(encode(req))
            assert isinstance(back, Request) and back.request_id == req.request_id
            assert type(back.task) is type(req.task)
            for f in dataclasses.fields(req.task):
                a, b = getattr(req.task, f.name), getattr(back.task, f.name)
                assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            reply = decode_reply(encode(parties[req.party_id].handle(req)))
            assert isinstance(reply, Reply)
            seen_kinds.add(type(reply.result).__name__)
            nxt.extend(coord.step(reply))
        queue = nxt
    assert coord.result is not None
    assert seen_kinds <= {"EstimateResult", "SearchResult"} and seen_kinds


def test_every_mechanism_parameter_travels() -> None:
    """The parameters travel as a JSON object of the dataclass fields: each one, set to a value
    other than its default, comes back (so a new field needs no change to the wire)."""
    base = MechanismParams(m=16)
    for f in dataclasses.fields(MechanismParams):
        value = {"mechanism": "tap", "oracle": "grr", "step_rule": "fixed", "party_order": "given",
                 "completion_mode": "sum", "phase1_keep": "confidence", "depth_rule": "ratio",
                 "m": 24, "completion": 0.2, "final_weight": 2.0,
                 "prune_rule": "consensus"}.get(f.name)  # fmt: skip
        if value is None:
            old = getattr(base, f.name)
            value = (not old) if isinstance(old, bool) else (old or 1) * 2 if old else 3
        params = dataclasses.replace(base, **{f.name: value})
        back = decode_spec(encode(RunSpec("r", params, ("a",), (10,), f"int:{params.m}"))).params
        assert back == params, f.name


@pytest.mark.parametrize("data", [b"\xff", b"\x0a\x05abc", b"\x12\x03\x0a\x01{"])
def test_encoding_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_spec(data)


def test_encoding_rejects_invalid_content() -> None:
    spec_bytes = encode(RunSpec("r", MechanismParams(m=16), ("a",), (10,), "int:16")).replace(
        b'"epsilon": 4.0', b'"epsilon": 0.0'
    )
    with pytest.raises(ProtocolError, match="epsilon"):
        decode_spec(spec_bytes)


def test_driver_takes_replies_in_any_order(fed) -> None:
    """Replies arriving in reverse order give the same result as in request order."""
    spec, parties = _run(fed, mechanism="pem-global")
    ref = run_in_process(spec, parties)
    spec, parties = _run(fed, mechanism="pem-global")
    driver = RunDriver(spec)
    queue = driver.start()
    while queue:
        nxt = []
        for sent in reversed(queue):
            reply = parties[sent.party_id].handle(decode_request(sent.payload))
            nxt.extend(driver.receive(encode(reply)))
        queue = nxt
    result = driver.outcome()
    np.testing.assert_array_equal(result.estimates, ref.estimates)
    assert result.cost["bytes_to_parties"] == ref.cost["bytes_to_parties"] > 0


def test_driver_deadlines_and_replay(fed) -> None:
    """A silent party misses its deadline; a replay of what was stored reaches the same state."""
    spec, parties = _run(fed, mechanism="pem-global")
    driver = RunDriver(spec, "continue", deadline=5.0)
    stored: dict[str, dict] = {"requests": {}, "replies": {}, "failures": {}}
    queue, t = driver.start(now=0.0), 0.0
    while queue:
        stored["requests"].update({s.request_id: s.payload for s in queue})
        nxt: list = []
        for sent in queue:
            if sent.party_id == spec.party_ids[0]:
                continue  # silent
            data = encode(parties[sent.party_id].handle(decode_request(sent.payload)))
            stored["replies"][sent.request_id] = data
            nxt.extend(driver.receive(data, now=t + 1))
        assert driver.expired(now=t + 4) == []
        for sent in driver.expired(now=t + 6) if not nxt else []:
            stored["failures"][sent.request_id] = "deadline"
            nxt.extend(driver.fail(sent.request_id, "deadline", now=t + 6))
        queue, t = nxt, t + 6
    result = driver.outcome()
    assert result.failed_parties == [spec.party_ids[0]]

    class Record:
        def requests(self) -> dict:
            return stored["requests"]

        def replies(self) -> dict:
            return stored["replies"]

        def failures(self) -> dict:
            return stored["failures"]

    again, missing = RunDriver.replay(spec, "continue", 5.0, Record())
    assert missing == [] and again.done
    np.testing.assert_array_equal(again.outcome().estimates, result.estimates)


def _first_round(fed):
    spec, parties = _run(fed)
    coord = Coordinator(spec)
    return spec, parties, coord, coord.start()


def test_coordinator_rejects_bad_replies(fed) -> None:
    _spec, parties, coord, reqs = _first_round(fed)
    good = parties[reqs[0].party_id].handle(reqs[0])
    wrong_run = dataclasses.replace(good, run_id="other")
    with pytest.raises(ProtocolError, match="run"):
        coord.step(wrong_run)
    with pytest.raises(ProtocolError, match="never sent"):
        coord.step(dataclasses.replace(good, request_id=999))
    with pytest.raises(ProtocolError, match="went to"):
        coord.step(dataclasses.replace(good, party_id=reqs[1].party_id))
    assert isinstance(good.result, EstimateResult)
    short = dataclasses.replace(
        good.result, estimates=good.result.estimates[:-1], stderrs=good.result.stderrs[:-1]
    )
    with pytest.raises(ProtocolError, match="estimates"):
        coord.step(dataclasses.replace(good, result=short))
    nan = dataclasses.replace(good.result, estimates=np.full_like(good.result.estimates, np.nan))
    with pytest.raises(ProtocolError, match="non-finite"):
        coord.step(dataclasses.replace(good, result=nan))
    assert coord.step(good) == []  # the good reply is still accepted afterwards
    with pytest.raises(ProtocolError, match="already answered"):
        coord.step(good)


def test_party_refuses_a_second_group_and_replays_the_first(fed) -> None:
    _spec, parties, _coord, reqs = _first_round(fed)
    req = reqs[0]
    party = parties[req.party_id]
    first = party.handle(req)
    assert party.handle(req) is first  # same request id: the same reply, no new reports
    reported = party.ledger.reports
    again = dataclasses.replace(req, request_id=req.request_id + 100)
    second = party.handle(again)
    assert isinstance(second.result, ErrorResult)
    assert party.ledger.reports == reported


@pytest.mark.parametrize(
    "task",
    [
        EstimateTask(5, 9, np.arange(4, dtype=np.uint64)),
        EstimateTask(0, 3, np.arange(4, dtype=np.uint64)),
        EstimateTask(0, 8, np.zeros(0, dtype=np.uint64)),
        EstimateTask(0, 8, np.array([1, 1 << 20], dtype=np.uint64)),
        EstimateTask(0, 8, np.arange(4, dtype=np.uint64), group="vip"),
        SearchTask("pem", 2, np.arange(4, dtype=np.uint64)),
        SearchTask("phase2", 8, np.arange(4, dtype=np.uint64)),
    ],
)
def test_party_refuses_invalid_tasks(fed, task) -> None:
    spec, parties = _run(fed)
    party = parties[spec.party_ids[0]]
    reply = party.handle(Request(spec.run_id, 0, 1, spec.party_ids[0], task))
    assert isinstance(reply.result, ErrorResult)
    assert party.ledger.reports == 0


def test_party_refuses_a_prior_whose_arrays_disagree(fed) -> None:
    spec, parties = _run(fed)
    party = parties[spec.party_ids[0]]
    prior = np.arange(3, dtype=np.uint64)
    task = SearchTask("phase2", 8, prior, prior, np.ones(2), np.ones(3), item_bits=16)
    reply = party.handle(Request(spec.run_id, 0, 1, spec.party_ids[0], task))
    assert isinstance(reply.result, ErrorResult)
    assert "3 prior items with 2 estimates and 3 standard errors" in reply.result.message
    assert party.ledger.reports == 0


def test_party_refuses_requests_for_another_party_or_run(fed) -> None:
    spec, parties = _run(fed)
    party = parties[spec.party_ids[0]]
    task = EstimateTask(0, 8, np.arange(4, dtype=np.uint64))
    for req in (
        Request("other-run", 0, 1, spec.party_ids[0], task),
        Request(spec.run_id, 1, 1, spec.party_ids[1], task),
    ):
        assert isinstance(party.handle(req).result, ErrorResult)
    assert party.ledger.reports == 0


def _run_without(coord: Coordinator, parties, gone: str, reason: str) -> None:
    """Drive ``coord`` to its end with party ``gone`` failing every request."""
    queue = coord.start()
    while queue and not coord.done:
        nxt = []
        for req in queue:
            if req.party_id == gone:
                nxt.extend(coord.fail_party(gone, reason))
            else:
                nxt.extend(coord.step(parties[req.party_id].handle(req)))
        queue = nxt


@pytest.mark.parametrize("policy", ["continue", "fail"])
def test_failure_policy(fed, policy: str) -> None:
    spec, parties = _run(fed, mechanism="tap")
    coord = Coordinator(spec, policy)
    gone = spec.party_ids[2]
    _run_without(coord, parties, gone, "deadline missed")
    if policy == "continue":
        assert coord.result is not None and coord.result.failed_parties == [gone]
        assert coord.result.cost["reports_per_party"][gone] == 0
    else:
        assert coord.result is None and "deadline missed" in (coord.error or "")


def test_run_spec_validation() -> None:
    params = MechanismParams(m=16)
    with pytest.raises(ParameterError, match="distinct"):
        RunSpec("r", params, ("a", "a"), (1, 1), "int:16")
    with pytest.raises(ParameterError, match="bits"):
        RunSpec("r", params, ("a",), (1,), "int:20")
    with pytest.raises(ParameterError, match="codec"):
        RunSpec("r", params, ("a",), (1,), "float:16")


@pytest.mark.parametrize("mechanism", ["taps", "tap", "pem-global", "pem-local"])
def test_continue_policy_survives_a_failed_party_in_every_mechanism(fed, mechanism: str) -> None:
    """A TAPS turn addresses one party: if it fails, the sequential pass goes on without it."""
    spec, parties = _run(fed, mechanism=mechanism, completion=0.1 if mechanism == "taps" else 0.0)
    coord = Coordinator(spec, "continue")
    gone = spec.party_ids[1]
    _run_without(coord, parties, gone, "node gone")
    assert coord.error is None and coord.result is not None
    assert coord.result.failed_parties == [gone] and coord.result.items.size > 0


def test_run_fails_when_every_party_fails(fed) -> None:
    spec, _ = _run(fed, mechanism="taps")
    coord = Coordinator(spec, "continue")
    queue = coord.start()
    for pid in spec.party_ids:
        queue = coord.fail_party(pid, "node gone") or queue
    assert coord.result is None and "no party answered" in (coord.error or "")


class _HalfReports:
    """A report source whose first group closes with only half of its users' reports (as a
    device group can when its collection time runs out)."""

    def __init__(self, codes: np.ndarray, m: int) -> None:
        self.inner = LocalUsers(codes, m)
        self.n_users = self.inner.n_users
        self.sizes: list[int] = []

    def reports(self, group: Group, rng: np.random.Generator) -> Reports:
        self.sizes.append(int(group.users.size))
        got = self.inner.reports(group, rng)
        return got.take(slice(0, got.n // 2)) if len(self.sizes) == 1 else got


def test_users_who_did_not_report_stay_for_later_levels(fed) -> None:
    """A group that closes with fewer reports than users gives the rest back to the ledger: the
    party's users still all get a level, none is lost."""
    params = MechanismParams(mechanism="pem-global", epsilon=3.0, k=4, m=16, eta=4, seed=4)
    spec, parties = build_run(fed.parties, fed.codec, params)
    pid = spec.party_ids[0]
    source = _HalfReports(fed.parties[0], 16)
    parties[pid] = Party(spec, pid, source)
    run_in_process(spec, parties)
    first, rest = source.sizes[0], source.sizes[1:]
    assert len(rest) >= 1
    # the users of the first group who did not report were handed to the later levels: every
    # user of the party reported exactly once over the run
    assert sum(rest) == source.n_users - first // 2
    assert parties[pid].ledger.reports == source.n_users


def test_completion_fills_an_item_only_where_the_other_parties_hold_it() -> None:
    """Completion "fill": the reserve estimates of the parties that did not report an item are
    added only when their sum exceeds z standard errors; "sum" takes the reserve estimates."""
    from fedhh.mechanisms.plans import complete
    from fedhh.mechanisms.tasks import LevelCost

    items = np.array([10, 20], dtype=np.uint64)
    by_party = {  # party 0 reported both items, party 1 neither, party 2 only item 20
        0: (items, np.array([1000.0, 900.0]), np.array([50.0, 50.0])),
        1: (np.zeros(0, dtype=np.uint64), np.zeros(0), np.zeros(0)),
        2: (items[1:], np.array([300.0]), np.array([40.0])),
    }
    cost = LevelCost(64, 0, 2, 100, "grr", 0, 0)
    reserve = {  # item 10: 160 ± 40·√2 over parties 1 and 2 (2.8 SE); item 20: 500 ± 40
        1: EstimateResult(np.array([60.0, 500.0]), np.array([40.0, 40.0]), cost),
        2: EstimateResult(np.array([100.0, -20.0]), np.array([40.0, 40.0]), cost),
    }
    at3 = complete(by_party, reserve, items, "fill", 3.0)
    assert list(at3.estimates) == [1000.0, 1700.0]  # 10: not significant; 20: party 1's 500
    assert list(at3.contributors) == [1, 3]
    assert np.allclose(at3.stderrs, [50.0, np.sqrt(50**2 + 40**2 + 40**2)])
    at2 = complete(by_party, reserve, items, "fill", 2.0)
    assert list(at2.estimates) == [1160.0, 1700.0] and list(at2.contributors) == [3, 3]
    fresh = complete(by_party, reserve, items, "sum", 3.0)
    assert list(fresh.estimates) == [1160.0, 1380.0]  # party 0 (no reserve reply) + 1 + 2
    assert list(fresh.contributors) == [3, 3]
