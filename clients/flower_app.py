"""The Flower ClientApp: one SuperNode answers for one party (docs/flower.md).

* ``query.discover``: loads the node's party data (:mod:`fedhh.clients.flower_data`) and replies
  with its ``PartyInfo``;
* ``query.estimate`` / ``query.search``: one request's bytes, answered by the party's
  :class:`~fedhh.protocol.host.PartyHost`.

A SuperNode runs each message in a fresh ClientApp process, so the party's state lives in the
node's run context (``context.state``, which never leaves the node): its codes and the log of
the requests it has answered, from which the host rebuilds the party. Processes that outlive a
message (Flower simulation's Ray actors) keep the host in memory and skip the replay. A protocol
failure becomes an error reply, never a crash; a message that cannot be decoded raises, and
Flower returns it to the ServerApp as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedhh.clients.budget import PrivacyLedger
from fedhh.clients.flower_data import PartyData, party_data
from fedhh.clients.store import AgentStore
from fedhh.core.privacy import DEFAULT_BUDGET, DEFAULT_MAX_EPSILON
from fedhh.errors import FedHHError, ParameterError, ProtocolError
from fedhh.flower import records
from fedhh.protocol import Party
from fedhh.protocol.admission import PartyAdmission
from fedhh.protocol.encoding import decode_request, encode
from fedhh.protocol.host import PartyHost, error_reply
from fedhh.protocol.limits import Limits
from fedhh.run import settings
from fedhh.wire.v1 import protocol_pb2

_DATA = "fedhh.data"  # ArrayRecord "codes" of the node's party
_INFO = "fedhh.party"  # ConfigRecord "info": the PartyInfo bytes
_LOG = "fedhh.log"  # ConfigRecord: spec, request and reply bytes of every answer

# per process, by (Flower run, node): a host and how many log entries of the node it has seen
_HOSTS: dict[tuple[int, int], tuple[PartyHost, int]] = {}


class RunLedger:
    """The node's :class:`PrivacyLedger` for one Flower run: admitting a run charges its ε to
    every user at once (the ClientApp is not told when a run is over)."""

    def __init__(self, ledger: PrivacyLedger, flower_run: int) -> None:
        self.ledger, self.flower_run = ledger, flower_run

    def admit(self, run_id: str, epsilon: float, party_id: str) -> None:
        key = f"flower-{self.flower_run}:{run_id}"  # a fedhh run id may recur across Flower runs
        self.ledger.admit(key, epsilon, party_id)
        self.ledger.settle(key, None)


def _number(node: Mapping[str, Any], key: str, default: float) -> float:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParameterError(f"node config {key} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ParameterError(f"node config {key} must be a number, got {value!r}") from None


def _node_ledger(context: Context, n_users: int, party_id: str) -> PrivacyLedger:
    """The node's privacy ledger: in its ``state-db`` file (bound to its party), or in memory
    (this run only)."""
    node = context.node_config
    path = str(node.get("state-db") or "")
    return PrivacyLedger(
        AgentStore.of_party(Path(path).expanduser() if path else Path(":memory:"), party_id),
        n_users,
        _number(node, "epsilon-budget", DEFAULT_BUDGET),
        _number(node, "max-epsilon", DEFAULT_MAX_EPSILON),
        _number(node, "max-central-epsilon", 0.0),
    )


def node_admission(context: Context, n_users: int, party_id: str) -> PartyAdmission:
    """The node operator's limits and privacy ledger (node config only)."""
    bounds = settings.from_config(Limits, context.node_config)
    ledger = _node_ledger(context, n_users, party_id)
    return PartyAdmission(bounds, RunLedger(ledger, context.run_id), ledger.max_central)


def _load_party(context: Context, overrides: Mapping[str, Any]) -> PartyData:
    """The node's party data: from the run state if loaded before, else from the configs."""
    state = context.state
    if _DATA in state.array_records and _INFO in state.config_records:
        info = protocol_pb2.PartyInfo.FromString(state.config_records[_INFO]["info"])
        return PartyData(state.array_records[_DATA]["codes"].numpy(), info)
    data = party_data(context.node_config, {**context.run_config, **overrides})
    ledger = _node_ledger(context, int(data.info.users), data.info.party_id)
    try:  # the ServerApp checks a run against it (and the node's ε_c cap) before it starts
        data.info.budget.CopyFrom(protocol_pb2.PrivacyBudget(**ledger.state()))
    finally:
        ledger.store.close()
    state[_DATA] = ArrayRecord({"codes": Array(np.ascontiguousarray(data.codes))})
    state[_INFO] = ConfigRecord({"info": data.info.SerializeToString()})
    return data


