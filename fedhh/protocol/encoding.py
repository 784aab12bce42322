"""The one wire encoding of the protocol: its messages as the protobuf messages of
``protos/fedhh/v1`` (generated into :mod:`fedhh.wire.v1`), for every transport.

gRPC carries the messages as they are, Flower carries their bytes in its records and the
in-process engine passes the same bytes from coordinator to party, so the byte costs of a run
(``bytes_to_parties``, ``bytes_to_coordinator``) count what is sent, the same on every transport.

* Arrays travel as ``NDArray`` (dtype, shape, little-endian bytes); codes (candidates, start
  prefixes, prior and reported items) as ``Prefixes``: their bit length and ⌈bits/8⌉ big-endian
  bytes a code (:func:`fedhh.core.codes.to_bytes`), the length named by the field's metadata
  (:func:`fedhh.mechanisms.tasks.bits_from`), so a 17-bit candidate costs 3 bytes and a 256-bit
  item 32.
* Every message is mapped field by field from its dataclass (a task or result field is the
  proto's oneof of that name); :class:`~fedhh.mechanisms.params.MechanismParams` travels as a
  JSON object of its fields, so a new parameter needs no change here or in the proto, and a new
  task field only its line in ``protocol.proto``.
* Decoding checks everything a peer controls (dtype, shape, byte count, which oneof is set, the
  parameters) and raises :class:`~fedhh.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Sequence
from dataclasses import fields
from functools import cache
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from fedhh.core import codes as cd
from fedhh.errors import FedHHError, ProtocolError, ProtocolLimit
from fedhh.mechanisms import tasks
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import (
    Codes,
    ErrorResult,
    EstimateResult,
    EstimateTask,
    Floats,
    LevelCost,
    SearchResult,
    SearchTask,
)
from fedhh.protocol import messages
from fedhh.protocol.admission import BudgetView
from fedhh.protocol.messages import Reply, Request, Result, RunSpec, Task
from fedhh.wire.v1 import protocol_pb2 as pb

T = TypeVar("T")

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
        raise ProtocolLimit(f"{what}: {count} elements exceed the limit {MAX_ARRAY_ELEMENTS}")
    dt = np.dtype(dtype)
    if len(msg.data) != count * dt.itemsize:
        raise ProtocolError(f"{what}: {len(msg.data)} bytes do not hold {count} values of {dtype}")
    return np.frombuffer(msg.data, dtype=dt.newbyteorder("<"), count=count).astype(dt, copy=True)


def codes_to_pb(codes: np.ndarray, bits: int) -> pb.Prefixes:
    """Codes of ``bits`` bits as a ``Prefixes`` message."""
    try:
        return pb.Prefixes(bits=int(bits), data=cd.to_bytes(np.asarray(codes, np.uint64), bits))
    except FedHHError as exc:
        raise ProtocolError(f"cannot send codes of {bits} bits: {exc}") from None


def codes_from_pb(msg: pb.Prefixes, what: str) -> Any:
    """The codes of ``msg`` (1-D up to 64 bits, ``(n, W)`` words above)."""
    bits = int(msg.bits)
    if bits > cd.MAX_BITS:
        raise ProtocolError(f"{what}: codes of {bits} bits (at most {cd.MAX_BITS})")
    per = max(1, -(-bits // 8))
    if len(msg.data) // per > MAX_ARRAY_ELEMENTS:
        raise ProtocolError(f"{what}: more than {MAX_ARRAY_ELEMENTS} codes")
    try:
        return cd.from_bytes(bytes(msg.data), bits)
    except FedHHError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


# --- run parameters ----------------------------------------------------------------------------
def params_to_pb(params: MechanismParams, omit: Sequence[str] = ()) -> pb.MechanismParams:
    """``params`` on the wire; ``omit``: fields left out, for the receiver to fill in (a run
    spec without ``m`` takes the parties' item width)."""
    data = {k: v for k, v in params.to_dict().items() if k not in omit}
    return pb.MechanismParams(json=json.dumps(data, allow_nan=False))


def params_has(msg: pb.MechanismParams, name: str) -> bool:
    """Whether ``msg`` (already decoded by :func:`params_from_pb`) names the field ``name``."""
    return name in json.loads(msg.json or "{}")


def params_from_pb(msg: pb.MechanismParams) -> MechanismParams:
    """The parameters of ``msg``; bad JSON or bad values raise :class:`ProtocolError`."""
    try:
        data = json.loads(msg.json or "{}")
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return MechanismParams.from_dict({k: v for k, v in data.items() if v is not None})
    except RecursionError:  # JSON nested deeper than the parser's stack
        raise ProtocolError("invalid mechanism parameters: nested too deeply") from None
    except (ValueError, TypeError, FedHHError) as exc:
        raise ProtocolError(f"invalid mechanism parameters: {exc}") from None


# --- messages, field by field from the dataclasses ---------------------------------------------
# Each dataclass travels as the proto message of the same name and fields; a field that holds a
# task or result is the proto's oneof of that name, its member named by _ONEOF.
_PB: dict[type, Any] = {
    c: getattr(pb, c.__name__)
    for c in (RunSpec, Request, Reply, EstimateTask, SearchTask, EstimateResult, SearchResult)
}
_PB.update({ErrorResult: pb.ErrorResult, LevelCost: pb.LevelCost})
_ONEOF: dict[type, str] = {
    EstimateTask: "estimate",
    SearchTask: "search",
    EstimateResult: "estimate",
    SearchResult: "search",
    ErrorResult: "error",
}
_DTYPES = {"uint64": Codes, "float64": Floats}


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(tasks) | vars(messages))


