"""Compiled (numba) inner loops of the OLH and seed-pool OLH decode.

The hash family and every word these loops read are defined and precomputed in
:mod:`fedhh.oracles.hashing`; this module only runs the same uint64 arithmetic as the numpy
kernel there, so the counts are exactly equal. Each function adds into a caller's ``counts``
array for one block of reports (or seeds) × one block of candidates; the caller splits the work
over Python threads (the functions release the GIL), so no array larger than the candidate set
is made. Threads rather than numba's ``parallel=True``/``prange``: equal speed measured here,
while prange compiled ≈ 5× longer and its OpenMP layer (GNU libgomp) aborts any process forked
after a parallel call ("fork() called from a process already using GNU OpenMP"), as the study's
process pool would be.

Plain OLH: ``counts[k] += #{j : (a_lo[j]·x_lo[k] + a_hi[j]·x_hi[k] + offset[j]) mod 2^64 <
width[j]}``. Measured choices (n = 100k, |C| = 1024, one core): candidates in tiles of 8 held in
registers while the reports stream (LLVM vectorises the report loop into 8-lane AVX-512
multiply-add-compare with 8 running sums, ≈ 2.5× a loop over one candidate at a time); a
separate tile loop without the high-half multiply when the 8 candidates are < 2^32; reports in
blocks of ``USER_BLOCK`` so a block's words stay in L2 while every tile passes over them (no
measurable gain up to n = 10^6 here, where L3 holds them, but large n need not rely on L3).
Loops index slices from 0: a loop over ``range(lo, hi)`` keeps numba's negative-index check,
does not vectorise and ran several times slower.

Seed pool: ``counts[k] += Σ_s M[s, ((((a_lo[s]·x_lo[k] + a_hi[s]·x_hi[k] + b[s]) mod 2^64) >> 32)
· g) >> 32]`` over a flattened S×g matrix ``M``. For g ≤ 8 (ε ≤ 2) a seed's row of M sits in
8 registers and the look-up is a tree of 7 selects on the bucket's bits, with candidates in the
vector lanes (≈ 1.45× the gather loop, one core); for larger g, seeds in blocks of
``SEED_BLOCK`` rows and candidates in tiles of 4, one gather per evaluation.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]

USER_BLOCK = 8192  # reports per block: 4 words × 8 B × 8192 = 256 KiB (L2-resident)
SEED_BLOCK = 4096  # most pool rows per block
POOL_BLOCK_BYTES = 1 << 19  # a block of M (rows·g int64) stays within half a core's L2 cache
CANDIDATE_BLOCK = 2048  # candidates per pass of the g ≤ 8 pool loop (x_lo, x_hi, counts: 48 KiB)

_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _olh_one(a_lo: U64, a_hi: U64, offset: U64, width: U64, xl: np.uint64, xh: np.uint64) -> int:
    c = 0
    if xh == 0:
        for j in range(a_lo.size):
            c += (a_lo[j] * xl + offset[j]) < width[j]
    else:
        for j in range(a_lo.size):
            c += (a_lo[j] * xl + a_hi[j] * xh + offset[j]) < width[j]
    return c


@njit(cache=True, nogil=True)
def _olh_block(
    a_lo: U64, a_hi: U64, offset: U64, width: U64, x_lo: U64, x_hi: U64, counts: I64
) -> None:
    n_cand = x_lo.size
    k = 0
    while k + 8 <= n_cand:
        l0, l1, l2, l3 = x_lo[k], x_lo[k + 1], x_lo[k + 2], x_lo[k + 3]
        l4, l5, l6, l7 = x_lo[k + 4], x_lo[k + 5], x_lo[k + 6], x_lo[k + 7]
        h0, h1, h2, h3 = x_hi[k], x_hi[k + 1], x_hi[k + 2], x_hi[k + 3]
        h4, h5, h6, h7 = x_hi[k + 4], x_hi[k + 5], x_hi[k + 6], x_hi[k + 7]
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0
        if (h0 | h1 | h2 | h3 | h4 | h5 | h6 | h7) == 0:
            for j in range(a_lo.size):
                a, o, w = a_lo[j], offset[j], width[j]
                c0 += (a * l0 + o) < w
                c1 += (a * l1 + o) < w
                c2 += (a * l2 + o) < w
                c3 += (a * l3 + o) < w
                c4 += (a * l4 + o) < w
                c5 += (a * l5 + o) < w
                c6 += (a * l6 + o) < w
                c7 += (a * l7 + o) < w
        else:
            for j in range(a_lo.size):
                a, b, o, w = a_lo[j], a_hi[j], offset[j], width[j]
                c0 += (a * l0 + b * h0 + o) < w
                c1 += (a * l1 + b * h1 + o) < w
                c2 += (a * l2 + b * h2 + o) < w
                c3 += (a * l3 + b * h3 + o) < w
                c4 += (a * l4 + b * h4 + o) < w
                c5 += (a * l5 + b * h5 + o) < w
                c6 += (a * l6 + b * h6 + o) < w
                c7 += (a * l7 + b * h7 + o) < w
        counts[k] += c0
        counts[k + 1] += c1
        counts[k + 2] += c2
        counts[k + 3] += c3
        counts[k + 4] += c4
        counts[k + 5] += c5
        counts[k + 6] += c6
        counts[k + 7] += c7
        k += 8
    while k < n_cand:
        counts[k] += _olh_one(a_lo, a_hi, offset, width, x_lo[k], x_hi[k])
        k += 1


@njit(cache=True, nogil=True)
def olh_support(
    a_lo: U64,
    a_hi: U64,
    offset: U64,
    width: U64,
    x_lo: U64,
    x_hi: U64,
    counts: I64,
    user_block: int = USER_BLOCK,
) -> None:
    """Add to ``counts[k]`` the number of reports j whose bucket of candidate k is their
    reported one: (a_lo[j]·x_lo[k] + a_hi[j]·x_hi[k] + offset[j]) mod 2^64 < width[j]."""
    n = a_lo.size
    for lo in range(0, n, user_block):
        hi = min(lo + user_block, n)
        _olh_block(a_lo[lo:hi], a_hi[lo:hi], offset[lo:hi], width[lo:hi], x_lo, x_hi, counts)


@njit(cache=True, nogil=True)
def _pool_one(
    a_lo: U64, a_hi: U64, b: U64, flat: I64, g: np.uint64, xl: np.uint64, xh: np.uint64
) -> int:
    c = 0
    for s in range(a_lo.size):
        h = (a_lo[s] * xl + a_hi[s] * xh + b[s]) >> _S32
        c += flat[np.uint64(s) * g + ((h * g) >> _S32)]
    return c


@njit(cache=True, nogil=True)
def _pool_block(
    a_lo: U64, a_hi: U64, b: U64, flat: I64, g: np.uint64, x_lo: U64, x_hi: U64, counts: I64
) -> None:
    n_cand = x_lo.size
    k = 0
    while k + 4 <= n_cand:
        l0, l1, l2, l3 = x_lo[k], x_lo[k + 1], x_lo[k + 2], x_lo[k + 3]
        h0, h1, h2, h3 = x_hi[k], x_hi[k + 1], x_hi[k + 2], x_hi[k + 3]
        c0 = c1 = c2 = c3 = 0
        if (h0 | h1 | h2 | h3) == 0:
            for s in range(a_lo.size):
                a, bs, row = a_lo[s], b[s], np.uint64(s) * g
                c0 += flat[row + ((((a * l0 + bs) >> _S32) * g) >> _S32)]
                c1 += flat[row + ((((a * l1 + bs) >> _S32) * g) >> _S32)]
                c2 += flat[row + ((((a * l2 + bs) >> _S32) * g) >> _S32)]
                c3 += flat[row + ((((a * l3 + bs) >> _S32) * g) >> _S32)]
        else:
            for s in range(a_lo.size):
                a, ah, bs, row = a_lo[s], a_hi[s], b[s], np.uint64(s) * g
                c0 += flat[row + ((((a * l0 + ah * h0 + bs) >> _S32) * g) >> _S32)]
                c1 += flat[row + ((((a * l1 + ah * h1 + bs) >> _S32) * g) >> _S32)]
                c2 += flat[row + ((((a * l2 + ah * h2 + bs) >> _S32) * g) >> _S32)]
                c3 += flat[row + ((((a * l3 + ah * h3 + bs) >> _S32) * g) >> _S32)]
        counts[k] += c0
        counts[k + 1] += c1
        counts[k + 2] += c2
        counts[k + 3] += c3
        k += 4
    while k < n_cand:
        counts[k] += _pool_one(a_lo, a_hi, b, flat, g, x_lo[k], x_hi[k])
        k += 1


@njit(cache=True, nogil=True, inline="always")
def _lookup8(
    y: np.uint64,
    r0: int,
    r1: int,
    r2: int,
    r3: int,
    r4: int,
    r5: int,
    r6: int,
    r7: int,
) -> int:
    """r_y for y < 8 by a tree of selects on y's bits (vectorises to blends, unlike a gather)."""
    odd = (y & np.uint64(1)) != 0
    v01 = r1 if odd else r0
    v23 = r3 if odd else r2
    v45 = r5 if odd else r4
    v67 = r7 if odd else r6
    two = (y & np.uint64(2)) != 0
    v03 = v23 if two else v01
    v47 = v67 if two else v45
    return v47 if (y & np.uint64(4)) != 0 else v03


