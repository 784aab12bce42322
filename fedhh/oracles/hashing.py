"""The strongly universal hash family of OLH and its decode kernels (numba and numpy).

Family (Dietzfelbinger's vector multiply-add-shift, 64-bit arithmetic): a key x < 2^64 is split
into 32-bit halves (x_lo, x_hi) and

    h(x) = ((a_lo·x_lo + a_hi·x_hi + b) mod 2^64) >> 32,          bucket(x) = (h(x)·g) >> 32,

with a_lo, a_hi, b uniform 64-bit words. h is strongly universal into [2^32] (the family needs
w̄ = 64 ≥ w + ℓ − 1 = 32 + 32 − 1). Bucket y ∈ [g] is the interval I_y = [A_y, A_{y+1}) of h with
A_y = ⌈y·2^32/g⌉, so two distinct keys collide with probability exactly Σ_y (|I_y|/2^32)², which
is 1/g up to O(g/2^64) and is what OLH's debiasing uses.

The keys (a_lo, a_hi, b) are derived from a 64-bit seed with SplitMix64, so a report carries one
seed. Decoding tests ``bucket(x) == y`` without computing the bucket: h ∈ I_y ⇔
(a_lo·x_lo + a_hi·x_hi + b − A_y·2^32) mod 2^64 < |I_y|·2^32, i.e. one multiply, one add and one
compare per (user, candidate) for keys below 2^32 (two multiplies above).

Two kernels run that test and give exactly equal counts: the compiled one of
:mod:`fedhh.oracles.kernels` (numba, cached on disk; the default when numba imports) and the
numpy one below (the fallback). ``FEDHH_KERNEL=numpy|numba`` selects one, :func:`active_kernel`
tells which is in use. Both split the work over threads (``FEDHH_THREADS``, default every core)
and make no array larger than a block of reports × a block of candidates, so candidate sets of
10^6 prefixes decode in bounded memory.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import ParameterError

U64 = NDArray[np.uint64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SALT_HI = np.uint64(0xD1B54A32D192ED03)
_SALT_B = np.uint64(0x8CB92BA72F3D8DD7)
_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_BLOCK_ELEMENTS = 1 << 16  # seeds × candidates per pool-decode block (cache-resident)
_DECODE_BLOCK_ELEMENTS = 1 << 20  # candidates × users per OLH decode block (8 MiB per thread)
_DECODE_MAX_CANDIDATES = 1 << 14  # candidates per numpy OLH decode pass (bounds that block)
_PARALLEL_MIN_EVALUATIONS = 1 << 22  # below this a compiled decode runs on the calling thread
KERNELS = ("numba", "numpy")


def splitmix64(x: U64) -> U64:
    """SplitMix64 finaliser applied elementwise (a bijection on 64-bit words)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True, eq=False)
class HashKeys:
    """Keys (a_lo, a_hi, b) of the hash family, one row per seed."""

    a_lo: U64
    a_hi: U64
    b: U64

    @classmethod
    def from_seeds(cls, seeds: U64) -> HashKeys:
        s = np.asarray(seeds, dtype=np.uint64)
        return cls(splitmix64(s), splitmix64(s ^ _SALT_HI), splitmix64(s ^ _SALT_B))

    def take(self, idx: NDArray[np.integer]) -> HashKeys:
        return HashKeys(self.a_lo[idx], self.a_hi[idx], self.b[idx])


def hash32(keys: HashKeys, x: U64) -> U64:
    """h(x) in [0, 2^32), elementwise over keys and keys ``x`` (same shape or broadcastable)."""
    x = np.asarray(x, dtype=np.uint64)
    t = keys.a_lo * (x & _LOW32) + keys.a_hi * (x >> _S32) + keys.b
    return t >> _S32


def bucket_of(h32: U64, g: int) -> U64:
    """Map 32-bit hash values to buckets in [0, g): (h·g) >> 32."""
    return (np.asarray(h32, dtype=np.uint64) * np.uint64(g)) >> _S32


def bucket_starts(y: NDArray[np.integer], g: int) -> U64:
    """A_y = ⌈y·2^32/g⌉ for y ∈ [0, g] (A_g = 2^32): bucket y holds h ∈ [A_y, A_{y+1})."""
    scaled = np.asarray(y, dtype=np.uint64) << _S32  # y·2^32 < 2^64 since y ≤ g < 2^32
    return (scaled + np.uint64(g - 1)) // np.uint64(g)


