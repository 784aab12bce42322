"""Compiled (numba) inner loops of the affine-hash OLH decode (:mod:`fedhh.oracles.affine`).

They run the same integer arithmetic as the numpy paths of :mod:`fedhh.oracles.affine_decode`,
so the counts are exactly equal. Parities are hardware popcounts (LLVM's ``ctpop``, reached
through a numba intrinsic). Each function works on one slice of the reports or of the prefixes
and releases the GIL; the caller splits the work over Python threads (as :mod:`kernels` does,
for the same reasons: no OpenMP layer, forked processes stay safe).

* :func:`direct_counts`: ``counts[k] += #{u : A_u·x_k = z_u}`` for arbitrary candidates x_k,
  t parities per (report, candidate), candidates in tiles of 4.
* :func:`block_histograms`: for each prefix p of a block of prefixes and each report u, the
  signed histogram H_p[w_{u,S}] += (−1)^{|S ∧ r_u(p)|} over the g subsets S of the t rows, where
  w_{u,S} is the XOR of the rows' suffix parts in S (precomputed, ``words``) and
  r_u(p) = z_u ⊕ (the rows' prefix parts · p).
* :func:`walsh_hadamard`: the in-place unnormalised Walsh–Hadamard transform of each row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
U32 = NDArray[np.uint32]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]


@intrinsic
def _ctpop_intrinsic(typingctx: object, x: object) -> tuple[Any, Callable[..., Any]]:
    """Population count of a uint64 (one ``popcnt`` instruction where the CPU has it)."""
    sig = types.uint64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return sig, codegen


_ctpop = cast(Callable[[np.uint64], np.uint64], _ctpop_intrinsic)  # how the kernels call it


@njit(cache=True, nogil=True, inline="always")
def _hash(rows: U64, t: int, u: int, x: np.uint64) -> np.uint64:
    """A_u·x: bit j is the parity of row j of report u ANDed with x."""
    h = np.uint64(0)
    for j in range(t):
        h |= (_ctpop(rows[j, u] & x) & np.uint64(1)) << np.uint64(j)
    return h


@njit(cache=True, nogil=True)
def direct_counts(rows: U64, z: U64, cand: U64, counts: I64) -> None:
    """Add to ``counts[k]`` the number of reports u (columns of the t×n ``rows``) with
    A_u·cand[k] = z[u]."""
    t, n = rows.shape
    n_cand = cand.size
    k = 0
    while k + 4 <= n_cand:
        x0, x1, x2, x3 = cand[k], cand[k + 1], cand[k + 2], cand[k + 3]
        c0 = c1 = c2 = c3 = 0
        for u in range(n):
            zu = z[u]
            c0 += _hash(rows, t, u, x0) == zu
            c1 += _hash(rows, t, u, x1) == zu
            c2 += _hash(rows, t, u, x2) == zu
            c3 += _hash(rows, t, u, x3) == zu
        counts[k] += c0
        counts[k + 1] += c1
        counts[k + 2] += c2
        counts[k + 3] += c3
        k += 4
    while k < n_cand:
        c = 0
        for u in range(n):
            c += _hash(rows, t, u, cand[k]) == z[u]
        counts[k] += c
        k += 1


@njit(cache=True, nogil=True)
def block_histograms(
    rows_p: U64, z: U64, words: U32, prefixes: U64, signs: I32, hist: I32 | I64
) -> None:
    """Add to ``hist[i, w]`` (one row of 2^s counts per prefix ``prefixes[i]``) the signed
    histogram of the reports: for each report u and subset S of its t rows,
    (−1)^{|S ∧ r_u|} at w = ``words[u, S]``, with r_u = z[u] ⊕ A^prefix_u·p (``rows_p``: the
    rows shifted right by s). ``signs[r, S]`` = (−1)^{|S ∧ r|} (a g×g table, measured ≈ 1.4×
    faster than a popcount per update at g = 8), or an empty table: popcounts (large g).

    The empty subset adds +1 at w = 0 for every report (n at once). The histogram's values and
    the transform's stay within ±n·g: int32 rows (half the cache of int64, measured ≈ 1.8×
    faster at 2^17 entries) whenever n·g < 2^31."""
    t, n = rows_p.shape
    g = words.shape[1]
    table = signs.shape[0] > 0
    for i in range(prefixes.size):
        p = prefixes[i]
        row = hist[i]
        for u in range(n):
            r = z[u] ^ _hash(rows_p, t, u, p)
            wu = words[u]
            if table:
                sg = signs[r]
                for S in range(1, g):
                    row[wu[S]] += sg[S]
            else:
                for S in range(1, g):
                    row[wu[S]] += 1 - 2 * np.int32(_ctpop(np.uint64(S) & r) & np.uint64(1))
        row[0] += n


@njit(cache=True, nogil=True)
def walsh_hadamard(hist: I32 | I64) -> None:
    """The unnormalised Walsh–Hadamard transform of every row of ``hist`` (length 2^s), in
    place: out[x] = Σ_w hist[w]·(−1)^{|w ∧ x|}."""
    size = hist.shape[1]
    for i in range(hist.shape[0]):
        row = hist[i]
        h = 1
        while h < size:
            for lo in range(0, size, 2 * h):
                for j in range(lo, lo + h):
                    a, b = row[j], row[j + h]
                    row[j] = a + b
                    row[j + h] = a - b
            h *= 2


def warm_up() -> tuple[float, bool]:
    """Compile every kernel (or load it from numba's on-disk cache); returns (seconds taken,
    whether every kernel came from the cache)."""
    t0 = time.perf_counter()
    rows = np.arange(1, 9, dtype=np.uint64).reshape(2, 4)
    z = np.zeros(4, dtype=np.uint64)
    counts = np.zeros(5, dtype=np.int64)
    direct_counts(rows, z, np.arange(5, dtype=np.uint64), counts)
    words, prefix = np.zeros((4, 4), dtype=np.uint32), np.zeros(1, np.uint64)
    for signs in (np.ones((4, 4), dtype=np.int32), np.zeros((0, 4), dtype=np.int32)):
        for dtype in (np.int32, np.int64):
            hist = np.zeros((1, 4), dtype=dtype)
            block_histograms(rows, z, words, prefix, signs, hist)
            walsh_hadamard(hist)
    kernels = (direct_counts, block_histograms, walsh_hadamard)
    misses = sum(sum(f.stats.cache_misses.values()) for f in kernels)
    return time.perf_counter() - t0, misses == 0