@njit(cache=True, nogil=True)
def _pool_select(
    a_lo: U64, a_hi: U64, b: U64, flat: I64, g: int, x_lo: U64, x_hi: U64, counts: I64
) -> None:
    # g ≤ 8: seeds outer (their row of M in 8 registers), candidates inner in vector lanes.
    gg = np.uint64(g) & _LOW32
    high = False
    for k in range(x_hi.size):
        high |= x_hi[k] != 0
    for s in range(a_lo.size):
        a, ah, bs, row = a_lo[s], a_hi[s], b[s], s * g
        r0, r1 = flat[row], flat[row + 1]
        r2 = flat[row + 2] if g > 2 else 0
        r3 = flat[row + 3] if g > 3 else 0
        r4 = flat[row + 4] if g > 4 else 0
        r5 = flat[row + 5] if g > 5 else 0
        r6 = flat[row + 6] if g > 6 else 0
        r7 = flat[row + 7] if g > 7 else 0
        if high:
            for k in range(x_lo.size):
                y = (((a * x_lo[k] + ah * x_hi[k] + bs) >> _S32) * gg) >> _S32
                counts[k] += _lookup8(y, r0, r1, r2, r3, r4, r5, r6, r7)
        else:
            for k in range(x_lo.size):
                y = (((a * x_lo[k] + bs) >> _S32) * gg) >> _S32
                counts[k] += _lookup8(y, r0, r1, r2, r3, r4, r5, r6, r7)