@lru_cache(maxsize=64)
def collision_probability(g: int) -> float:
    """P[bucket(x) = bucket(x')] for x ≠ x' under the strongly universal family: Σ (|I_y|/2^32)².

    The g intervals have sizes ⌊2^32/g⌋ or ⌊2^32/g⌋ + 1, the larger ones r = 2^32 mod g times.
    """
    base, r = divmod(1 << 32, g)
    return (r * (base + 1) ** 2 + (g - r) * base**2) / float(1 << 64)


_POOL: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="fedhh-olh")
    return _POOL


def default_threads() -> int:
    """Threads of the decode kernel: ``FEDHH_THREADS`` if set, else every core (both kernels
    release the GIL)."""
    env = os.environ.get("FEDHH_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else os.cpu_count() or 1


# --- kernel selection -----------------------------------------------------------------------


@cache
def _compiled_module(name: str = "kernels") -> ModuleType | str:
    """The compiled kernels of ``fedhh.oracles.<name>``, or why they cannot be imported."""
    try:
        return importlib.import_module(f"fedhh.oracles.{name}")
    except ImportError as exc:  # numba missing or broken: the numpy kernel serves
        return f"{type(exc).__name__}: {exc}"


def compiled_kernels(name: str = "kernels") -> ModuleType:
    """The module of compiled kernels ``fedhh.oracles.<name>`` (OLH's by default);
    :class:`ParameterError` if numba cannot be imported."""
    mod = _compiled_module(name)
    if isinstance(mod, str):
        raise ParameterError(f"the numba decode kernel is not available ({mod})")
    return mod


def active_kernel() -> str:
    """The decode kernel in use: ``FEDHH_KERNEL`` (``numba`` or ``numpy``) if set, else
    ``numba`` when it imports and ``numpy`` otherwise."""
    env = os.environ.get("FEDHH_KERNEL", "").strip().lower()
    if env in ("", "auto"):
        return "numpy" if isinstance(_compiled_module(), str) else "numba"
    if env not in KERNELS:
        raise ParameterError(f"FEDHH_KERNEL must be one of {', '.join(KERNELS)}, got {env!r}")
    if env == "numba":
        compiled_kernels()  # a clear error when it was asked for and cannot run
    return env


def resolve_kernel(kernel: str | None) -> str:
    """``kernel`` checked, or the active one when None."""
    if kernel is None:
        return active_kernel()
    if kernel not in KERNELS:
        raise ParameterError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


# --- compiled decode: threads over ranges of candidates (or of reports) ---------------------

_Body = Callable[[int, int, NDArray[np.int64]], None]


def _kernel_array(a: NDArray[Any], dtype: type[np.generic]) -> NDArray[Any]:
    """``a`` as a C-contiguous, writable array of ``dtype`` (one compiled specialisation)."""
    arr = np.ascontiguousarray(a, dtype=dtype)
    return arr if arr.flags.writeable else arr.copy()


def _bounds(total: int, parts: int, align: int) -> list[tuple[int, int]]:
    """At most ``parts`` non-empty ranges covering [0, total); inner cuts are multiples of
    ``align`` (whole candidate tiles)."""
    cuts = [(total * i // parts) // align * align for i in range(parts)] + [total]
    return [(cuts[i], cuts[i + 1]) for i in range(parts) if cuts[i] < cuts[i + 1]]


def _run_threads(
    by_candidates: _Body, by_inputs: _Body, n_inputs: int, n_cand: int, n_threads: int, tile: int
) -> NDArray[np.int64]:
    """Counts over all candidates from range bodies ``f(lo, hi, counts)``: with enough
    candidates each thread takes a range of them and writes its own slice of the counts;
    otherwise each takes a range of the inputs (reports or seeds) into its own partial counts."""
    counts = np.zeros(n_cand, dtype=np.int64)
    if n_threads <= 1:
        by_candidates(0, n_cand, counts)
        return counts
    if n_cand >= 4 * tile * n_threads:
        futures = [
            _executor().submit(by_candidates, lo, hi, counts[lo:hi])
            for lo, hi in _bounds(n_cand, n_threads, tile)
        ]
        for f in futures:
            f.result()
        return counts
    parts = _bounds(n_inputs, n_threads, 1)
    partial = [np.zeros(n_cand, dtype=np.int64) for _ in parts]
    futures = [
        _executor().submit(by_inputs, lo, hi, p) for (lo, hi), p in zip(parts, partial, strict=True)
    ]
    for f in futures:
        f.result()
    return np.sum(partial, axis=0, dtype=np.int64)


def _decode_threads(work: int, threads: int | None) -> int:
    return max(1, min(threads or default_threads(), work // _PARALLEL_MIN_EVALUATIONS + 1))


def _count_compiled(
    a_lo: U64, a_hi: U64, offset: U64, width: U64, x_lo: U64, x_hi: U64, threads: int | None
) -> NDArray[np.int64]:
    olh = compiled_kernels().olh_support
    a_lo, a_hi, offset, width, x_lo, x_hi = (
        _kernel_array(v, np.uint64) for v in (a_lo, a_hi, offset, width, x_lo, x_hi)
    )

    def by_candidates(lo: int, hi: int, out: NDArray[np.int64]) -> None:
        olh(a_lo, a_hi, offset, width, x_lo[lo:hi], x_hi[lo:hi], out)

    def by_reports(lo: int, hi: int, out: NDArray[np.int64]) -> None:
        olh(a_lo[lo:hi], a_hi[lo:hi], offset[lo:hi], width[lo:hi], x_lo, x_hi, out)

    n, n_cand = a_lo.size, x_lo.size
    n_threads = _decode_threads(n * n_cand, threads)
    return _run_threads(by_candidates, by_reports, n, n_cand, n_threads, 8)


def _pool_compiled(
    keys: HashKeys, flat: NDArray[np.int64], g: int, cand: U64, threads: int | None
) -> NDArray[np.int64]:
    pool = compiled_kernels().pool_support
    a_lo, a_hi, b = (_kernel_array(v, np.uint64) for v in (keys.a_lo, keys.a_hi, keys.b))
    x_lo, x_hi = _kernel_array(cand & _LOW32, np.uint64), _kernel_array(cand >> _S32, np.uint64)
    m = _kernel_array(flat, np.int64)

    def by_candidates(lo: int, hi: int, out: NDArray[np.int64]) -> None:
        pool(a_lo, a_hi, b, m, g, x_lo[lo:hi], x_hi[lo:hi], out)

    def by_seeds(lo: int, hi: int, out: NDArray[np.int64]) -> None:
        pool(a_lo[lo:hi], a_hi[lo:hi], b[lo:hi], m[lo * g : hi * g], g, x_lo, x_hi, out)

    n_seeds, n_cand = a_lo.size, x_lo.size
    n_threads = _decode_threads(n_seeds * n_cand, threads)
    return _run_threads(by_candidates, by_seeds, n_seeds, n_cand, n_threads, 4)


# --- numpy decode (the fallback) --------------------------------------------------------------


def _numpy_threads(
    body: Callable[[int, int], NDArray[np.int64]], total: int, n_threads: int
) -> list[NDArray[np.int64]]:
    """``body(lo, hi)`` over ``n_threads`` equal ranges of [0, total), in order (on the calling
    thread when there is one range)."""
    if n_threads == 1:
        return [body(0, total)]
    bounds = np.linspace(0, total, n_threads + 1).astype(int)
    futures = [
        _executor().submit(body, int(bounds[i]), int(bounds[i + 1])) for i in range(n_threads)
    ]
    return [f.result() for f in futures]


def _count_block_range(
    keys: HashKeys, offset: U64, width: U64, x_lo: U64, x_hi: U64 | None, lo: int, hi: int
) -> NDArray[np.int64]:
    # Candidates × users blocks: the count runs along contiguous rows (measured ~12% faster than
    # users × candidates at n = 100k, |C| = 1024); at most _DECODE_MAX_CANDIDATES candidates a
    # pass, so a block stays at _DECODE_BLOCK_ELEMENTS words however wide the candidate set.
    n_cand = x_lo.size
    counts = np.zeros(n_cand, dtype=np.int64)
    width_c = min(n_cand, _DECODE_MAX_CANDIDATES)
    block = max(64, _DECODE_BLOCK_ELEMENTS // width_c)
    t_buf = np.empty((width_c, block), dtype=np.uint64)
    u_buf = np.empty((width_c, block), dtype=np.uint64) if x_hi is not None else None
    m_buf = np.empty((width_c, block), dtype=bool)
    for c0 in range(0, n_cand, width_c):
        c1 = min(c0 + width_c, n_cand)
        xl = x_lo[c0:c1, None]
        xh = x_hi[c0:c1, None] if x_hi is not None else None
        for s in range(lo, hi, block):
            e = min(s + block, hi)
            t, m = t_buf[: c1 - c0, : e - s], m_buf[: c1 - c0, : e - s]
            np.multiply(xl, keys.a_lo[None, s:e], out=t)
            if xh is not None and u_buf is not None:
                u = u_buf[: c1 - c0, : e - s]
                np.multiply(xh, keys.a_hi[None, s:e], out=u)
                t += u
            t += offset[None, s:e]
            np.less(t, width[None, s:e], out=m)
            counts[c0:c1] += np.count_nonzero(m, axis=1)
    return counts


def count_matches(
    keys: HashKeys,
    buckets: NDArray[np.integer],
    g: int,
    candidates: U64,
    threads: int | None = None,
    kernel: str | None = None,
) -> NDArray[np.int64]:
    """For each candidate x: #{users j : bucket_j(x) == buckets[j]} (OLH support counts).

    ``kernel`` is ``"numba"`` or ``"numpy"`` (default: :func:`active_kernel`); both give the
    same counts. Work is split over ``threads`` in blocks of bounded size.
    """
    n = int(keys.a_lo.size)
    cand = np.asarray(candidates, dtype=np.uint64)
    if n == 0 or cand.size == 0:
        return np.zeros(cand.size, dtype=np.int64)
    y = np.asarray(buckets, dtype=np.uint64)
    start, end = bucket_starts(y, g), bucket_starts(y + np.uint64(1), g)
    lower = start << _S32
    width = (end - start) << _S32
    offset = keys.b - lower  # wraps mod 2^64, as intended
    x_lo = cand & _LOW32
    hi = cand >> _S32
    if resolve_kernel(kernel) == "numba":
        return _count_compiled(keys.a_lo, keys.a_hi, offset, width, x_lo, hi, threads)
    x_hi = hi if bool(hi.any()) else None

    def by_users(i: int, j: int) -> NDArray[np.int64]:
        return _count_block_range(keys, offset, width, x_lo, x_hi, i, j)

    n_threads = max(1, min(threads or default_threads(), n // 2048 + 1))
    parts = _numpy_threads(by_users, n, n_threads)
    return parts[0] if len(parts) == 1 else np.sum(parts, axis=0)


def _pool_block_range(
    keys: HashKeys, flat: NDArray[np.int64], g: int, cand: U64, lo: int, hi: int
) -> NDArray[np.int64]:
    n_seeds = keys.a_lo.size
    block = max(1, _BLOCK_ELEMENTS // n_seeds)
    out = np.zeros(hi - lo, dtype=np.int64)
    row_base = (np.arange(n_seeds, dtype=np.uint64) * np.uint64(g))[:, None]
    x_lo_all = cand & _LOW32
    x_hi_all = cand >> _S32
    use_hi = bool(x_hi_all.any())
    t_buf = np.empty((n_seeds, block), dtype=np.uint64)
    u_buf = np.empty((n_seeds, block), dtype=np.uint64) if use_hi else None
    for s in range(lo, hi, block):
        e = min(s + block, hi)
        t = t_buf[:, : e - s]
        np.multiply(keys.a_lo[:, None], x_lo_all[None, s:e], out=t)
        if use_hi and u_buf is not None:
            u = u_buf[:, : e - s]
            np.multiply(keys.a_hi[:, None], x_hi_all[None, s:e], out=u)
            t += u
        t += keys.b[:, None]
        t >>= _S32
        t *= np.uint64(g)
        t >>= _S32
        t += row_base
        out[s - lo : e - lo] = np.take(flat, t.view(np.int64)).sum(axis=0)
    return out


def pool_support(
    keys: HashKeys,
    matrix: NDArray[np.int64],
    g: int,
    candidates: U64,
    threads: int | None = None,
    kernel: str | None = None,
) -> NDArray[np.int64]:
    """Seed-pool OLH support: Σ_s M[s, bucket_s(x)] per candidate x, for an S×g matrix M.

    ``kernel`` as in :func:`count_matches`; O(S·|C|) in blocks of bounded size.
    """
    cand = np.asarray(candidates, dtype=np.uint64)
    flat = np.ascontiguousarray(matrix, dtype=np.int64).reshape(-1)
    if cand.size == 0 or keys.a_lo.size == 0:
        return np.zeros(cand.size, dtype=np.int64)
    if resolve_kernel(kernel) == "numba":
        return _pool_compiled(keys, flat, g, cand, threads)

    def by_candidates(i: int, j: int) -> NDArray[np.int64]:
        return _pool_block_range(keys, flat, g, cand, i, j)

    n_threads = max(1, min(threads or default_threads(), cand.size // 64 + 1))
    parts = _numpy_threads(by_candidates, cand.size, n_threads)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
