"""Items ↔ m-bit codes (held as :mod:`fedhh.core.codes` arrays: 1-D up to 64 bits, ``(n, W)`` words
above), and the rules for items that do not fit.

* :class:`StringCodec` — items are byte strings (text as UTF-8) of at most ``width`` bytes
  (1..64, m = 8·width), zero-padded on the right; the first byte of the item is the most
  significant, so a bit prefix of a code is a byte prefix of the item. Zero bytes are the
  padding, so an item may not hold one (the code would be ambiguous), and padding never
  appears in output. An item longer than the width is refused with one :class:`CodecError`
  naming how many are too long and an example, unless the codec truncates
  (``truncate=True``: cut at a UTF-8 character boundary, as text should be).
* :class:`IntCodec` — non-negative integers of at most ``bits`` bits (m = bits ≤ 64).

Display: an item that is not valid UTF-8 is shown with its bad bytes escaped (``\\xff``);
:meth:`StringCodec.item_bytes` gives the exact bytes (the result document carries them as hex).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core import codes as cd
from fedhh.core.codes import MAX_BITS, Codes, as_codes, check_bits, prefix
from fedhh.errors import CodecError, ParameterError

__all__ = [
    "MAX_INT_BITS",
    "MAX_WIDTH",
    "Codec",
    "Codes",
    "IntCodec",
    "StringCodec",
    "as_codes",
    "check_bits",
    "codec_for",
    "display",
    "prefix",
]

MAX_INT_BITS = 64  # integer items stay one word
MAX_WIDTH = MAX_BITS // 8  # bytes of the widest string item (fedhh.core.codes: a party's memory)
_MAX_CONTINUATION = 3  # a UTF-8 character has at most 3 continuation bytes


def display(raw: bytes) -> str:
    """An item's bytes as text: UTF-8, with any byte that is not valid UTF-8 escaped."""
    return raw.decode("utf-8", errors="backslashreplace")


def _example(raw: bytes) -> str:
    shown = display(raw)
    return repr(shown if len(shown) <= 40 else shown[:37] + "...")


def utf8_cut(raw: bytes, width: int) -> bytes:
    """``raw`` cut to at most ``width`` bytes, never inside a UTF-8 character (a byte string
    that is not UTF-8 is cut at ``width`` if no character start is near)."""
    if len(raw) <= width:
        return raw
    cut = width
    while cut > width - _MAX_CONTINUATION and cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    if (raw[cut] & 0xC0) == 0x80:
        cut = width
    return raw[:cut]


class Codec(Protocol):
    """What every codec offers: its bit width and an encode/decode pair."""

    @property
    def m(self) -> int: ...

    def encode(self, items: Iterable[object]) -> Codes: ...

    def decode(self, codes: ArrayLike) -> list: ...


@dataclass(frozen=True)
class Encoded:
    """Codes of items with what truncation did: ``cut[i]`` is True where item i was longer than
    the width and was cut (only with a truncating codec)."""

    codes: Codes
    cut: NDArray[np.bool_]


@dataclass(frozen=True)
class StringCodec:
    """Byte strings (text as UTF-8) of at most ``width`` bytes as m = 8·width-bit codes (see the
    module docstring for the rules). ``truncate`` cuts longer items instead of refusing them;
    it is how data is loaded, not part of the code (``str:W`` on the wire either way)."""

    width: int
    truncate: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, (int, np.integer)):
            raise ParameterError(f"item width in bytes must be an integer, got {self.width!r}")
        if not 1 <= int(self.width) <= MAX_WIDTH:
            raise ParameterError(
                f"item width must be between 1 and {MAX_WIDTH} bytes, got {self.width}"
            )

    @property
    def m(self) -> int:
        return 8 * int(self.width)

    def encode(self, items: Iterable[object]) -> Codes:
        """Encode strings (or ``bytes``); a non-string item, a zero byte or (without
        ``truncate``) an item longer than the width raises :class:`CodecError`."""
        return self.encode_counted(items).codes

    def encode_counted(self, items: Iterable[object]) -> Encoded:
        """:meth:`encode`, also telling which items were cut (``truncate=True``)."""
        raws: list[bytes] = []
        for item in items:
            if isinstance(item, str):
                raws.append(item.encode("utf-8"))
            elif isinstance(item, (bytes, bytearray)):
                raws.append(bytes(item))
            else:
                raise CodecError(
                    f"string codec needs str or bytes items, got {type(item).__name__} {item!r}"
                )
        return self.encode_raw(raws)

    def encode_raw(self, raws: Sequence[bytes]) -> Encoded:
        """Encode byte strings (one loop over the items to check and pad them)."""
        w = int(self.width)
        zero = [r for r in raws if b"\0" in r]
        if zero:
            raise CodecError(
                f"{len(zero):,} item(s) hold a zero byte, e.g. {_example(zero[0])}: zero bytes "
                "pad the items, so an item cannot hold one"
            )
        cut = np.fromiter((len(r) > w for r in raws), dtype=bool, count=len(raws))
        if cut.any() and not self.truncate:
            first = raws[int(np.argmax(cut))]
            raise CodecError(
                f"{int(cut.sum()):,} item(s) longer than {w} bytes, e.g. {_example(first)} "
                f"({len(first)} bytes): use a wider item width (--item-bytes, at most "
                f"{MAX_WIDTH}) or cut them (--truncate)"
            )
        if cut.any():
            raws = [utf8_cut(r, w) for r in raws]
        buffer = b"".join(r.ljust(w, b"\0") for r in raws)
        return Encoded(self.encode_fixed(buffer), cut)

    def encode_fixed(self, buffer: bytes) -> Codes:
        """Encode a buffer of back-to-back ``width``-byte records (already padded) to codes."""
        w = int(self.width)
        if len(buffer) % w:
            raise CodecError(f"buffer length {len(buffer)} is not a multiple of width {w}")
        return cd.from_bytes(buffer, self.m)

    def item_bytes(self, codes: ArrayLike) -> list[bytes]:
        """The items' exact bytes (the zero padding stripped)."""
        arr = as_codes(codes, self.m)
        raw = cd.to_bytes(arr, self.m)
        w = int(self.width)
        return [raw[i : i + w].rstrip(b"\0") for i in range(0, len(raw), w)]

    to_bytes = item_bytes

    def decode(self, codes: ArrayLike) -> list[str]:
        """Codes to text (bytes that are not valid UTF-8 escaped, see :func:`display`)."""
        return [display(b) for b in self.item_bytes(codes)]


@dataclass(frozen=True)
class IntCodec:
    """Non-negative integers of at most ``bits`` bits (m = bits ≤ 64)."""

    bits: int

    def __post_init__(self) -> None:
        check_bits(self.bits, MAX_INT_BITS)

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
    item_bytes: int | None = None, item_bits: int | None = None, *, truncate: bool = False
) -> StringCodec | IntCodec:
    """The codec for a ``--item-bytes W`` (strings; ``--truncate`` cuts longer ones) or
    ``--item-bits B`` (integers) choice."""
    if (item_bytes is None) == (item_bits is None):
        raise ParameterError("give exactly one of item_bytes (strings) or item_bits (integers)")
    if item_bytes is not None:
        return StringCodec(item_bytes, truncate)
    if truncate:
        raise ParameterError("truncate applies to string items (item_bytes) only")
    assert item_bits is not None
    return IntCodec(item_bits)
