"""Converters between the protocol dataclasses and the ``fedhh.v1`` proto messages: the one place
where protocol messages become wire messages and back.

Arrays travel as ``NDArray`` (dtype, shape, little-endian bytes). Decoding checks everything a
peer controls (dtype, shape, byte count, which oneof is set) and raises
:class:`~fedhh.errors.ProtocolError`; the dataclasses' own validation (e.g. of the run parameters)
raises :class:`~fedhh.errors.ParameterError`. Both map to ``INVALID_ARGUMENT`` at the services.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

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
from fedhh.protocol.messages import Reply, Request, RunSpec
from fedhh.wire.v1 import protocol_pb2 as pb

DTYPES = ("uint8", "uint32", "uint64", "int64", "float64", "bool")
MAX_ARRAY_ELEMENTS = 1 << 24  # far above any candidate set or reply vector the mechanisms make
_OPTIONAL_PARAMS = ("gamma", "phase1_levels", "kappa1", "kappa", "report_k", "budget", "prune_z")


# --- arrays -------------------------------------------------------------------------------------
def array_to_pb(arr: np.ndarray) -> pb.NDArray:
    a = np.asarray(arr)
    if a.dtype.name not in DTYPES:
        raise ProtocolError(f"cannot send an array of dtype {a.dtype}")
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return pb.NDArray(dtype=a.dtype.name, shape=list(a.shape), data=raw)


def array_from_pb(msg: pb.NDArray, what: str, dtype: str | None = None, ndim: int = 1) -> Any:
    """The array of ``msg``; ``dtype`` (if given) and ``ndim`` are required of it."""
    if msg.dtype not in DTYPES:
        raise ProtocolError(f"{what}: unsupported dtype {msg.dtype!r}")
    if dtype is not None and msg.dtype != dtype:
        raise ProtocolError(f"{what}: dtype must be {dtype}, got {msg.dtype}")
    shape = [int(s) for s in msg.shape]
    if len(shape) != ndim or any(s < 0 for s in shape):
        raise ProtocolError(f"{what}: expected a {ndim}-d array, got shape {shape}")
    count = math.prod(shape)
    if count > MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"{what}: {count} elements exceed the limit {MAX_ARRAY_ELEMENTS}")
    dt = np.dtype(msg.dtype)
    if len(msg.data) != count * dt.itemsize:
        raise ProtocolError(
            f"{what}: {len(msg.data)} bytes do not hold {count} values of {msg.dtype}"
        )
    out = np.frombuffer(msg.data, dtype=dt.newbyteorder("<"), count=count)
    return out.reshape(shape).astype(dt, copy=True)


def _unset(msg: pb.NDArray) -> bool:
    return not msg.dtype and not msg.shape and not msg.data


def _codes(msg: pb.NDArray, what: str) -> Any:
    if _unset(msg):
        return np.zeros(0, dtype=np.uint64)
    return array_from_pb(msg, what, "uint64")


def _floats(msg: pb.NDArray, what: str) -> Any:
    if _unset(msg):
        return np.zeros(0, dtype=np.float64)
    return array_from_pb(msg, what, "float64")


# --- run parameters and run spec ---------------------------------------------------------------
def params_to_pb(params: MechanismParams) -> pb.MechanismParams:
    msg = pb.MechanismParams()
    for f in fields(params):
        value = getattr(params, f.name)
        if value is None:
            continue
        setattr(msg, f.name, value)
    return msg


def params_from_pb(msg: pb.MechanismParams) -> MechanismParams:
    data: dict[str, Any] = {}
    for f in fields(MechanismParams):
        if f.name in _OPTIONAL_PARAMS:
            data[f.name] = getattr(msg, f.name) if msg.HasField(f.name) else None
        else:
            data[f.name] = getattr(msg, f.name)
    for name in ("k", "m", "eta", "pool_size", "seed", *_OPTIONAL_PARAMS[:-1]):
        if data[name] is not None:
            data[name] = int(data[name])
    return MechanismParams(**data)


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
    task: EstimateTask | SearchTask
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
    result: EstimateResult | SearchResult | ErrorResult
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
