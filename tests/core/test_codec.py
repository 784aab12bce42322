"""Item codec: round trips, prefixes and clear errors for bad input (hypothesis properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core.items import IntCodec, StringCodec, as_codes, codec_for, prefix, utf8_cut
from fedhh.errors import CodecError, ParameterError


@given(
    width=st.integers(1, 8),
    items=st.lists(st.text(min_size=0, max_size=8), min_size=0, max_size=30),
)
@settings(max_examples=200, deadline=None)
def test_string_round_trip_when_item_fits(width: int, items: list[str]) -> None:
    codec = StringCodec(width)
    fits = [s for s in items if len(s.encode()) <= width and "\0" not in s]  # 0 pads
    codes = codec.encode(fits)
    assert codes.dtype == np.uint64 and codes.shape == (len(fits),)
    assert codec.decode(codes) == fits
    if codes.size:
        assert int(codes.max()) < 2**codec.m


@given(width=st.integers(1, 8), items=st.lists(st.binary(min_size=0, max_size=12), max_size=30))
@settings(max_examples=200, deadline=None)
def test_bytes_truncate_and_pad(width: int, items: list[bytes]) -> None:
    items = [b.replace(b"\0", b"") for b in items]
    codec = StringCodec(width, truncate=True)
    decoded = codec.to_bytes(codec.encode(items))
    assert decoded == [utf8_cut(b, width) for b in items]


@given(bits=st.integers(1, 64), data=st.data())
@settings(max_examples=200, deadline=None)
def test_int_round_trip(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=30))
    codec = IntCodec(bits)
    assert codec.decode(codec.encode(values)) == values


@given(bits=st.integers(1, 64), data=st.data())
@settings(max_examples=200, deadline=None)
def test_prefix_matches_shift(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=20))
    length = data.draw(st.integers(0, bits))
    got = prefix(np.array(values, dtype=np.uint64), bits, length)
    assert [int(v) for v in got] == [v >> (bits - length) for v in values]


def test_string_prefix_is_byte_prefix() -> None:
    codec = StringCodec(6)
    codes = codec.encode(["google", "goofy!", "yahoo "])
    p16 = prefix(codes, 48, 16)
    assert StringCodec(2).decode(p16) == ["go", "go", "ya"]


@given(bits=st.integers(1, 63), excess=st.integers(0, 2**40))
@settings(max_examples=100, deadline=None)
def test_int_too_large_names_value(bits: int, excess: int) -> None:
    bad = 2**bits + excess
    with pytest.raises(CodecError, match=str(bad)):
        IntCodec(bits).encode([1, bad])
    if bad < 2**64:
        with pytest.raises(CodecError, match=str(bad)):
            as_codes(np.array([0, bad], dtype=np.uint64), bits)


@given(value=st.integers(max_value=-1))
def test_negative_int_names_value(value: int) -> None:
    with pytest.raises(CodecError, match=str(value)):
        IntCodec(64).encode([value])


@given(item=st.one_of(st.integers(), st.floats(), st.none(), st.lists(st.integers())))
def test_string_codec_rejects_non_strings(item: object) -> None:
    with pytest.raises(CodecError, match="str or bytes"):
        StringCodec(4).encode(["ok", item])


@pytest.mark.parametrize("bad", [0, 65, -1, 1.5, True, "8"])
def test_bad_bit_widths(bad: object) -> None:
    with pytest.raises(ParameterError):
        IntCodec(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 65, -2])
def test_bad_string_widths(bad: int) -> None:
    with pytest.raises(ParameterError, match="between 1 and 64"):
        StringCodec(bad)


def test_prefix_length_checked() -> None:
    with pytest.raises(ParameterError, match="prefix length"):
        prefix(np.zeros(2, dtype=np.uint64), 16, 17)
    with pytest.raises(ParameterError, match="bit width"):
        prefix(np.zeros(2, dtype=np.uint64), 513, 3)


def test_codec_for() -> None:
    assert codec_for(item_bytes=6).m == 48
    assert codec_for(item_bits=20).m == 20
    with pytest.raises(ParameterError, match="exactly one"):
        codec_for(item_bytes=6, item_bits=20)
    with pytest.raises(ParameterError, match="exactly one"):
        codec_for()
