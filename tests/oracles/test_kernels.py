"""The compiled (numba) and numpy decode kernels give exactly the same counts, equal to the
definition bucket_j(x) == y_j, on random and edge-case inputs; the switch between them works."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedhh.errors import ParameterError
from fedhh.oracles import OLH, OLHPool, hashing
from fedhh.oracles.hashing import (
    HashKeys,
    active_kernel,
    bucket_of,
    count_matches,
    hash32,
    pool_support,
)

EDGE_KEYS = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 2, 2**64 - 1]
G_VALUES = [2, 3, 8, 55, 1000, 2**20 + 7, 2**31]

key_st = st.one_of(
    st.sampled_from(EDGE_KEYS),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
)


def _reference_counts(keys: HashKeys, buckets: np.ndarray, g: int, cand: np.ndarray) -> np.ndarray:
    """The definition: for each candidate, how many reports' bucket of it is the reported one."""
    return np.array(
        [
            int(
                (bucket_of(hash32(keys, np.full(keys.a_lo.size, c, np.uint64)), g) == buckets).sum()
            )
            for c in cand.tolist()
        ],
        dtype=np.int64,
    )


def _reference_pool(keys: HashKeys, matrix: np.ndarray, g: int, cand: np.ndarray) -> np.ndarray:
    rows = np.arange(keys.a_lo.size)
    out = []
    for c in cand.tolist():
        b = bucket_of(hash32(keys, np.full(keys.a_lo.size, c, np.uint64)), g).astype(np.int64)
        out.append(int(matrix[rows, b].sum()))
    return np.array(out, dtype=np.int64)


def _reports(
    rng: np.random.Generator, n: int, g: int, cand: np.ndarray
) -> tuple[HashKeys, np.ndarray]:
    """Random seeds and buckets; about half the reports hold a candidate's true bucket, so the
    counts are far from the all-miss case."""
    keys = HashKeys.from_seeds(rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False))
    y = rng.integers(0, g, size=n, dtype=np.uint64)
    if n and cand.size:
        held = cand[rng.integers(0, cand.size, size=n)]
        true = bucket_of(hash32(keys, held), g)
        y = np.where(rng.random(n) < 0.5, true, y)
    return keys, y.astype(np.uint32)


def _both(
    decode: Callable[..., np.ndarray],
    keys: HashKeys,
    data: np.ndarray,
    g: int,
    cand: np.ndarray,
    threads: int | None = None,
) -> np.ndarray:
    """``decode``'s counts with the compiled and the numpy kernel, checked to be the same."""
    fast = decode(keys, data, g, cand, threads, kernel="numba")
    slow = decode(keys, data, g, cand, threads, kernel="numpy")
    assert fast.dtype == slow.dtype == np.int64
    np.testing.assert_array_equal(fast, slow)
    return fast


_both_olh = partial(_both, count_matches)  # data: the reports' buckets
_both_pool = partial(_both, pool_support)  # data: the S×g count matrix


# --- random inputs ----------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    cand=st.lists(key_st, min_size=1, max_size=40, unique=True),
    g=st.one_of(st.sampled_from(G_VALUES), st.integers(2, 2**31)),
)
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
def test_olh_kernels_agree_with_each_other_and_the_definition(
    seed: int, n: int, cand: list[int], g: int
) -> None:
    rng = np.random.default_rng(seed)
    c = np.array(cand, dtype=np.uint64)
    keys, y = _reports(rng, n, g, c)
    got = _both_olh(keys, y, g, c)
    np.testing.assert_array_equal(got, _reference_counts(keys, y, g, c))


