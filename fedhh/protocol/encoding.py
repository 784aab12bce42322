"""The one wire encoding of the protocol: its messages as the protobuf messages of
``protos/fedhh/v1`` (generated into :mod:`fedhh.wire.v1`), for every transport.

gRPC carries the messages as they are, Flower carries their bytes in its records and the
in-process engine passes the same bytes from coordinator to party, so the byte costs of a run
(``bytes_to_parties``, ``bytes_to_coordinator``) count what is sent, the same on every transport.

* Arrays travel as ``NDArray`` (dtype, shape, little-endian bytes).
* :class:`~fedhh.mechanisms.params.MechanismParams` travels as a JSON object of its dataclass
  fields, so a new parameter needs no change here or in the proto.
* Decoding checks everything a peer controls (dtype, shape, byte count, which oneof is set, the
  parameters) and raises :class:`~fedhh.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from fedhh.errors import FedHHError, ProtocolError
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
    SearchTask,
)
from fedhh.protocol.messages import Reply, Request, Result, RunSpec, Task
from fedhh.wire.v1 import protocol_pb2 as pb

DTYPES = ("uint8", "uint32", "uint64", "int64", "float64", "bool")
MAX_ARRAY_ELEMENTS = 1 << 24  # far above any candidate set or reply vector the mechanisms make


# --- arrays -------------------------------------------------------------------------------------
def array_to_pb(arr: np.ndarray) -> pb.NDArray:
    a = np.asarray(arr)
    if a.dtype.name not in DTYPES:
        raise ProtocolError(f"cannot send an array of dtype {a.dtype}")
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return pb.NDArray(dtype=a.dtype.name, shape=list(a.shape), data=raw)


def array_from_pb(msg: pb.NDArray, what: str, dtype: str) -> Any:
    """The 1-d array of ``msg`` of ``dtype`` (an unset message is an empty array)."""
    if not msg.dtype and not msg.shape and not msg.data:
        return np.zeros(0, dtype=dtype)
    if msg.dtype != dtype:
        raise ProtocolError(f"{what}: dtype must be {dtype}, got {msg.dtype!r}")
    shape = [int(s) for s in msg.shape]
    if len(shape) != 1 or shape[0] < 0:
        raise ProtocolError(f"{what}: expected a 1-d array, got shape {shape}")
    count = math.prod(shape)
    if count > MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"{what}: {count} elements exceed the limit {MAX_ARRAY_ELEMENTS}")
    dt = np.dtype(dtype)
    if len(msg.data) != count * dt.itemsize:
        raise ProtocolError(f"{what}: {len(msg.data)} bytes do not hold {count} values of {dtype}")
    return np.frombuffer(msg.data, dtype=dt.newbyteorder("<"), count=count).astype(dt, copy=True)


def _codes(msg: pb.NDArray, what: str) -> Any:
    return array_from_pb(msg, what, "uint64")


def _floats(msg: pb.NDArray, what: str) -> Any:
    return array_from_pb(msg, what, "float64")


# --- run parameters and run spec ---------------------------------------------------------------
def params_to_pb(params: MechanismParams) -> pb.MechanismParams:
    return pb.MechanismParams(json=json.dumps(params.to_dict(), allow_nan=False))


def params_from_pb(msg: pb.MechanismParams) -> MechanismParams:
    """The parameters of ``msg``; bad JSON or bad values raise :class:`ProtocolError`."""
    try:
        data = json.loads(msg.json or "{}")
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return MechanismParams.from_dict({k: v for k, v in data.items() if v is not None})
    except (ValueError, TypeError, FedHHError) as exc:
        raise ProtocolError(f"invalid mechanism parameters: {exc}") from None


def spec_to_pb(spec: RunSpec) -> pb.RunSpec:
    return pb.RunSpec(
        run_id=spec.run_id,
        params=params_to_pb(spec.params),
        party_ids=list(spec.party_ids),
        party_sizes=list(spec.party_sizes),
        codec=spec.codec,
        version=spec.version,
    )


def spec_from_pb(msg: pb.RunSpec) -> RunSpec:
    try:
        return RunSpec(
            run_id=msg.run_id,
            params=params_from_pb(msg.params),
            party_ids=tuple(msg.party_ids),
            party_sizes=tuple(int(s) for s in msg.party_sizes),
            codec=msg.codec,
            version=msg.version,
        )
    except ProtocolError:
        raise
    except FedHHError as exc:
        raise ProtocolError(f"invalid run spec: {exc}") from None


# --- tasks and results -------------------------------------------------------------------------
def _cost_to_pb(c: LevelCost) -> pb.LevelCost:
    return pb.LevelCost(**{f.name: getattr(c, f.name) for f in fields(c)})


def _cost_from_pb(msg: pb.LevelCost) -> LevelCost:
    return LevelCost(**{f.name: getattr(msg, f.name) for f in fields(LevelCost)})


def request_to_pb(req: Request) -> pb.Request:
    msg = pb.Request(
        run_id=req.run_id,
        request_id=req.request_id,
        round=req.round,
        party_id=req.party_id,
        version=req.version,
    )
    task = req.task
    if isinstance(task, EstimateTask):
        msg.estimate.CopyFrom(
            pb.EstimateTask(
                level=task.level,
                length=task.length,
                candidates=array_to_pb(task.candidates),
                group=task.group,
            )
        )
    else:
        msg.search.CopyFrom(
            pb.SearchTask(
                mode=task.mode,
                start_length=task.start_length,
                start_prefixes=array_to_pb(task.start_prefixes),
                prior_items=array_to_pb(task.prior_items),
                prior_estimates=array_to_pb(task.prior_estimates),
            )
        )
    return msg


def request_from_pb(msg: pb.Request) -> Request:
    kind = msg.WhichOneof("task")
    task: Task
    if kind == "estimate":
        t = msg.estimate
        task = EstimateTask(t.level, t.length, _codes(t.candidates, "candidates"), t.group)
    elif kind == "search":
        s = msg.search
        task = SearchTask(
            s.mode,
            s.start_length,
            _codes(s.start_prefixes, "start_prefixes"),
            _codes(s.prior_items, "prior_items"),
            _floats(s.prior_estimates, "prior_estimates"),
        )
    else:
        raise ProtocolError("request carries no task")
    return Request(msg.run_id, msg.request_id, msg.round, msg.party_id, task, msg.version)


def reply_to_pb(reply: Reply) -> pb.Reply:
    msg = pb.Reply(
        run_id=reply.run_id,
        request_id=reply.request_id,
        party_id=reply.party_id,
        version=reply.version,
    )
    res = reply.result
    if isinstance(res, EstimateResult):
        msg.estimate.CopyFrom(
            pb.EstimateResult(
                estimates=array_to_pb(res.estimates),
                stderrs=array_to_pb(res.stderrs),
                cost=_cost_to_pb(res.cost),
            )
        )
    elif isinstance(res, SearchResult):
        msg.search.CopyFrom(
            pb.SearchResult(
                items=array_to_pb(res.items),
                estimates=array_to_pb(res.estimates),
                stderrs=array_to_pb(res.stderrs),
                levels=[_cost_to_pb(c) for c in res.levels],
            )
        )
    else:
        msg.error.CopyFrom(pb.ErrorResult(code=res.code, message=res.message))
    return msg


def reply_from_pb(msg: pb.Reply) -> Reply:
    kind = msg.WhichOneof("result")
    result: Result
    if kind == "estimate":
        e = msg.estimate
        result = EstimateResult(
            _floats(e.estimates, "estimates"), _floats(e.stderrs, "stderrs"), _cost_from_pb(e.cost)
        )
    elif kind == "search":
        s = msg.search
        result = SearchResult(
            _codes(s.items, "items"),
            _floats(s.estimates, "estimates"),
            _floats(s.stderrs, "stderrs"),
            tuple(_cost_from_pb(c) for c in s.levels),
        )
    elif kind == "error":
        result = ErrorResult(msg.error.code, msg.error.message)
    else:
        raise ProtocolError("reply carries no result")
    return Reply(msg.run_id, msg.request_id, msg.party_id, result, msg.version)


# --- bytes -------------------------------------------------------------------------------------
_TO_PB: dict[type, Any] = {RunSpec: spec_to_pb, Request: request_to_pb, Reply: reply_to_pb}
_FROM_PB: dict[type, tuple[type, Any]] = {
    RunSpec: (pb.RunSpec, spec_from_pb),
    Request: (pb.Request, request_from_pb),
    Reply: (pb.Reply, reply_from_pb),
}


def encode(message: RunSpec | Request | Reply) -> bytes:
    """The protobuf bytes of a run spec, request or reply."""
    to_pb = _TO_PB.get(type(message))
    if to_pb is None:
        raise ProtocolError(f"cannot encode a {type(message).__name__}")
    return bytes(to_pb(message).SerializeToString(deterministic=True))


def decode(kind: type[Any], data: bytes) -> Any:
    """The ``kind`` (RunSpec, Request or Reply) in ``data``; anything malformed raises
    :class:`ProtocolError`."""
    pb_type, from_pb = _FROM_PB[kind]
    msg = pb_type()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, TypeError, ValueError) as exc:
        raise ProtocolError(f"undecodable {kind.__name__}: {exc}") from None
    try:
        return from_pb(msg)
    except ProtocolError:
        raise
    except (FedHHError, TypeError, ValueError) as exc:
        raise ProtocolError(f"invalid {kind.__name__}: {exc}") from None


def decode_request(data: bytes) -> Request:
    out: Request = decode(Request, data)
    return out


def decode_reply(data: bytes) -> Reply:
    out: Reply = decode(Reply, data)
    return out


def decode_spec(data: bytes) -> RunSpec:
    out: RunSpec = decode(RunSpec, data)
    return out