def to_pb(obj: Any) -> Any:
    """The proto message of a protocol dataclass."""
    msg = _PB[type(obj)]()
    for f in fields(obj):
        value, slot = getattr(obj, f.name), f.name
        if type(value) in _ONEOF:  # a oneof member
            slot = _ONEOF[type(value)]
        if "bits" in f.metadata:  # codes, as wide as the field the metadata names
            getattr(msg, slot).CopyFrom(codes_to_pb(value, getattr(obj, f.metadata["bits"])))
        elif isinstance(value, np.ndarray):
            getattr(msg, slot).CopyFrom(array_to_pb(value))
        elif isinstance(value, MechanismParams):
            getattr(msg, slot).CopyFrom(params_to_pb(value))
        elif type(value) in _PB:
            getattr(msg, slot).CopyFrom(to_pb(value))
        elif isinstance(value, tuple):
            getattr(msg, slot).extend(to_pb(v) if type(v) in _PB else v for v in value)
        else:
            setattr(msg, slot, value)
    return msg


@cache
def _widths(cls: Any) -> dict[str, str]:
    """Codes fields of a dataclass and the field that gives their width."""
    return {f.name: f.metadata["bits"] for f in fields(cls) if "bits" in f.metadata}


def _from_pb(cls: type[T], msg: Any) -> T:
    kwargs: dict[str, Any] = {}
    widths = _widths(typing.cast(Any, cls))
    for name, hint in _hints(typing.cast(Any, cls)).items():
        if name in widths:
            sub = getattr(msg, name)
            kwargs[name] = codes_from_pb(sub, name)
            if msg.HasField(name) and int(sub.bits) != int(getattr(msg, widths[name])):
                raise ProtocolError(
                    f"{name}: codes of {sub.bits} bits where {widths[name]} is "
                    f"{getattr(msg, widths[name])}"
                )
        elif hint in (Task, Result):  # the oneof of this name
            kind = msg.WhichOneof(name)
            if kind is None:
                raise ProtocolError(f"{cls.__name__.lower()} carries no {name}")
            member = next(c for c, k in _ONEOF.items() if k == kind and c in typing.get_args(hint))
            kwargs[name] = _from_pb(member, getattr(msg, kind))
        elif hint in (Codes, Floats):
            dtype = next(d for d, h in _DTYPES.items() if h == hint)
            kwargs[name] = array_from_pb(getattr(msg, name), name, dtype)
        elif hint is MechanismParams:
            kwargs[name] = params_from_pb(getattr(msg, name))
        elif hint in _PB:
            kwargs[name] = _from_pb(hint, getattr(msg, name))
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            value = getattr(msg, name)
            kwargs[name] = tuple(_from_pb(item, v) if item in _PB else item(v) for v in value)
        else:
            kwargs[name] = getattr(msg, name)
    return cls(**kwargs)


def from_pb(cls: type[T], msg: Any) -> T:
    """The protocol dataclass ``cls`` of a proto message; whatever a peer got wrong raises
    :class:`ProtocolError`."""
    try:
        return _from_pb(cls, msg)
    except ProtocolError:
        raise
    except (FedHHError, TypeError, ValueError) as exc:
        raise ProtocolError(f"invalid {cls.__name__}: {exc}") from None


# --- bytes -------------------------------------------------------------------------------------
def encode(message: RunSpec | Request | Reply) -> bytes:
    """The protobuf bytes of a run spec, request or reply."""
    if type(message) not in (RunSpec, Request, Reply):
        raise ProtocolError(f"cannot encode a {type(message).__name__}")
    return bytes(to_pb(message).SerializeToString(deterministic=True))


def decode(kind: type[T], data: bytes) -> T:
    """The ``kind`` (RunSpec, Request or Reply) in ``data``; anything malformed raises
    :class:`ProtocolError`."""
    msg = _PB[kind]()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, TypeError, ValueError) as exc:
        raise ProtocolError(f"undecodable {kind.__name__}: {exc}") from None
    return from_pb(kind, msg)


def decode_request(data: bytes) -> Request:
    return decode(Request, data)


def decode_reply(data: bytes) -> Reply:
    return decode(Reply, data)


def decode_spec(data: bytes) -> RunSpec:
    return decode(RunSpec, data)


def budget_view(info: Any) -> BudgetView | None:
    """The privacy ledger a ``PartyInfo`` reports (None: the party keeps none)."""
    if not info.HasField("budget"):
        return None
    b = info.budget
    figures = {
        "budget": b.budget,
        "max_epsilon": b.max_epsilon,
        "committed": b.committed,
        "max_central": b.max_central,
    }
    return BudgetView.of({**figures, "admitted_runs": list(b.admitted_runs)})