@given(
    seed=st.integers(0, 2**32 - 1),
    pool=st.integers(1, 200),
    cand=st.lists(key_st, min_size=1, max_size=40, unique=True),
    g=st.sampled_from([2, 3, 8, 55, 301]),
)
@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
def test_pool_kernels_agree_with_each_other_and_the_definition(
    seed: int, pool: int, cand: list[int], g: int
) -> None:
    rng = np.random.default_rng(seed)
    c = np.array(cand, dtype=np.uint64)
    keys = HashKeys.from_seeds(rng.integers(0, 2**64, size=pool, dtype=np.uint64, endpoint=False))
    matrix = rng.integers(0, 2**40, size=(pool, g), dtype=np.int64)
    got = _both_pool(keys, matrix, g, c)
    np.testing.assert_array_equal(got, _reference_pool(keys, matrix, g, c))


# --- edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("g", G_VALUES)
def test_olh_edge_keys_and_g(g: int) -> None:
    """Candidates 0, 2^64 − 1 and around 2^32 (high half used), tiles of 8 with and without
    high halves, and a tail of single candidates."""
    rng = np.random.default_rng(g)
    lows = rng.choice(2**32, size=21, replace=False).astype(np.uint64)
    cand = np.unique(np.concatenate([np.array(EDGE_KEYS, dtype=np.uint64), lows]))
    keys, y = _reports(rng, 777, g, cand)
    got = _both_olh(keys, y, g, cand)
    np.testing.assert_array_equal(got, _reference_counts(keys, y, g, cand))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9])
@pytest.mark.parametrize("n_cand", [1, 7, 8, 9, 17])
def test_olh_tiny_shapes(n: int, n_cand: int) -> None:
    rng = np.random.default_rng(100 * n + n_cand)
    cand = rng.choice(2**40, size=n_cand, replace=False).astype(np.uint64)
    keys, y = _reports(rng, n, 8, cand)
    got = _both_olh(keys, y, 8, cand)
    assert got.shape == (n_cand,)
    np.testing.assert_array_equal(got, _reference_counts(keys, y, 8, cand))


def test_empty_inputs() -> None:
    keys, y = _reports(np.random.default_rng(0), 0, 8, np.zeros(0, np.uint64))
    none = np.zeros(0, dtype=np.uint64)
    for kernel in ("numba", "numpy"):
        assert count_matches(keys, y, 8, np.array([5], np.uint64), kernel=kernel).tolist() == [0]
        assert count_matches(keys, y, 8, none, kernel=kernel).shape == (0,)
        keys1 = HashKeys.from_seeds(np.array([1], np.uint64))
        assert pool_support(keys1, np.ones((1, 8), np.int64), 8, none, kernel=kernel).shape == (0,)


@pytest.mark.parametrize("pool", [1, 2, 5, 4096, 70_000])
def test_pool_sizes(pool: int) -> None:
    rng = np.random.default_rng(pool)
    g = 8
    cand = np.unique(
        np.concatenate(
            [np.array(EDGE_KEYS, dtype=np.uint64), rng.choice(2**45, 50).astype(np.uint64)]
        )
    )
    keys = HashKeys.from_seeds(rng.integers(0, 2**64, size=pool, dtype=np.uint64, endpoint=False))
    matrix = rng.integers(0, 1000, size=(pool, g), dtype=np.int64)
    got = _both_pool(keys, matrix, g, cand)
    if pool <= 4096:
        np.testing.assert_array_equal(got, _reference_pool(keys, matrix, g, cand))


