"""Items ↔ m-bit codes (m ≤ 64) held in ``uint64`` arrays, and vectorised prefixes.

* :class:`StringCodec` — UTF-8 bytes, zero-padded or truncated to ``width`` bytes (m = 8·width);
  decoding strips the zero padding. The most significant byte is the first byte of the item, so a
  bit prefix of a code is a byte prefix of the item.
* :class:`IntCodec` — non-negative integers of at most ``bits`` bits (m = bits).

A prefix of length ℓ of an m-bit code x is ``x >> (m − ℓ)`` (most significant bits first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.errors import CodecError, ParameterError

Codes = NDArray[np.uint64]

MAX_BITS = 64


def check_bits(m: int) -> int:
    """Validate a code width m (1 ≤ m ≤ 64) and return it as ``int``."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise ParameterError(f"bit width must be an integer, got {m!r}")
    if not 1 <= int(m) <= MAX_BITS:
        raise ParameterError(f"bit width must be between 1 and {MAX_BITS}, got {m}")
    return int(m)


def as_codes(values: ArrayLike, m: int) -> Codes:
    """Return ``values`` as a 1-D ``uint64`` array of m-bit codes, or raise :class:`CodecError`.

    Accepts any integer array-like; rejects negative values and values ≥ 2^m, naming the first one.
    """
    m = check_bits(m)
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype == np.uint64:
        codes = arr
    elif arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    elif arr.dtype.kind == "u":
        codes = arr.astype(np.uint64)
    elif arr.dtype.kind == "i":
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise CodecError(f"code must be non-negative, got {int(arr[neg[0]])}")
        codes = arr.astype(np.uint64)
    elif arr.dtype == object:
        return IntCodec(m).encode(arr.tolist())
    else:
        raise CodecError(f"codes must be integers, got an array of dtype {arr.dtype}")
    if m < MAX_BITS and codes.size:
        over = np.flatnonzero(codes >> np.uint64(m))
        if over.size:
            raise CodecError(f"code {int(codes[over[0]])} does not fit in {m} bits")
    return codes


def prefix(codes: ArrayLike, m: int, length: int) -> Codes:
    """Vectorised prefix of length ``length`` of m-bit codes: ``codes >> (m − length)``."""
    m = check_bits(m)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise ParameterError(f"prefix length must be an integer, got {length!r}")
    if not 0 <= int(length) <= m:
        raise ParameterError(f"prefix length must be between 0 and m={m}, got {length}")
    arr = np.asarray(codes, dtype=np.uint64)
    if length == 0:
        return np.zeros(arr.shape, dtype=np.uint64)
    return arr >> np.uint64(m - int(length))


class Codec(Protocol):
    """What every codec offers: its bit width and an encode/decode pair."""

    @property
    def m(self) -> int: ...

    def encode(self, items: Iterable[object]) -> Codes: ...

    def decode(self, codes: ArrayLike) -> list: ...


@dataclass(frozen=True)
class StringCodec:
    """UTF-8 strings as ``width``-byte big-endian codes (m = 8·width bits, width ≤ 8).

    Longer items are truncated to ``width`` bytes (possibly inside a multi-byte character, which
    then decodes as U+FFFD); shorter ones are zero-padded. Decoding strips trailing zero bytes.
    """

    width: int

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, (int, np.integer)):
            raise ParameterError(f"item width in bytes must be an integer, got {self.width!r}")
        if not 1 <= int(self.width) <= MAX_BITS // 8:
            raise ParameterError(
                f"item width must be between 1 and {MAX_BITS // 8} bytes, got {self.width}"
            )

    @property
    def m(self) -> int:
        return 8 * int(self.width)

    def encode(self, items: Iterable[object]) -> Codes:
        """Encode strings (or ``bytes``) to codes; a non-string item raises :class:`CodecError`."""
        w = int(self.width)
        chunks: list[bytes] = []
        for item in items:
            if isinstance(item, str):
                raw = item.encode("utf-8")
            elif isinstance(item, (bytes, bytearray)):
                raw = bytes(item)
            else:
                raise CodecError(
                    f"string codec needs str or bytes items, got {type(item).__name__} {item!r}"
                )
            chunks.append(raw[:w].ljust(w, b"\0"))
        return self.encode_fixed(b"".join(chunks))

    def encode_fixed(self, buffer: bytes) -> Codes:
        """Encode a buffer of back-to-back ``width``-byte records (already padded) to codes."""
        w = int(self.width)
        if len(buffer) % w:
            raise CodecError(f"buffer length {len(buffer)} is not a multiple of width {w}")
        mat = np.frombuffer(buffer, dtype=np.uint8).reshape(-1, w).astype(np.uint64)
        codes = np.zeros(mat.shape[0], dtype=np.uint64)
        for j in range(w):  # loop over bytes of the width (≤ 8), vectorised over items
            codes <<= np.uint64(8)
            codes |= mat[:, j]
        return codes

    def to_bytes(self, codes: ArrayLike) -> list[bytes]:
        """Decode codes to their raw bytes with the zero padding stripped."""
        arr = as_codes(codes, self.m)
        raw = arr.astype(">u8").tobytes()
        w = int(self.width)
        return [raw[8 * i + 8 - w : 8 * i + 8].rstrip(b"\0") for i in range(arr.size)]

    def decode(self, codes: ArrayLike) -> list[str]:
        """Decode codes to strings (invalid UTF-8 from truncation becomes U+FFFD)."""
        return [b.decode("utf-8", errors="replace") for b in self.to_bytes(codes)]


@dataclass(frozen=True)
class IntCodec:
    """Non-negative integers of at most ``bits`` bits (m = bits ≤ 64)."""

    bits: int

    def __post_init__(self) -> None:
        check_bits(self.bits)

    @property
    def m(self) -> int:
        return int(self.bits)

    def encode(self, items: Iterable[object]) -> Codes:
        """Encode integers; negative values, values ≥ 2^bits and non-integers raise CodecError."""
        if isinstance(items, np.ndarray) and items.dtype.kind in "iu":
            return as_codes(items, self.m)
        seq: Sequence[object] = items if isinstance(items, Sequence) else list(items)
        limit = 1 << self.m
        out = np.empty(len(seq), dtype=np.uint64)
        for i, item in enumerate(seq):
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise CodecError(
                    f"integer codec needs int items, got {type(item).__name__} {item!r}"
                )
            v = int(item)
            if v < 0:
                raise CodecError(f"integer item must be non-negative, got {v}")
            if v >= limit:
                raise CodecError(f"integer item {v} does not fit in {self.m} bits")
            out[i] = v
        return out

    def decode(self, codes: ArrayLike) -> list[int]:
        return [int(c) for c in as_codes(codes, self.m)]


def codec_for(
    item_bytes: int | None = None, item_bits: int | None = None
) -> StringCodec | IntCodec:
    """The codec for a ``--item-bytes W`` (strings) or ``--item-bits B`` (integers) choice."""
    if (item_bytes is None) == (item_bits is None):
        raise ParameterError("give exactly one of item_bytes (strings) or item_bits (integers)")
    if item_bytes is not None:
        return StringCodec(item_bytes)
    assert item_bits is not None
    return IntCodec(item_bits)
