"""Codes of any width (fedhh.core.codes): every helper against Python's big integers (hypothesis),
and exactly the old 1-D behaviour up to 64 bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core import codes as cd
from fedhh.errors import CodecError, ParameterError


@st.composite
def coded(draw: st.DrawFn, min_bits: int = 1, max_bits: int = cd.MAX_BITS) -> tuple[int, list]:
    bits = draw(st.integers(min_bits, max_bits))
    values = draw(
        st.lists(
            st.one_of(st.integers(0, 2**bits - 1), st.integers(0, min(2**bits, 256) - 1)),
            max_size=25,
        )
    )
    return bits, values


@given(coded())
@settings(max_examples=300, deadline=None)
def test_form_round_trips(case: tuple[int, list]) -> None:
    bits, values = case
    codes = cd.from_ints(values, bits)
    assert codes.dtype == np.uint64
    assert codes.shape == ((len(values),) if bits <= 64 else (len(values), cd.words(bits)))
    assert cd.to_ints(codes) == values
    assert np.array_equal(cd.as_codes(codes, bits), codes)
    raw = cd.to_bytes(codes, bits)
    assert len(raw) == len(values) * max(1, -(-bits // 8))
    assert raw == b"".join(v.to_bytes(max(1, -(-bits // 8)), "big") for v in values)
    assert cd.to_ints(cd.from_bytes(raw, bits)) == values
    keys = cd.keys(codes)
    assert cd.to_ints(cd.from_keys(keys, bits)) == values


@given(coded(), st.data())
@settings(max_examples=300, deadline=None)
def test_prefix_is_a_big_integer_shift(case: tuple[int, list], data: st.DataObject) -> None:
    bits, values = case
    length = data.draw(st.integers(0, bits))
    got = cd.prefix(cd.from_ints(values, bits), bits, length)
    assert got.ndim == (1 if length <= 64 else 2)
    assert cd.to_ints(got) == [v >> (bits - length) for v in values]


@given(coded(max_bits=cd.MAX_BITS - 12), st.integers(0, 12))
@settings(max_examples=200, deadline=None)
def test_children_and_extend(case: tuple[int, list], step: int) -> None:
    bits, values = case
    p = cd.from_ints(values, bits)
    kids = cd.children(p, bits, step)
    assert cd.to_ints(kids) == [(v << step) | z for v in values for z in range(1 << step)]
    done = np.array([v % 3 == 0 for v in values], dtype=bool)
    out, parent = cd.extend(p, bits, step, done)
    want = [
        (i, (v << step) | z)
        for i, v in enumerate(values)
        for z in (range(1) if v % 3 == 0 else range(1 << step))
    ]
    assert cd.to_ints(out) == [w for _, w in want]
    assert parent.tolist() == [i for i, _ in want]


@given(coded(), st.data())
@settings(max_examples=200, deadline=None)
def test_sorting_unique_isin_index(case: tuple[int, list], data: st.DataObject) -> None:
    bits, values = case
    codes = cd.from_ints(values, bits)
    uniq, inv = cd.unique_inverse(codes)
    counts = cd.unique_counts(codes)[1]
    assert cd.to_ints(uniq) == sorted(set(values))
    assert [cd.to_ints(uniq)[i] for i in inv.tolist()] == values
    assert counts.tolist() == [values.count(v) for v in sorted(set(values))]
    assert cd.to_ints(cd.sort(codes)) == sorted(values)
    probe = data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=10)) + values[:3]
    pc = cd.from_ints(probe, bits)
    assert cd.isin(pc, codes).tolist() == [v in values for v in probe]
    idx = cd.index_of(pc, uniq)
    ref = sorted(set(values))
    assert idx.tolist() == [ref.index(v) if v in ref else len(ref) for v in probe]


@given(st.integers(1, 64), st.lists(st.integers(0, 2**64 - 1), max_size=30), st.data())
@settings(max_examples=200, deadline=None)
def test_up_to_64_bits_nothing_changes(bits: int, raw: list[int], data: st.DataObject) -> None:
    values = np.array([v >> (64 - bits) for v in raw], dtype=np.uint64)
    length = data.draw(st.integers(0, bits))
    assert np.array_equal(cd.as_codes(values, bits), values)
    old = values >> np.uint64(bits - length) if length else np.zeros_like(values)
    assert np.array_equal(cd.prefix(values, bits, length), old)
    assert np.array_equal(cd.unique(values), np.unique(values))
    assert cd.keys(values) is values
    assert cd.oracle_keys(values, bits) is values
    if bits <= 60:
        z = np.arange(16, dtype=np.uint64)
        assert np.array_equal(
            cd.children(values, bits, 4), ((values[:, None] << np.uint64(4)) | z).reshape(-1)
        )


def test_fingerprint_is_fixed_distinct_and_length_bound() -> None:
    rng = np.random.default_rng(5)
    codes = np.unique(cd.keys(rng.integers(0, 2**63, size=(20_000, 3), dtype=np.uint64)))
    wide = cd.from_keys(codes, 192)
    fp = cd.fingerprint(wide, 192)
    assert np.unique(fp).size == cd.count(wide)  # no collision among 20,000 codes
    assert np.array_equal(fp, cd.fingerprint(wide.copy(), 192))  # a fixed public function
    assert not np.array_equal(fp, cd.fingerprint(wide, 191))  # the length is part of the key
    assert np.array_equal(cd.oracle_keys(wide, 192), fp)
    one = cd.from_ints([1 << 100], 130)
    assert cd.fingerprint(one, 130)[0] == cd.fingerprint(cd.from_ints([1 << 100], 130), 130)[0]


def test_ended_prefixes_are_those_whose_last_full_byte_is_zero() -> None:
    items = [b"ab\0\0", b"abc\0", b"abcd", b"a\0\0\0"]
    codes = cd.from_bytes(b"".join(items), 32)
    assert cd.ended(codes, 32).tolist() == [True, True, False, True]
    assert cd.ended(cd.prefix(codes, 32, 20), 20).tolist() == [False, False, False, True]
    assert cd.ended(cd.prefix(codes, 32, 7), 7).tolist() == [False] * 4
    wide = cd.from_bytes(b"".join(i.ljust(12, b"\0") for i in items), 96)
    assert cd.ended(cd.prefix(wide, 96, 70), 70).tolist() == [True, True, True, True]
    assert cd.ended(cd.prefix(wide, 96, 24), 24).tolist() == [True, False, False, True]


def test_bad_input_is_refused() -> None:
    with pytest.raises(CodecError, match="does not fit in 70 bits"):
        cd.from_ints([1 << 70], 70)
    with pytest.raises(CodecError, match="does not fit in 70 bits"):
        cd.as_codes(cd.from_ints([1 << 71], 72), 70)
    with pytest.raises(CodecError, match="words a code"):
        cd.as_codes(np.zeros((2, 3), np.uint64), 70)
    with pytest.raises(CodecError, match="whole 70-bit codes"):
        cd.from_bytes(b"\1" * 10, 70)
    with pytest.raises(CodecError, match="does not fit in 70 bits"):
        cd.from_bytes(b"\xff" + b"\0" * 8, 70)
    with pytest.raises(CodecError, match="does not fit in 12 bits"):
        cd.to_bytes(np.array([1 << 12], np.uint64), 12)
    with pytest.raises(ParameterError, match="between 1 and 512"):
        cd.check_bits(513)
    with pytest.raises(ParameterError, match="prefix length"):
        cd.prefix(cd.from_ints([1], 100), 100, 101)