def test_non_contiguous_and_read_only_inputs() -> None:
    rng = np.random.default_rng(5)
    cand_all = rng.choice(2**50, size=90, replace=False).astype(np.uint64)
    keys_all, y_all = _reports(rng, 2000, 8, cand_all)
    strided = HashKeys(keys_all.a_lo[::2], keys_all.a_hi[::2], keys_all.b[::2])
    y, cand = y_all[::2], cand_all[::3]
    assert not strided.a_lo.flags.c_contiguous and not cand.flags.c_contiguous
    got = _both_olh(strided, y, 8, cand)
    contiguous = HashKeys(
        *(np.ascontiguousarray(a) for a in (strided.a_lo, strided.a_hi, strided.b))
    )
    np.testing.assert_array_equal(
        got, _reference_counts(contiguous, y, 8, np.ascontiguousarray(cand))
    )
    # read-only arrays (as decoded from bytes) and a transposed (Fortran-order) pool matrix
    ro = cand.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(_both_olh(strided, y, 8, ro), got)
    pool_keys = HashKeys.from_seeds(np.arange(64, dtype=np.uint64))
    matrix = np.asfortranarray(rng.integers(0, 100, size=(64, 8), dtype=np.int64))
    matrix.flags.writeable = False
    np.testing.assert_array_equal(
        _both_pool(pool_keys, matrix, 8, cand),
        _reference_pool(pool_keys, np.ascontiguousarray(matrix), 8, np.ascontiguousarray(cand)),
    )


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("n", "n_cand"), [(5000, 3), (5000, 200), (10, 500)])
def test_thread_splits_give_the_same_counts(
    monkeypatch: pytest.MonkeyPatch, threads: int, n: int, n_cand: int
) -> None:
    """Both ways of splitting the work (by candidates, by reports/seeds) and one thread agree."""
    monkeypatch.setattr(hashing, "_PARALLEL_MIN_EVALUATIONS", 1)
    rng = np.random.default_rng(n + n_cand)
    cand = rng.choice(2**34, size=n_cand, replace=False).astype(np.uint64)
    keys, y = _reports(rng, n, 8, cand)
    np.testing.assert_array_equal(
        _both_olh(keys, y, 8, cand, threads), _reference_counts(keys, y, 8, cand)
    )
    matrix = rng.integers(0, 50, size=(n, 8), dtype=np.int64)
    np.testing.assert_array_equal(
        _both_pool(keys, matrix, 8, cand, threads), _reference_pool(keys, matrix, 8, cand)
    )


def test_kernel_blocks_cover_every_report() -> None:
    """The compiled loops called directly with tiny report/seed blocks equal one big block."""
    kernels = hashing.compiled_kernels()
    rng = np.random.default_rng(9)
    cand = rng.choice(2**33, size=29, replace=False).astype(np.uint64)
    keys, y = _reports(rng, 1001, 8, cand)
    words = [keys.a_lo, keys.a_hi, keys.b - (hashing.bucket_starts(y, 8) << np.uint64(32))]
    width = (hashing.bucket_starts(y + 1, 8) - hashing.bucket_starts(y, 8)) << np.uint64(32)
    x_lo, x_hi = cand & np.uint64(0xFFFFFFFF), cand >> np.uint64(32)
    ref = _reference_counts(keys, y, 8, cand)
    for block in (1, 3, 64, 1001, 5000):
        out = np.zeros(cand.size, dtype=np.int64)
        kernels.olh_support(*words, width, x_lo, x_hi, out, block)
        np.testing.assert_array_equal(out, ref)
    for g in (8, 55):  # the select loop (g ≤ 8) and the gather loop in seed blocks
        keys_g = HashKeys.from_seeds(np.arange(1001, dtype=np.uint64))
        matrix = rng.integers(0, 9, size=(1001, g), dtype=np.int64)
        pref = _reference_pool(keys_g, matrix, g, cand)
        for block in (1, 7, 1001, 5000):
            out = np.zeros(cand.size, dtype=np.int64)
            flat = matrix.reshape(-1)
            kernels.pool_support(
                keys_g.a_lo, keys_g.a_hi, keys_g.b, flat, g, x_lo, x_hi, out, block
            )
            np.testing.assert_array_equal(out, pref)


