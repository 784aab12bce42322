"""Codes of any width: items and their prefixes as bit strings held in ``uint64`` words.

A code of ℓ bits (0 ≤ ℓ ≤ :data:`MAX_BITS`) is an unsigned integer below 2^ℓ, most significant
bit first (a prefix of length j of an m-bit code x is ``x >> (m − j)``, docs/mechanisms.md §1).
An array of n codes of ℓ bits is held as

* ℓ ≤ 64: a 1-D ``uint64`` array of n codes (as fedhh always did);
* ℓ > 64: a 2-D ``(n, W)`` ``uint64`` array, W = ⌈ℓ/64⌉ words a code, word 0 the most
  significant, the value right-aligned like a big integer (Σ_j word_j · 2^(64·(W−1−j))).

The form follows from ℓ alone, so ``prefix(codes, m, 17)`` of 256-bit codes is 1-D. For ℓ ≤ 64
every helper gives exactly what the 1-D arrays gave before (``np.unique``, ``np.isin``, shifts).

Sorting, ``unique``, ``isin`` and ``searchsorted`` of wide codes run on :func:`keys`: one ``void``
scalar a code holding its big-endian bytes, which numpy compares byte by byte, i.e. in numeric
order. The oracles take 64-bit keys: :func:`oracle_keys` is the code itself up to 64 bits and
:func:`fingerprint` (a fixed public SplitMix64 chain over the words and the length) above.

The limit of :data:`MAX_BITS` = 512 bits (64 bytes) comes from the party's memory: a party holds
every user's item as a fixed-width code, 8 bytes per 64 bits per user (a 9-million-user party
holds 576 MB of items at 512 bits), and every level copies the prefixes of its group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.errors import CodecError, ParameterError

__all__ = [
    "MAX_BITS",
    "Codes",
    "as_codes",
    "check_bits",
    "check_int",
    "children",
    "count",
    "empty",
    "ended",
    "extend",
    "fingerprint",
    "from_bytes",
    "from_ints",
    "from_keys",
    "index_of",
    "isin",
    "keys",
    "oracle_keys",
    "prefix",
    "shift_left",
    "sort",
    "strictly_increasing",
    "to_bytes",
    "to_ints",
    "unique",
    "unique_counts",
    "unique_inverse",
    "words",
]

Codes = NDArray[np.uint64]

MAX_BITS = 512  # widest code (64 bytes); see the module docstring for where the limit comes from
WORD = 64
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_FP_SALT = _U64(0xF1A9E2C5B3D4A697)  # separates fingerprints from the OLH hash's seed mixing


def check_int(value: object, what: str) -> int:
    """``value`` as ``int`` if it is an integer (Python or numpy) and not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{what} must be an integer, got {value!r}")
    return int(value)


def check_bits(m: int, maximum: int = MAX_BITS) -> int:
    """Validate a code width m (1 ≤ m ≤ ``maximum``) and return it as ``int``."""
    m = check_int(m, "bit width")
    if not 1 <= m <= maximum:
        raise ParameterError(f"bit width must be between 1 and {maximum}, got {m}")
    return int(m)


