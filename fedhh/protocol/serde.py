"""Serialisation of protocol messages to bytes (the one place where messages become bytes).

Format (:mod:`fedhh.framing`): magic ``FHHM``, the JSON header (the message tree, with arrays
replaced by references) and the arrays' raw little-endian bytes. Only
the registered message types and the dtypes uint8/uint32/uint64/int64/float64 are accepted;
anything else raises :class:`ProtocolError`. No pickle.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from fedhh.errors import FedHHError, ProtocolError
from fedhh.framing import ArrayWriter, pack, read_array, unpack
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
_DTYPES = frozenset({"uint8", "uint32", "uint64", "int64", "float64", "bool"})
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
    writer = ArrayWriter(_DTYPES, ProtocolError)

    def walk(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return {"__nd__": writer.add(obj)}
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
            return walk(obj.item())
        if obj is None or isinstance(obj, (bool, int, float, str)):
            if isinstance(obj, float) and not math.isfinite(obj):
                return {"__float__": repr(obj)}
            return obj
        raise ProtocolError(f"cannot serialise a value of type {type(obj).__name__}")

    return pack(_MAGIC, _FORMAT, walk(message), writer)


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; malformed input raises :class:`ProtocolError`."""
    tree, body = unpack(data, _MAGIC, _FORMAT, "protocol message", ProtocolError)

    def build(obj: Any) -> Any:
        if isinstance(obj, list):
            return [build(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__nd__" in obj:
            return read_array(body, obj["__nd__"], _DTYPES, ProtocolError)
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