@njit(cache=True, nogil=True)
def pool_seed_block(g: int) -> int:
    """Pool rows per block for a g-bucket pool: a block of the matrix fits POOL_BLOCK_BYTES
    (at least 8 rows, at most SEED_BLOCK)."""
    return max(8, min(SEED_BLOCK, POOL_BLOCK_BYTES // (8 * max(1, g))))


@njit(cache=True, nogil=True)
def pool_support(
    a_lo: U64,
    a_hi: U64,
    b: U64,
    flat: I64,
    g: int,
    x_lo: U64,
    x_hi: U64,
    counts: I64,
    seed_block: int = 0,
) -> None:
    """Add to ``counts[k]`` Σ_s M[s, bucket_s(x_k)] over the seeds s of this block, for the
    row-major S×g matrix ``flat`` (bucket_s(x) = (h_s(x)·g) >> 32 of the hashing module).

    The seeds go in blocks of ``seed_block`` rows (0: :func:`pool_seed_block`, as many as fit
    in POOL_BLOCK_BYTES), each block over every candidate: a candidate's lookups then hit the
    cache. With 4,096 rows of g = e^8 + 1 ≈ 2,982 counts (98 MB) every lookup missed it, and a
    decode took 7× longer (experiments/bench_oracles.py --epsilon 8)."""
    n_cand = x_lo.size
    if g <= 8:
        for lo in range(0, n_cand, CANDIDATE_BLOCK):
            hi = min(lo + CANDIDATE_BLOCK, n_cand)
            _pool_select(a_lo, a_hi, b, flat, g, x_lo[lo:hi], x_hi[lo:hi], counts[lo:hi])
        return
    gg = np.uint64(g) & _LOW32
    n = a_lo.size
    seed_block = seed_block if seed_block > 0 else pool_seed_block(g)
    for lo in range(0, n, seed_block):
        hi = min(lo + seed_block, n)
        _pool_block(
            a_lo[lo:hi], a_hi[lo:hi], b[lo:hi], flat[lo * g : hi * g], gg, x_lo, x_hi, counts
        )


def warm_up() -> tuple[float, bool]:
    """Compile every kernel (or load it from numba's on-disk cache) with the argument types the
    decode uses; returns (seconds taken, whether every kernel came from the cache)."""
    t0 = time.perf_counter()
    words = np.arange(1, 17, dtype=np.uint64)
    counts = np.zeros(words.size, dtype=np.int64)
    olh_support(words, words, words, words, words, words, counts)
    pool_support(words[:2], words[:2], words[:2], counts, 8, words, words, counts)
    seconds = time.perf_counter() - t0
    misses = sum(sum(f.stats.cache_misses.values()) for f in (olh_support, pool_support))
    return seconds, misses == 0
