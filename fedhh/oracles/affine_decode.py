"""The decode of affine-hash OLH (:mod:`fedhh.oracles.affine`): support counts
C(x) = #{u : A_u·x = z_u} over a candidate set, where report u holds the t×64 bit matrix A_u
(t rows of 64 bits, ``rows[j, u]``) and z_u = y_u ⊕ b_u.

Two routes give identical counts:

* **direct**: every report's hash of every candidate (t parities each), O(n·|C|·t);
* **blocks**: candidates that form aligned blocks {p·2^s + x : x < 2^s} (a prefix p and all its
  s-bit extensions, as a prefix search's level makes them) are counted through the identity
  1[A·x = z] = 2^−t·Σ_{S⊆[t]} (−1)^{|S ∧ z| + ⟨w_S, x⟩}, w_S the XOR of the rows in S. Splitting
  each row into its prefix and suffix parts, the counts of a block are 2^−t times the
  Walsh–Hadamard transform of the 2^s-entry histogram
  H_p[w^x_{u,S}] = Σ_{u,S} (−1)^{|S ∧ r_u(p)|},  r_u(p) = z_u ⊕ A^prefix_u·p,
  so a block costs n·(g + t) histogram updates and s·2^s transform steps instead of n·2^s·t.

:func:`block_plan` finds the blocks in a candidate array (runs of consecutive codes, cut at
multiples of 2^s) and picks the s whose blocks plus the direct rest cost least. Both routes have
a compiled kernel (:mod:`fedhh.oracles.affine_kernels`, numba, cached on disk) and a numpy one
(the fallback); ``FEDHH_KERNEL`` selects between them as for plain OLH
(:func:`fedhh.oracles.hashing.active_kernel`). Work is split over ``threads`` (default every
core): over the blocks when there are enough of them, else over the reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from fedhh.oracles.hashing import _executor, compiled_kernels, default_threads, resolve_kernel

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]

MAX_BLOCK_BITS = 30  # widest block: 2^30 counts (8 GiB) is past any level's candidate set
_NUMPY_USERS = 1 << 15  # reports per pass of the numpy paths (bounds their temporaries)
_NUMPY_CANDIDATES = 64  # candidates per pass of the numpy direct path
_ONE = np.uint64(1)
MAX_SIGN_TABLE = 64  # the compiled histograms look signs up in a g×g table up to this g


def _kernel(kernel: str | None) -> str:
    name = resolve_kernel(kernel)
    if name == "numba":
        _module()  # a clear error when numba was asked for and cannot run
    return name


def _module() -> ModuleType:
    return compiled_kernels("affine_kernels")


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """How a candidate array is decoded: ``prefixes[i]``'s block of 2^``bits`` candidates starts
    at position ``starts[i]`` of the array (its extensions in order), ``rest`` lists the
    positions decoded directly."""

    bits: int
    prefixes: U64
    starts: I64
    rest: I64


def _runs(cand: U64) -> tuple[U64, I64, I64]:
    """Maximal runs of consecutive codes (c, c + 1, ...) in array order: first code, first
    position and length of each."""
    step = (cand[1:] == cand[:-1] + _ONE) & (cand[:-1] != np.uint64(2**64 - 1))
    first = np.flatnonzero(np.concatenate([[True], ~step]))
    lengths = np.diff(np.append(first, cand.size))
    return cand[first], first.astype(np.int64), lengths.astype(np.int64)


def _aligned(v0: U64, lengths: I64, bits: int) -> tuple[U64, I64]:
    """Per run, the first whole aligned block's prefix (v0 rounded up to a multiple of 2^bits,
    shifted) and how many whole blocks of 2^bits the run holds from there."""
    sh, mask = np.uint64(bits), np.uint64((1 << bits) - 1)
    low = (v0 & mask).astype(np.int64)
    first = (v0 >> sh) + (low != 0).astype(np.uint64)
    last = (v0 >> sh) + ((low + lengths) >> bits).astype(np.uint64)
    count = np.where(last > first, last - first, np.uint64(0)).astype(np.int64)
    return first, count


def block_plan(cand: U64, n_reports: int, t: int) -> BlockPlan:
    """The cheapest split of ``cand`` into aligned blocks of one width 2^s and a direct rest,
    by the decode's cost: a block n·(2^t + t) + s·2^s, a direct candidate n·t (s = 0: no block)."""
    v0, pos, lengths = _runs(cand)
    n, g = max(1, n_reports), 1 << t
    best, best_cost = 0, float(cand.size) * n * t
    widest = min(MAX_BLOCK_BITS, int(lengths.max()).bit_length() - 1)
    for bits in range(1, widest + 1):
        blocks = int(_aligned(v0, lengths, bits)[1].sum())
        rest = cand.size - blocks * (1 << bits)
        cost = blocks * (n * (g + t) + bits * (1 << bits)) + float(rest) * n * t
        if cost < best_cost:
            best, best_cost = bits, cost
    if best == 0:
        none = np.zeros(0, dtype=np.int64)
        return BlockPlan(0, np.zeros(0, dtype=np.uint64), none, np.arange(cand.size))
    first, count = _aligned(v0, lengths, best)
    run = np.repeat(np.arange(v0.size), count)
    k = np.arange(run.size) - np.repeat(np.cumsum(count) - count, count)
    prefixes = first[run] + k.astype(np.uint64)
    starts = pos[run] + ((prefixes << np.uint64(best)) - v0[run]).astype(np.int64)
    covered = np.zeros(cand.size, dtype=bool)
    covered[(starts[:, None] + np.arange(1 << best)[None, :]).reshape(-1)] = True
    return BlockPlan(best, prefixes, starts, np.flatnonzero(~covered))


