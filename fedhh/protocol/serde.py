"""Serialisation of protocol messages to bytes (the one place where messages become bytes).

Format: magic ``FHHM``, a format version byte, the length of a JSON header, the JSON header (the
message tree, with arrays replaced by references) and the arrays' raw little-endian bytes. Only
the registered message types and the dtypes uint8/uint32/uint64/int64/float64 are accepted;
anything else raises :class:`ProtocolError`. No pickle.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
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

_MAGIC = b"FHHM"
_FORMAT = 1
_HEAD = struct.Struct("<4sBI")
_DTYPES = {"uint8", "uint32", "uint64", "int64", "float64", "bool"}
_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (
        RunSpec,
        MechanismParams,
        Request,
        Reply,
        EstimateTask,
        SearchTask,
        EstimateResult,
        SearchResult,
        ErrorResult,
        LevelCost,
    )
}


def encode(message: object) -> bytes:
    """Serialise a registered message (and everything inside it) to bytes."""
    blobs: list[bytes] = []
    offset = 0

    def walk(obj: Any) -> Any:
        nonlocal offset
        if isinstance(obj, np.ndarray):
            if obj.dtype.name not in _DTYPES:
                raise ProtocolError(f"cannot serialise an array of dtype {obj.dtype}")
            raw = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<")).tobytes()
            ref = {"__nd__": [obj.dtype.name, list(obj.shape), offset, len(raw)]}
            blobs.append(raw)
            offset += len(raw)
            return ref
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            name = type(obj).__name__
            if name not in _TYPES:
                raise ProtocolError(f"cannot serialise message type {name}")
            out = {f.name: walk(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            out["__type__"] = name
            return out
        if isinstance(obj, tuple):
            return {"__tuple__": [walk(v) for v in obj]}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, dict):
            return {str(k): walk(v) for k, v in obj.items()}
        if isinstance(obj, (np.integer, np.floating)):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            if isinstance(obj, float) and not math.isfinite(obj):
                return {"__float__": repr(obj)}
            return obj
        raise ProtocolError(f"cannot serialise a value of type {type(obj).__name__}")

    header = json.dumps(walk(message), separators=(",", ":")).encode()
    buf = io.BytesIO()
    buf.write(_HEAD.pack(_MAGIC, _FORMAT, len(header)))
    buf.write(header)
    for b in blobs:
        buf.write(b)
    return buf.getvalue()


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; malformed input raises :class:`ProtocolError`."""
    if len(data) < _HEAD.size:
        raise ProtocolError("message is truncated (no header)")
    magic, fmt, hlen = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise ProtocolError("not a fedhh protocol message (bad magic bytes)")
    if fmt != _FORMAT:
        raise ProtocolError(f"unsupported message format {fmt}")
    start = _HEAD.size + hlen
    if start > len(data):
        raise ProtocolError("message is truncated (header)")
    try:
        tree = json.loads(data[_HEAD.size : start].decode())
    except ValueError as exc:
        raise ProtocolError(f"malformed message header: {exc}") from None
    body = memoryview(data)[start:]

    def build(obj: Any) -> Any:
        if isinstance(obj, list):
            return [build(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__nd__" in obj:
            try:
                dtype, shape, off, n = obj["__nd__"]
                dt = np.dtype(dtype)
                count = math.prod(int(s) for s in shape)
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"malformed array reference: {exc}") from None
            if dtype not in _DTYPES or off < 0 or off + n > len(body) or count * dt.itemsize != n:
                raise ProtocolError(f"malformed array reference {obj['__nd__']}")
            arr = np.frombuffer(body, dtype=dt.newbyteorder("<"), count=count, offset=off)
            return arr.reshape([int(s) for s in shape]).astype(dt, copy=True)
        if "__tuple__" in obj:
            return tuple(build(v) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__type__" in obj:
            name = obj["__type__"]
            cls = _TYPES.get(name)
            if cls is None:
                raise ProtocolError(f"unknown message type {name!r}")
            kwargs = {k: build(v) for k, v in obj.items() if k != "__type__"}
            try:
                return cls(**kwargs)
            except FedHHError as exc:
                raise ProtocolError(f"invalid {name}: {exc}") from None
            except TypeError as exc:
                raise ProtocolError(f"malformed {name}: {exc}") from None
        return {k: build(v) for k, v in obj.items()}

    return build(tree)