@pytest.mark.parametrize("g", [3, 8, 55])
def test_wide_candidate_sets(g: int) -> None:
    """Thousands of candidates (several candidate blocks), sorted so that some blocks are all
    below 2^32 and one mixes both halves."""
    rng = np.random.default_rng(g)
    cand = np.sort(
        np.concatenate(
            [
                rng.choice(2**32, size=4000, replace=False).astype(np.uint64),
                rng.choice(2**20, size=1500, replace=False).astype(np.uint64) + np.uint64(2**32),
            ]
        )
    )
    keys, y = _reports(rng, 300, g, cand)
    np.testing.assert_array_equal(_both_olh(keys, y, g, cand), _reference_counts(keys, y, g, cand))
    matrix = rng.integers(0, 1000, size=(300, g), dtype=np.int64)
    np.testing.assert_array_equal(
        _both_pool(keys, matrix, g, cand), _reference_pool(keys, matrix, g, cand)
    )


# --- oracles end to end and the switch --------------------------------------------------------


def test_oracles_decode_the_same_with_either_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    vals = rng.integers(0, 2**45, size=20_000, dtype=np.uint64)
    cand = np.unique(np.concatenate([vals[:500], np.arange(40, dtype=np.uint64)]))
    for oracle in (OLH(2.0), OLHPool(2.0, pool_size=512), OLH(0.5, g=2), OLHPool(6.0)):
        rep = oracle.perturb(vals, np.random.default_rng(4))
        monkeypatch.setenv("FEDHH_KERNEL", "numba")
        fast = oracle.support(rep, cand).counts
        monkeypatch.setenv("FEDHH_KERNEL", "numpy")
        np.testing.assert_array_equal(oracle.support(rep, cand).counts, fast)


def test_compiled_kernel_is_the_default() -> None:
    """numba is a dependency: unless FEDHH_KERNEL says otherwise, every oracle test runs the
    compiled kernel."""
    if os.environ.get("FEDHH_KERNEL", "") in ("", "auto", "numba"):
        assert active_kernel() == "numba"


def test_switch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHH_KERNEL", "numpy")
    assert active_kernel() == "numpy"
    monkeypatch.setenv("FEDHH_KERNEL", "NUMBA")
    assert active_kernel() == "numba"
    monkeypatch.setenv("FEDHH_KERNEL", "cuda")
    with pytest.raises(ParameterError, match="FEDHH_KERNEL"):
        active_kernel()
    with pytest.raises(ParameterError, match="kernel"):
        count_matches(
            HashKeys.from_seeds(np.ones(1, np.uint64)),
            np.zeros(1, np.uint32),
            8,
            np.ones(1, np.uint64),
            kernel="c",
        )


_FALLBACK_SCRIPT = """
import sys
if sys.argv[1] == "blocked":
    sys.modules["numba"] = None  # numba not importable
import numpy as np
from fedhh.oracles import OLH, OLHPool
from fedhh.oracles.hashing import active_kernel
rng = np.random.default_rng(0)
vals = rng.integers(0, 2**40, size=3000, dtype=np.uint64)
cand = np.unique(vals[:100])
out = [active_kernel()]
for o in (OLH(2.0), OLHPool(2.0, pool_size=64)):
    rep = o.perturb(vals, np.random.default_rng(1))
    out.append(",".join(map(str, o.support(rep, cand).counts)))
print("|".join(out))
"""


def _run_fallback(mode: str, kernel_env: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEDHH_KERNEL"}
    if kernel_env is not None:
        env["FEDHH_KERNEL"] = kernel_env
    proc = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("|")


def test_fallback_without_numba_and_by_switch() -> None:
    """In fresh processes: without numba the numpy kernel is active and gives the same counts
    as the compiled default; FEDHH_KERNEL=numpy selects it; FEDHH_KERNEL=numba without numba
    is a clear error."""
    default = _run_fallback("plain", None)
    blocked = _run_fallback("blocked", None)
    switched = _run_fallback("plain", "numpy")
    assert default[0] == "numba" and blocked[0] == "numpy" and switched[0] == "numpy"
    assert default[1:] == blocked[1:] == switched[1:]
    env = {**os.environ, "FEDHH_KERNEL": "numba"}
    proc = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT, "blocked"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "numba decode kernel is not available" in proc.stderr