def words(bits: int) -> int:
    """Words a code of ``bits`` bits takes: 1 up to 64 bits (a 1-D array), else ⌈bits/64⌉."""
    return 1 if bits <= WORD else -(-bits // WORD)


def count(codes: Codes) -> int:
    """Number of codes in an array of either form."""
    return int(codes.shape[0])


def empty(bits: int) -> Codes:
    """No codes of ``bits`` bits."""
    return np.zeros(0 if bits <= WORD else (0, words(bits)), dtype=np.uint64)


def _matrix(codes: Codes) -> Codes:
    """Codes as a 2-D ``(n, W)`` array (a 1-D array becomes one column; no copy)."""
    return codes.reshape(-1, 1) if codes.ndim == 1 else codes


def _shaped(mat: Codes, bits: int) -> Codes:
    """The ``(n, W')`` matrix ``mat`` (W' ≥ words(bits), value right-aligned) as codes of
    ``bits`` bits: its last words(bits) words, 1-D up to 64 bits."""
    if bits <= WORD:
        return np.ascontiguousarray(mat[:, -1])
    return np.ascontiguousarray(mat[:, mat.shape[1] - words(bits) :])


def _widen(codes: Codes, w: int) -> Codes:
    """Codes as ``(n, w)`` matrices with leading zero words (w ≥ their own width)."""
    mat = _matrix(codes)
    if mat.shape[1] == w:
        return mat
    out = np.zeros((mat.shape[0], w), dtype=np.uint64)
    out[:, w - mat.shape[1] :] = mat
    return out


def as_codes(values: ArrayLike, m: int) -> Codes:
    """``values`` as codes of m bits, or :class:`CodecError` naming the first value that is not.

    Up to 64 bits: any integer array-like becomes a 1-D ``uint64`` array (negative values and
    values ≥ 2^m refused). Above: a ``(n, W)`` ``uint64`` array is checked as it is; an integer
    array-like of n values (Python ints of any size, or 1-D integers) is converted.
    """
    m = check_bits(m)
    arr = np.asarray(values)
    if m > WORD and arr.ndim == 2 and arr.dtype == np.uint64:
        if arr.shape[1] != words(m):
            raise CodecError(f"{m}-bit codes need {words(m)} words a code, got {arr.shape[1]}")
        top = m - WORD * (words(m) - 1)
        if top < WORD and arr.shape[0] and (arr[:, 0] >> _U64(top)).any():
            raise CodecError(f"a code does not fit in {m} bits")
        return arr
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        return empty(m)
    if arr.dtype == object:
        return from_ints(arr.tolist(), m)
    if arr.dtype.kind == "i":
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise CodecError(f"code must be non-negative, got {int(arr[neg[0]])}")
        arr = arr.astype(np.uint64)
    elif arr.dtype.kind != "u":
        raise CodecError(f"codes must be integers, got an array of dtype {arr.dtype}")
    codes = arr.astype(np.uint64, copy=False)
    if m < WORD:
        over = np.flatnonzero(codes >> _U64(m))
        if over.size:
            raise CodecError(f"code {int(codes[over[0]])} does not fit in {m} bits")
    return codes if m <= WORD else _widen(codes, words(m)).copy()


def from_ints(values: Sequence[object], bits: int) -> Codes:
    """Codes of ``bits`` bits from Python integers (one loop over the values)."""
    bits = check_bits(bits)
    nbytes = 8 * words(bits)
    out = bytearray()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise CodecError(f"codes must be integers, got {type(v).__name__} {v!r}")
        iv = int(v)
        if iv < 0:
            raise CodecError(f"code must be non-negative, got {iv}")
        if iv >> bits:
            raise CodecError(f"code {iv} does not fit in {bits} bits")
        out += iv.to_bytes(nbytes, "big")
    mat = np.frombuffer(bytes(out), dtype=">u8").reshape(-1, words(bits)).astype(np.uint64)
    return _shaped(mat, bits)


def to_ints(codes: Codes) -> list[int]:
    """Codes as Python integers."""
    if codes.ndim == 1:
        return [int(c) for c in codes.tolist()]
    raw = np.ascontiguousarray(codes.astype(">u8")).tobytes()
    step = 8 * codes.shape[1]
    return [int.from_bytes(raw[i : i + step], "big") for i in range(0, len(raw), step)]


def _shift(mat: Codes, bits: int, left: bool) -> Codes:
    """Each row of ``mat`` (a big integer, most significant word first) shifted left or right by
    ``bits`` (same width; bits shifted out are lost): whole words move by q = bits // 64, toward
    the front for a left shift, and the b = bits % 64 bits that cross a word boundary come from
    the neighbouring word (the next one for a left shift, the previous one for a right one)."""
    q, b = divmod(bits, WORD)
    w = mat.shape[1]
    out = np.zeros_like(mat)
    if q >= w:
        return out
    src, dst = (mat[:, q:], out[:, : w - q]) if left else (mat[:, : w - q], out[:, q:])
    if b == 0:
        dst[:] = src
    elif left:
        dst[:] = src << _U64(b)
        dst[:, :-1] |= src[:, 1:] >> _U64(WORD - b)
    else:
        dst[:] = src >> _U64(b)
        dst[:, 1:] |= src[:, :-1] << _U64(WORD - b)
    return out


def prefix(codes: ArrayLike, m: int, length: int) -> Codes:
    """Prefixes of ``length`` bits of m-bit codes: ``codes >> (m − length)`` (a big-integer
    shift); the result has the form of ``length``-bit codes."""
    m = check_bits(m)
    length = check_int(length, "prefix length")
    if not 0 <= length <= m:
        raise ParameterError(f"prefix length must be between 0 and m={m}, got {length}")
    arr = np.asarray(codes, dtype=np.uint64)
    if m <= WORD:
        if length == 0:
            return np.zeros(arr.shape, dtype=np.uint64)
        return arr >> _U64(m - length)
    if length == 0:
        return np.zeros(arr.shape[0], dtype=np.uint64)
    if length == m:
        return arr
    return _shaped(_shift(_matrix(arr), m - length, left=False), length)


def shift_left(prefixes: Codes, length: int, step: int) -> Codes:
    """``length``-bit codes followed by ``step`` zero bits: p·2^step, codes of length + step
    bits."""
    new = length + check_int(step, "step")
    if new <= WORD:
        return prefixes.astype(np.uint64) << _U64(step)
    return _shift(_widen(prefixes, words(new)), step, left=True)


def children(prefixes: Codes, length: int, step: int) -> Codes:
    """All extensions p·2^s + z (z < 2^s) of ``length``-bit prefixes, in prefix order, then z
    order: codes of ``length + step`` bits."""
    s = check_int(step, "step")
    if not 0 <= s < WORD:
        raise ParameterError(f"step must be in 0..63, got {s}")
    z = np.arange(1 << s, dtype=np.uint64)
    if length + s <= WORD:
        return ((prefixes.astype(np.uint64)[:, None] << _U64(s)) | z[None, :]).reshape(-1)
    out = np.repeat(shift_left(prefixes, length, s), 1 << s, axis=0)
    out[:, -1] |= np.tile(z, count(prefixes))
    return out


def extend(
    prefixes: Codes, length: int, step: int, done: NDArray[np.bool_] | None = None
) -> tuple[Codes, NDArray[np.int64]]:
    """The children of ``length``-bit prefixes at ``length + step`` bits and the index of each
    child's prefix. Without ``done`` these are :func:`children`; a prefix marked ``done`` (one
    that has :func:`ended`) has one child, its zero extension."""
    n = count(prefixes)
    if n == 0:
        return empty(length + step), np.zeros(0, dtype=np.int64)
    if done is None or not done.any():
        return children(prefixes, length, step), np.repeat(np.arange(n, dtype=np.int64), 1 << step)
    if not done.all() and step >= WORD:
        raise ParameterError(f"an open prefix cannot be extended by {step} bits at once")
    fan = np.where(done, 1, 1 << min(step, WORD - 2)).astype(np.int64)
    parent = np.repeat(np.arange(n, dtype=np.int64), fan)
    out = shift_left(prefixes, length, step)[parent]
    z = (np.arange(parent.size, dtype=np.int64) - (np.cumsum(fan) - fan)[parent]).astype(np.uint64)
    if out.ndim == 1:
        out |= z
    else:
        out[:, -1] |= z
    return out, parent


def ended(prefixes: Codes, length: int) -> NDArray[np.bool_]:
    """Which ``length``-bit prefixes of zero-padded text have ended: their last complete byte is
    0x00, so (items holding no zero byte) their only extension is all zeros."""
    full = length // 8
    if full == 0:
        return np.zeros(count(prefixes), dtype=bool)
    head = prefix(prefixes, length, 8 * full) if 8 * full < length else prefixes
    last = head if head.ndim == 1 else head[:, -1]
    return (last & _U64(0xFF)) == 0


def keys(codes: Codes) -> NDArray[np.generic]:
    """Sortable 1-D keys in numeric order: the codes themselves up to 64 bits, else one
    ``void`` scalar of the big-endian bytes a code (compared byte by byte)."""
    if codes.ndim == 1:
        return codes
    w = codes.shape[1]
    raw = np.ascontiguousarray(codes.astype(">u8"))
    return raw.view(np.dtype((np.void, 8 * w))).reshape(codes.shape[0])


def from_keys(k: NDArray[np.generic], bits: int) -> Codes:
    """The codes of :func:`keys` (of codes of ``bits`` bits)."""
    if bits <= WORD:
        return np.asarray(k, dtype=np.uint64)
    mat = np.frombuffer(np.ascontiguousarray(k).tobytes(), dtype=">u8")
    return mat.reshape(-1, words(bits)).astype(np.uint64)


def _bits_of(codes: Codes) -> int:
    return WORD * codes.shape[1] if codes.ndim == 2 else WORD


def unique(codes: Codes) -> Codes:
    """Sorted unique codes (``np.unique``)."""
    if codes.ndim == 1:
        return np.unique(codes)
    return from_keys(np.unique(keys(codes)), _bits_of(codes))


def unique_inverse(codes: Codes) -> tuple[Codes, NDArray[np.int64]]:
    """Sorted unique codes and, for each code, the index of its unique code."""
    if codes.ndim == 1:
        uniq, inv = np.unique(codes, return_inverse=True)
        return uniq, inv.reshape(-1)
    uk, inv = np.unique(keys(codes), return_inverse=True)
    return from_keys(uk, _bits_of(codes)), inv.reshape(-1)


def unique_counts(codes: Codes) -> tuple[Codes, NDArray[np.int64]]:
    """Sorted unique codes and how often each occurs."""
    if codes.ndim == 1:
        return np.unique(codes, return_counts=True)
    uk, counts = np.unique(keys(codes), return_counts=True)
    return from_keys(uk, _bits_of(codes)), counts


def strictly_increasing(codes: Codes) -> bool:
    """Whether the codes are sorted and distinct."""
    if codes.ndim == 1:
        return bool(np.all(codes[1:] > codes[:-1]))
    k = keys(codes)
    if k.size < 2:
        return True
    order = np.argsort(k, kind="stable")
    return bool(np.all(order == np.arange(k.size)) and np.all(k[1:] != k[:-1]))


def sort(codes: Codes) -> Codes:
    """Codes in ascending order."""
    return np.sort(codes) if codes.ndim == 1 else codes[np.argsort(keys(codes), kind="stable")]


def isin(values: Codes, test: Codes) -> NDArray[np.bool_]:
    """``np.isin`` of codes of the same width."""
    if values.ndim == 1 and test.ndim == 1:
        return np.isin(values, test)
    return np.isin(keys(values), keys(test))


def index_of(values: Codes, candidates: Codes) -> NDArray[np.int64]:
    """Position of each value in ``candidates``, or ``len(candidates)`` (the ⊥ symbol)."""
    cand = keys(candidates)
    vals = keys(values)
    n = count(candidates)
    if n == 0:
        return np.zeros(count(values), dtype=np.int64)
    order = np.argsort(cand, kind="stable")
    srt = cand[order]
    pos_c = np.minimum(np.searchsorted(srt, vals), n - 1)
    return np.where(srt[pos_c] == vals, order[pos_c], n).astype(np.int64)


def _nbytes(bits: int) -> int:
    return max(1, -(-bits // 8))


def to_bytes(codes: Codes, bits: int) -> bytes:
    """⌈bits/8⌉ big-endian bytes a code (at least one), back to back."""
    nb = _nbytes(bits)
    if count(codes) == 0:
        return b""
    big = _matrix(codes)
    mat = np.ascontiguousarray(big.astype(">u8")).view(np.uint8)
    mat = mat.reshape(count(codes), 8 * big.shape[1])
    if nb > mat.shape[1]:
        raise CodecError(f"codes of {bits} bits do not fit {mat.shape[1]} bytes")
    cut = mat.shape[1] - nb
    spare = 8 * nb - bits
    if count(codes) and (
        mat[:, :cut].any() or (spare and (mat[:, cut] >> np.uint8(8 - spare)).any())
    ):
        raise CodecError(f"a code does not fit in {bits} bits")
    return np.ascontiguousarray(mat[:, cut:]).tobytes()


def from_bytes(data: bytes, bits: int) -> Codes:
    """Codes of ``bits`` bits from :func:`to_bytes`; a bad length or a value ≥ 2^bits raises
    :class:`CodecError`."""
    if bits < 0 or bits > MAX_BITS:
        raise CodecError(f"bit width must be between 0 and {MAX_BITS}, got {bits}")
    nb = _nbytes(bits)
    if len(data) % nb:
        raise CodecError(f"{len(data)} bytes do not hold whole {bits}-bit codes ({nb} bytes each)")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, nb)
    spare = 8 * nb - bits
    if spare and raw.shape[0] and (raw[:, 0] >> np.uint8(8 - spare)).any():
        raise CodecError(f"a code does not fit in {bits} bits")
    w = words(bits)
    full = np.zeros((raw.shape[0], 8 * w), dtype=np.uint8)
    full[:, 8 * w - nb :] = raw
    mat = full.view(">u8").astype(np.uint64)
    return _shaped(mat, max(bits, 1))


def _splitmix64(x: Codes) -> Codes:
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


def fingerprint(codes: Codes, length: int) -> Codes:
    """A fixed public 64-bit key of each ``length``-bit code: SplitMix64 chained over the length
    and the words (h ← mix(h ⊕ word)). Two distinct codes of one length share a key only by a
    64-bit collision of the chain (about 2^-64 for a pair of natural items)."""
    mat = _matrix(np.asarray(codes, dtype=np.uint64))
    with np.errstate(over="ignore"):
        seed = _splitmix64(np.array([length], dtype=np.uint64) ^ _FP_SALT)
        h = np.full(mat.shape[0], seed[0], dtype=np.uint64)
        for j in range(mat.shape[1]):  # ≤ 8 words, vectorised over the codes
            h = _splitmix64(h ^ mat[:, j])
    return h


def oracle_keys(codes: Codes, length: int) -> Codes:
    """The 64-bit keys the oracles hash and index: the codes themselves up to 64 bits, their
    :func:`fingerprint` above (docs/mechanisms.md §2)."""
    return codes if length <= WORD else fingerprint(codes, length)