# --- numpy paths -------------------------------------------------------------------------------


def parity_hash(rows: U64, x: U64) -> U64:
    """A_u·x for each report u (columns of ``rows``) and ``x`` (broadcast against a report
    axis last): bit j is the parity of row j ANDed with x."""
    h = np.zeros(np.broadcast_shapes(x.shape, rows.shape[1:]), dtype=np.uint64)
    for j in range(rows.shape[0]):
        bit = np.bitwise_count(rows[j] & x).astype(np.uint64) & _ONE
        h |= bit << np.uint64(j)
    return h


def _direct_numpy(rows: U64, z: U64, cand: U64) -> I64:
    counts = np.zeros(cand.size, dtype=np.int64)
    for c0 in range(0, cand.size, _NUMPY_CANDIDATES):
        block = cand[c0 : c0 + _NUMPY_CANDIDATES, None]
        for u0 in range(0, z.size, _NUMPY_USERS):
            u1 = u0 + _NUMPY_USERS
            match = parity_hash(rows[:, u0:u1], block) == z[None, u0:u1]
            counts[c0 : c0 + block.shape[0]] += np.count_nonzero(match, axis=1)
    return counts


def subset_words(rows_x: U64) -> NDArray[np.uint32]:
    """w_{u,S} for every report u and subset S of its t rows (bit j of S: row j): the XOR of
    the rows' suffix parts in S, as an n×2^t array."""
    t, n = rows_x.shape
    words = np.zeros((n, 1 << t), dtype=np.uint32)
    for j in range(t):
        half = 1 << j
        words[:, half : 2 * half] = words[:, :half] ^ rows_x[j].astype(np.uint32)[:, None]
    return words


def walsh_signs(g: int) -> NDArray[np.int32]:
    """The g×g table (−1)^{|S ∧ r|} (row r, column S)."""
    subsets = np.arange(g, dtype=np.uint64)
    odd = np.bitwise_count(subsets[:, None] & subsets[None, :]) & np.uint8(1)
    return 1 - 2 * odd.astype(np.int32)


def _histograms_numpy(
    rows_p: U64, z: U64, words: NDArray[np.uint32], prefixes: U64, bits: int
) -> I64:
    g = words.shape[1]
    subsets = np.arange(g, dtype=np.uint64)
    hist = np.zeros((prefixes.size, 1 << bits), dtype=np.int64)
    for i, p in enumerate(prefixes):
        for u0 in range(0, z.size, _NUMPY_USERS):
            u1 = u0 + _NUMPY_USERS
            r = z[u0:u1] ^ parity_hash(rows_p[:, u0:u1], np.asarray(p, dtype=np.uint64))
            odd = np.bitwise_count(subsets[None, :] & r[:, None]) & np.uint8(1)
            sign = 1 - 2 * odd.astype(np.int64)
            hist[i] += np.bincount(
                words[u0:u1].reshape(-1), weights=sign.reshape(-1), minlength=1 << bits
            ).astype(np.int64)
    return hist


