"""Byte framing shared by report batches and protocol messages (no pickle).

A frame is: 4 magic bytes, a format-version byte, the length of a JSON header (uint32 LE), the
JSON header, then the raw little-endian bytes of the arrays the header refers to. An array
reference is ``[dtype, shape, offset, nbytes]`` relative to the body (after the header).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

_HEAD = struct.Struct("<4sBI")


class ArrayWriter:
    """Collects arrays for a frame's body and hands out their references."""

    def __init__(self, allowed: frozenset[str], error: type[Exception]) -> None:
        self.allowed, self.error = allowed, error
        self.blobs: list[bytes] = []
        self.offset = 0

    def add(self, arr: np.ndarray) -> list[Any]:
        if arr.dtype.name not in self.allowed:
            raise self.error(f"cannot serialise an array of dtype {arr.dtype}")
        raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        ref = [arr.dtype.name, list(arr.shape), self.offset, len(raw)]
        self.blobs.append(raw)
        self.offset += len(raw)
        return ref


def pack(magic: bytes, version: int, header: Any, writer: ArrayWriter) -> bytes:
    """The frame of ``header`` (JSON-serialisable) and the arrays collected by ``writer``."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_HEAD.pack(magic, version, len(head)), head, *writer.blobs])


def unpack(
    data: bytes, magic: bytes, version: int, what: str, error: type[Exception]
) -> tuple[Any, memoryview]:
    """The JSON header and the body of a frame; malformed frames raise ``error``."""
    if len(data) < _HEAD.size:
        raise error(f"{what} is truncated (no header)")
    got_magic, got_version, hlen = _HEAD.unpack_from(data)
    if got_magic != magic:
        raise error(f"not a fedhh {what} (bad magic bytes)")
    if got_version != version:
        raise error(f"unsupported {what} format version {got_version}")
    start = _HEAD.size + hlen
    if start > len(data):
        raise error(f"{what} is truncated (header)")
    try:
        header = json.loads(bytes(data[_HEAD.size : start]).decode())
    except ValueError as exc:
        raise error(f"malformed {what} header: {exc}") from None
    return header, memoryview(data)[start:]


def read_array(
    body: memoryview, ref: Any, allowed: frozenset[str], error: type[Exception]
) -> np.ndarray:
    """The array a reference points to in ``body`` (a copy, native byte order)."""
    try:
        dtype, shape, off, n = ref
        shape = [int(s) for s in shape]
        dt = np.dtype(dtype)
        count = math.prod(shape)
        off, n = int(off), int(n)
    except (TypeError, ValueError) as exc:
        raise error(f"malformed array reference: {exc}") from None
    if (
        dtype not in allowed
        or min(shape, default=0) < 0
        or off < 0
        or off + n > len(body)
        or count * dt.itemsize != n
    ):
        raise error(f"malformed array reference {ref}")
    arr = np.frombuffer(body, dtype=dt.newbyteorder("<"), count=count, offset=off)
    return arr.reshape(shape).astype(dt, copy=True)