class StateLog:
    """A :class:`~fedhh.protocol.host.PartyLog` in the node's run state."""

    def __init__(self, context: Context) -> None:
        self.state = context.state

    def _columns(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        rec = self.state.config_records.get(_LOG)
        if rec is None:
            return [], [], []
        cols = [rec.get(k) for k in ("specs", "requests", "replies")]
        if not all(isinstance(c, list) for c in cols):
            raise ProtocolError("corrupt request log in the node state")
        specs, requests, replies = (list(map(bytes, c)) for c in cols)  # type: ignore[arg-type]
        return specs, requests, replies

    def reply_for(self, run_id: str, request_id: int) -> bytes | None:
        _, requests, replies = self._columns()
        for req, rep in zip(requests, replies, strict=True):
            r = decode_request(req)
            if (r.run_id, r.request_id) == (run_id, request_id):
                return rep
        return None

    def size(self) -> int:
        """Answers in the log (of every run)."""
        rec = self.state.config_records.get(_LOG)
        requests = rec.get("requests") if rec is not None else None
        return len(requests) if isinstance(requests, list) else 0

    def handled(self, run_id: str) -> list[tuple[bytes, bytes, bytes]]:
        rows = zip(*self._columns(), strict=True)
        return [row for row in rows if decode_request(row[1]).run_id == run_id]

    def save_handled(
        self, run_id: str, request_id: int, spec: bytes, request: bytes, reply: bytes
    ) -> None:
        specs, requests, replies = self._columns()
        self.state[_LOG] = ConfigRecord(
            {
                "specs": [*specs, spec],
                "requests": [*requests, request],
                "replies": [*replies, reply],
            }
        )


def _host(context: Context, data: PartyData) -> PartyHost:
    """The node's party host: the one this process kept, if the node's log holds exactly what
    it has seen (Ray may have given the node's later messages to another process meanwhile:
    then a kept host is behind, and a fresh one replays the log)."""
    key = (context.run_id, context.node_id)
    log = StateLog(context)
    kept = _HOSTS.get(key)
    if kept is not None and kept[0].party_id == data.info.party_id and kept[1] == log.size():
        kept[0].log = log  # this message's context holds the node's state
        return kept[0]
    if len(_HOSTS) >= 64:
        _HOSTS.clear()
    pid = data.info.party_id
    host = PartyHost(
        pid,
        lambda spec: Party(spec, pid, data.codes),
        log,
        node_admission(context, int(data.info.users), pid),
    )
    _HOSTS[key] = (host, log.size())
    return host


def _kept(context: Context, host: PartyHost) -> None:
    """Remember ``host`` as up to date with the node's log."""
    _HOSTS[(context.run_id, context.node_id)] = (host, StateLog(context).size())


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` are run-config entries that win over the run's."""
    extra = dict(overrides or {})
    app = ClientApp()

    @app.query("discover")
    def discover(msg: Message, context: Context) -> Message:
        info = _load_party(context, extra).info
        return Message(records.content(**{"party-info": info.SerializeToString()}), reply_to=msg)

    def handle(msg: Message, context: Context) -> Message:
        spec = records.entry(msg.content, "spec")
        request = records.entry(msg.content, "request")
        req = decode_request(request)
        if records.message_type(req) != msg.metadata.message_type:
            raise ProtocolError(f"a request arrived as message type {msg.metadata.message_type!r}")
        try:
            host = _host(context, _load_party(context, extra))
        except FedHHError as exc:
            return Message(records.content(reply=encode(error_reply(req, str(exc)))), reply_to=msg)
        answer = host.answer(spec, request)
        assert answer is not None  # a party over its users' items never waits
        _kept(context, host)
        return Message(records.content(reply=answer), reply_to=msg)

    app.query("estimate")(handle)
    app.query("search")(handle)
    return app


app = make_client_app()