def _walsh_hadamard_numpy(hist: I64) -> None:
    rows, size = hist.shape
    h = 1
    while h < size:
        view = hist.reshape(rows, size // (2 * h), 2, h)
        a, b = view[:, :, 0, :].copy(), view[:, :, 1, :]
        view[:, :, 0, :] += b
        view[:, :, 1, :] = a - b
        h *= 2


# --- dispatch ----------------------------------------------------------------------------------


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    cuts = [total * i // parts for i in range(parts + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(parts) if cuts[i] < cuts[i + 1]]


def direct_support(
    rows: U64, z: U64, cand: U64, threads: int | None = None, kernel: str | None = None
) -> I64:
    """#{u : A_u·x = z_u} for each candidate x (every report's hash of every candidate)."""
    if cand.size == 0 or z.size == 0:
        return np.zeros(cand.size, dtype=np.int64)
    if _kernel(kernel) == "numpy":
        return _direct_numpy(rows, z, cand)
    direct = _module().direct_counts
    n_threads = max(1, min(threads or default_threads(), (z.size * cand.size) >> 20 or 1))
    if n_threads == 1 or cand.size < 4 * n_threads:
        counts = np.zeros(cand.size, dtype=np.int64)
        direct(rows, z, cand, counts)
        return counts
    counts = np.zeros(cand.size, dtype=np.int64)
    jobs = [
        _executor().submit(direct, rows, z, cand[lo:hi], counts[lo:hi])
        for lo, hi in _split(cand.size, n_threads)
    ]
    for job in jobs:
        job.result()
    return counts


def block_support(
    rows: U64,
    z: U64,
    prefixes: U64,
    bits: int,
    threads: int | None = None,
    kernel: str | None = None,
) -> I64:
    """Counts of the blocks {p·2^bits + x : x < 2^bits} of ``prefixes``, as a |P|×2^bits array
    (row i: prefix i's extensions in order), through the signed histograms and their
    Walsh–Hadamard transforms."""
    t = rows.shape[0]
    sh = np.uint64(bits)
    rows_p = np.ascontiguousarray(rows >> sh)
    words = subset_words(rows & np.uint64((1 << bits) - 1))
    if _kernel(kernel) == "numpy":
        hist = _histograms_numpy(rows_p, z, words, prefixes, bits)
        _walsh_hadamard_numpy(hist)
        return hist >> np.int64(t)
    mod = _module()
    g = words.shape[1]
    dtype = np.int32 if z.size * g < 2**31 else np.int64  # |values| ≤ n·g (block_histograms)
    signs = walsh_signs(g) if g <= MAX_SIGN_TABLE else np.zeros((0, g), dtype=np.int32)
    work = prefixes.size * z.size * g  # histogram updates
    n_threads = max(1, min(threads or default_threads(), work >> 20 or 1))
    if n_threads > 1 and prefixes.size >= n_threads:
        hist = np.zeros((prefixes.size, 1 << bits), dtype=dtype)

        def by_prefixes(lo: int, hi: int) -> None:
            mod.block_histograms(rows_p, z, words, prefixes[lo:hi], signs, hist[lo:hi])
            mod.walsh_hadamard(hist[lo:hi])

        parts = _split(prefixes.size, n_threads)
        for job in [_executor().submit(by_prefixes, lo, hi) for lo, hi in parts]:
            job.result()
        return hist.astype(np.int64) >> np.int64(t)
    parts = _split(z.size, n_threads)
    partial = [np.zeros((prefixes.size, 1 << bits), dtype=dtype) for _ in parts]
    jobs = [
        _executor().submit(
            mod.block_histograms, rows_p[:, lo:hi], z[lo:hi], words[lo:hi], prefixes, signs, out
        )
        for (lo, hi), out in zip(parts, partial, strict=True)
    ]
    for job in jobs:
        job.result()
    hist = partial[0]
    for more in partial[1:]:
        hist += more
    mod.walsh_hadamard(hist)
    return hist.astype(np.int64) >> np.int64(t)


def support_counts(
    rows: U64, z: U64, cand: U64, threads: int | None = None, kernel: str | None = None
) -> I64:
    """#{u : A_u·x = z_u} for each candidate x, blocks through the transform and the rest
    directly (:func:`block_plan`)."""
    plan = block_plan(cand, z.size, rows.shape[0])
    counts = np.zeros(cand.size, dtype=np.int64)
    if z.size == 0:
        return counts
    if plan.bits:
        blocks = block_support(rows, z, plan.prefixes, plan.bits, threads, kernel)
        where = plan.starts[:, None] + np.arange(1 << plan.bits)[None, :]
        counts[where.reshape(-1)] = blocks.reshape(-1)
    if plan.rest.size:
        counts[plan.rest] = direct_support(rows, z, cand[plan.rest], threads, kernel)
    return counts
