"""The Flower ClientApp: one SuperNode answers for one party with the protocol's :class:`Party`.

Query actions (message types, layouts in :mod:`fedhh.flower_records`):

* ``query.discover`` — loads the node's party data (:mod:`fedhh.clients.flower_data`) and tells
  the ServerApp the party id, user count, codec and data source;
* ``query.estimate`` / ``query.search`` — one protocol request, answered by the party.

A Flower SuperNode runs each message in a fresh ClientApp process, so the party's state lives in
the node's run context (``context.state``, which never leaves the node): the party's codes and
the log of the requests it has answered. A party is rebuilt by replaying that log (the party is
deterministic given its requests, so the replay reproduces its user ledger and random state and
no user reports twice). Processes that outlive a message (Flower simulation's Ray actors) keep the
party in memory and skip the replay. A protocol failure becomes an error reply (``ErrorResult``),
never a crash; a message that cannot be decoded raises, and Flower returns it as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fedhh.clients.flower_data import PartyData, party_data
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedhh.errors import FedHHError, ProtocolError
from fedhh.flower_records import (
    PartyInfo,
    party_info_to_content,
    reply_to_content,
    request_from_content,
)
from fedhh.mechanisms.tasks import ErrorResult
from fedhh.protocol import Party, Reply, Request, RunSpec, codec_from_name
from fedhh.protocol.serde import decode, encode

_DATA = "fedhh.data"  # ArrayRecord "codes" of the node's party
_INFO = "fedhh.party"  # ConfigRecord: party-id, codec, order, data
_LOG = "fedhh.log"  # ConfigRecord: spec (bytes) and answered requests (list of bytes)

_MAX_CACHED = 64
_PARTIES: dict[tuple[int, int, str], tuple[bytes, Party, int]] = {}


def _load_party(context: Context, overrides: Mapping[str, Any]) -> PartyData:
    """The node's party data: from the run state if loaded before, else from the configs."""
    state = context.state
    if _DATA in state.array_records and _INFO in state.config_records:
        info = state.config_records[_INFO]
        codes = state.array_records[_DATA]["codes"].numpy()
        codec = codec_from_name(str(info["codec"]))
        return PartyData(
            str(info["party-id"]), codes, codec, int(str(info["order"])), str(info["data"])
        )
    run_config = {**context.run_config, **overrides}
    data = party_data(context.node_config, run_config)
    state[_DATA] = ArrayRecord({"codes": Array(np.ascontiguousarray(data.codes))})
    state[_INFO] = ConfigRecord(
        {
            "party-id": data.party_id,
            "codec": data.codec_name,
            "order": data.order,
            "data": data.source,
        }
    )
    return data


class _Log:
    """The requests this node's party has answered in this run (kept in ``context.state``)."""

    def __init__(self, context: Context, spec_bytes: bytes) -> None:
        self.requests: list[bytes] = []
        self.ids: list[int] = []
        if _LOG in context.state.config_records:
            rec = context.state.config_records[_LOG]
            if rec["spec"] != spec_bytes:
                raise ProtocolError("the run spec changed after this party started")
            self.requests = [bytes(b) for b in _as_list(rec["requests"])]
            self.ids = [int(str(i)) for i in _as_list(rec["ids"])]

    def append(self, context: Context, spec_bytes: bytes, request: Request) -> None:
        self.requests.append(encode(request))
        self.ids.append(request.request_id)
        context.state[_LOG] = ConfigRecord(
            {"spec": spec_bytes, "requests": self.requests, "ids": self.ids}
        )


def _as_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError("corrupt request log in the node state")
    return value


def _party_for(
    context: Context, spec_bytes: bytes, spec: RunSpec, data: PartyData, log: _Log
) -> Party:
    """The party of this run on this node, rebuilt from the request log when needed."""
    key = (context.run_id, context.node_id, spec.run_id)
    cached = _PARTIES.get(key)
    if cached is not None and cached[0] == spec_bytes and cached[2] == len(log.ids):
        return cached[1]
    party = Party(spec, data.party_id, data.codes)
    for raw in log.requests:
        party.handle(decode(raw))
    if len(_PARTIES) >= _MAX_CACHED:
        _PARTIES.clear()
    _PARTIES[key] = (spec_bytes, party, len(log.ids))
    return party


def answer(
    context: Context, spec: RunSpec, request: Request, overrides: Mapping[str, Any]
) -> Reply:
    """Answer one protocol request on this node (errors become error replies)."""
    spec_bytes = encode(spec)
    try:
        data = _load_party(context, overrides)
        log = _Log(context, spec_bytes)
        party = _party_for(context, spec_bytes, spec, data, log)
    except FedHHError as exc:
        failed = ErrorResult("failed", str(exc))
        return Reply(request.run_id, request.request_id, request.party_id, failed)
    reply = party.handle(request)
    if request.request_id not in log.ids:
        log.append(context, spec_bytes, request)
        _PARTIES[(context.run_id, context.node_id, spec.run_id)] = (spec_bytes, party, len(log.ids))
    return reply


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` are run-config entries (``run_simulation`` passes none)."""
    extra = dict(overrides or {})
    app = ClientApp()

    @app.query("discover")
    def discover(msg: Message, context: Context) -> Message:
        data = _load_party(context, extra)
        info = PartyInfo(
            data.party_id, int(data.codes.size), data.codec_name, data.order, data.source
        )
        return Message(party_info_to_content(info), reply_to=msg)

    def handle(msg: Message, context: Context) -> Message:
        spec, request = request_from_content(msg.content, msg.metadata.message_type)
        reply = answer(context, spec, request, extra)
        return Message(reply_to_content(reply), reply_to=msg)

    app.query("estimate")(handle)
    app.query("search")(handle)
    return app


app = make_client_app()

__all__ = ["answer", "app", "make_client_app"]
