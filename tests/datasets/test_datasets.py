"""Tests of fedhh.datasets: Zipf labels and party sizes, synthetic non-IID splits, partitioning,
the FederatedDataset value. The file loaders are in test_datasets_loaders.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dataset_checks import assert_consistent
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core.items import IntCodec
from fedhh.core.metrics import true_top_k
from fedhh.datasets import (
    FederatedDataset,
    apportion,
    partition,
    size_weights,
    synthetic_zipf,
    zipf_labels,
)
from fedhh.errors import DataError, ParameterError

# --- helpers ----------------------------------------------------------------------------------


def local_tops(ds: FederatedDataset, k: int) -> list[set[int]]:
    tops = []
    for i in range(ds.n_parties):
        codes, counts = ds.party_counts(i)
        tops.append(set(true_top_k((codes, counts), k).tolist()))
    return tops


def mean_pairwise_overlap(ds: FederatedDataset, k: int) -> float:
    tops = local_tops(ds, k)
    return float(np.mean([len(a & b) / k for a, b in itertools.combinations(tops, 2)]))


def mean_max_share(ds: FederatedDataset, n_top: int) -> float:
    """Mean over the top items of the largest share of the item's users held by one party."""
    codes = ds.top_k(n_top)
    mat = np.array([[np.count_nonzero(p == c) for p in ds.parties] for c in codes])
    return float(np.mean(mat.max(axis=1) / mat.sum(axis=1)))


# --- labels, weights, sizes -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(1, 1), (8, 3), (5, 3), (1000, 12), (10_000, 32), (50, 64)])
def test_zipf_labels_distinct_and_in_range(n: int, m: int) -> None:
    labels = zipf_labels(n, m, np.random.default_rng(1))
    assert labels.dtype == np.uint64
    assert labels.size == n
    assert np.unique(labels).size == n
    if m < 64:
        assert int(labels.max()) < 1 << m
    np.testing.assert_array_equal(labels, zipf_labels(n, m, 1))


def test_zipf_labels_random_order_and_limits() -> None:
    labels = zipf_labels(1000, 32, 7)
    assert not np.all(np.diff(labels.astype(np.float64)) > 0)  # not sorted: label ↔ rank random
    assert sorted(zipf_labels(8, 3, 0).tolist()) == list(range(8))
    with pytest.raises(ParameterError, match="2\\^3"):
        zipf_labels(9, 3, 0)
    with pytest.raises(ParameterError):
        zipf_labels(0, 8, 0)
    with pytest.raises(ParameterError):
        zipf_labels(4, 65, 0)


def test_size_weights_and_apportion() -> None:
    np.testing.assert_allclose(size_weights(4, "equal"), 0.25)
    w = size_weights(4, "skewed")
    np.testing.assert_allclose(w, np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
    np.testing.assert_allclose(size_weights(2, [1, 3]), [0.25, 0.75])
    assert apportion(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert apportion(3, [100, 1, 1]).tolist() == [1, 1, 1]  # everyone gets one user
    sizes = apportion(1_000_003, size_weights(7, "skewed"))
    assert sizes.sum() == 1_000_003
    assert np.all(np.diff(sizes) <= 0)
    for bad in ("huge", [1, 2], [1, -1, 1], [1, np.nan, 1]):
        with pytest.raises(ParameterError):
            size_weights(3, bad)
    with pytest.raises(ParameterError, match="every party needs a user"):
        apportion(2, [1, 1, 1])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10**7), st.lists(st.floats(0.01, 100), min_size=1, max_size=20))
def test_apportion_is_exact(total: int, weights: list[float]) -> None:
    if total < len(weights):
        with pytest.raises(ParameterError):
            apportion(total, weights)
        return
    sizes = apportion(total, weights)
    assert sizes.sum() == total
    assert np.all(sizes >= 1)
    ideal = (total - len(weights)) * np.asarray(weights) / sum(weights) + 1
    assert np.all(np.abs(sizes - ideal) < 1 + 1e-6)


# --- synthetic_zipf ---------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["iid", "dirichlet", "permutation"])
@pytest.mark.parametrize("sizes", ["equal", "skewed"])
def test_synthetic_shapes_and_counts(split: str, sizes: str) -> None:
    ds = synthetic_zipf(50_000, 6, m=20, n_items=3000, split=split, sizes=sizes, rng=3)
    assert ds.n_parties == 6
    assert ds.m == 20
    assert ds.n_users == 50_000
    assert isinstance(ds.codec, IntCodec) and ds.codec.m == 20
    assert_consistent(ds)
    assert ds.params["split"] == split
    top = ds.top_k(10)
    np.testing.assert_array_equal(top, true_top_k((ds.global_codes, ds.global_counts), 10))
    assert ds.count_of(top).tolist() == sorted(ds.count_of(top).tolist(), reverse=True)
    assert ds.decode(top[:1]) == [int(top[0])]
    text = ds.describe()
    assert "50,000 users in 6 parties" in text and "m=20" in text


def test_synthetic_iid_sizes_are_exact() -> None:
    ds = synthetic_zipf(10_001, 4, split="iid", sizes="skewed", seed=0)
    np.testing.assert_array_equal(ds.party_sizes, apportion(10_001, size_weights(4, "skewed")))
    eq = synthetic_zipf(10_001, 4, split="dirichlet", alpha=float("inf"), seed=0)
    assert eq.params["split"] == "iid"
    assert eq.party_sizes.tolist() == [2501, 2500, 2500, 2500]


def test_synthetic_deterministic_under_seed() -> None:
    kw = {"m": 24, "n_items": 500, "split": "dirichlet", "alpha": 0.3}
    a = synthetic_zipf(20_000, 5, seed=42, **kw)  # type: ignore[arg-type]
    b = synthetic_zipf(20_000, 5, rng=np.random.default_rng(42), **kw)  # type: ignore[arg-type]
    c = synthetic_zipf(20_000, 5, seed=43, **kw)  # type: ignore[arg-type]
    for pa, pb in zip(a.parties, b.parties, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert not all(
        pa.size == pc.size and np.array_equal(pa, pc)
        for pa, pc in zip(a.parties, c.parties, strict=True)
    )


def test_synthetic_follows_zipf() -> None:
    ds = synthetic_zipf(400_000, 3, n_items=1000, s=1.2, split="iid", seed=5)
    top = np.sort(ds.global_counts)[::-1][:5].astype(np.float64)
    p = np.arange(1, 1001, dtype=np.float64) ** -1.2
    expected = 400_000 * p[:5] / p.sum()
    np.testing.assert_allclose(top, expected, rtol=0.05)


def test_dirichlet_small_alpha_is_more_skewed_than_iid() -> None:
    kw = {"n_items": 2000, "seed": 11}
    iid = mean_max_share(synthetic_zipf(200_000, 5, split="iid", **kw), 50)  # type: ignore[arg-type]
    a1 = mean_max_share(synthetic_zipf(200_000, 5, alpha=1.0, **kw), 50)  # type: ignore[arg-type]
    a01 = mean_max_share(synthetic_zipf(200_000, 5, alpha=0.1, **kw), 50)  # type: ignore[arg-type]
    assert iid < 0.3  # 1/5 plus sampling noise
    assert a01 > 0.7  # most of an item's users in one party
    assert iid + 0.15 < a1 < a01 - 0.15


def test_permutation_split_local_tops_overlap_partly() -> None:
    kw = {"n_items": 2000, "seed": 3}
    iid = synthetic_zipf(200_000, 5, split="iid", **kw)  # type: ignore[arg-type]
    perm = synthetic_zipf(200_000, 5, split="permutation", permute=0.5, **kw)  # type: ignore[arg-type]
    none = synthetic_zipf(200_000, 5, split="permutation", permute=0.0, **kw)  # type: ignore[arg-type]
    assert mean_pairwise_overlap(iid, 10) > 0.9
    assert mean_pairwise_overlap(none, 10) > 0.9  # permute=0: every party has the same Zipf
    overlap = mean_pairwise_overlap(perm, 10)
    assert 0.05 < overlap < 0.6
    np.testing.assert_array_equal(perm.party_sizes, [40_000] * 5)  # exact sizes


def test_skewed_sizes_are_skewed() -> None:
    ds = synthetic_zipf(100_000, 8, sizes="skewed", split="iid", seed=1)
    sizes = ds.party_sizes
    assert np.all(np.diff(sizes) <= 0)
    assert sizes[0] / sizes[-1] == pytest.approx(8, rel=0.01)
    dirich = synthetic_zipf(100_000, 8, n_items=5000, sizes="skewed", alpha=1.0, seed=1)
    assert dirich.party_sizes[0] > 3 * dirich.party_sizes[-1]  # E[size_i] ∝ 1/(i+1)
    equal = synthetic_zipf(100_000, 8, sizes="equal", split="iid", seed=1)
    assert equal.party_sizes.max() - equal.party_sizes.min() <= 1


@pytest.mark.parametrize("split", ["dirichlet", "permutation"])
def test_every_party_gets_a_user(split: str) -> None:
    for seed in range(5):
        ds = synthetic_zipf(
            12, 12, n_items=3, split=split, alpha=0.01, sizes="skewed", permute=1.0, seed=seed
        )
        assert np.all(ds.party_sizes >= 1)
        assert_consistent(ds)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_users": 3, "n_parties": 4},
        {"n_parties": 0},
        {"n_users": 0},
        {"alpha": 0.0},
        {"alpha": -1.0},
        {"alpha": float("nan")},
        {"s": 0.0},
        {"s": -1.0},
        {"s": float("inf")},
        {"m": 0},
        {"m": 65},
        {"m": 3, "n_items": 9},
        {"n_items": 0},
        {"split": "random"},
        {"sizes": "tiny"},
        {"permute": 1.5},
        {"permute": -0.1},
        {"rng": -1},
        {"rng": "seed"},
        {"rng": 1, "seed": 2},
        {"n_parties": 2.5},
    ],
)
def test_synthetic_bad_parameters(kwargs: dict[str, object]) -> None:
    args = {"n_users": 100, "n_parties": 2, **kwargs}
    with pytest.raises(ParameterError):
        synthetic_zipf(**args)  # type: ignore[arg-type]


def test_synthetic_large_population() -> None:
    ds = synthetic_zipf(2_000_000, 20, m=32, alpha=0.5, seed=9)
    assert ds.n_users == 2_000_000
    assert_consistent(ds)


# --- partition --------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["iid", "dirichlet", "permutation"])
@pytest.mark.parametrize("sizes", ["equal", "skewed"])
def test_partition_preserves_the_population(split: str, sizes: str) -> None:
    rng = np.random.default_rng(0)
    codes = rng.zipf(1.5, size=30_000).astype(np.uint64) % np.uint64(5000)
    parts = partition(codes, 7, split=split, sizes=sizes, rng=1)
    assert len(parts) == 7
    assert all(p.size >= 1 and p.dtype == np.uint64 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(codes))
    again = partition(codes, 7, split=split, sizes=sizes, seed=1)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_partition_non_iid_rules() -> None:
    codes = synthetic_zipf(200_000, 1, n_items=2000, seed=2).parties[0]
    iid = FederatedDataset("p", 32, partition(codes, 5, split="iid", seed=0), IntCodec(32))
    dirich = FederatedDataset("p", 32, partition(codes, 5, alpha=0.1, seed=0), IntCodec(32))
    perm = FederatedDataset("p", 32, partition(codes, 5, split="permutation", seed=0), IntCodec(32))
    assert mean_max_share(iid, 50) + 0.3 < mean_max_share(dirich, 50)
    assert mean_pairwise_overlap(perm, 10) < mean_pairwise_overlap(iid, 10) - 0.2
    assert mean_pairwise_overlap(perm, 10) > 0.05


def test_partition_errors() -> None:
    with pytest.raises(ParameterError, match="every party needs a user"):
        partition(np.arange(3), 4, seed=0)
    with pytest.raises(ParameterError):
        partition(np.array([1.5, 2.0]), 1, seed=0)
    with pytest.raises(ParameterError):
        partition(np.array([[1, 2]]), 1, seed=0)
    with pytest.raises(ParameterError):
        partition(np.arange(10), 2, split="dirichlet", alpha=0, seed=0)


def test_single_party() -> None:
    parts = partition(np.array([3, 1, 2, 3]), 1, seed=0)
    assert sorted(parts[0].tolist()) == [1, 2, 3, 3]


# --- FederatedDataset -------------------------------------------------------------------------


def test_dataset_constructor_checks() -> None:
    parts = [np.array([1, 2, 2], dtype=np.uint64), np.array([2, 7])]
    ds = FederatedDataset("d", 8, parts, IntCodec(8))
    assert ds.global_codes.tolist() == [1, 2, 7]
    assert ds.global_counts.tolist() == [1, 3, 1]
    assert ds.count_of([2, 5, 7]).tolist() == [3, 0, 1]
    assert ds.party_sizes.tolist() == [3, 2]
    assert ds.top_k(1).tolist() == [2]
    with pytest.raises(ValueError):
        ds.parties[0][0] = 5  # read-only: the cached counts stay exact
    scores = ds.evaluate([2, 1], [3.0, 2.0], 2)
    assert scores.precision == 1.0 and scores.are == pytest.approx(0.5)
    with pytest.raises(ParameterError, match="codec"):
        FederatedDataset("d", 16, parts, IntCodec(8))
    with pytest.raises(DataError, match="party 1 has no users"):
        FederatedDataset("d", 8, [parts[0], np.array([], dtype=np.uint64)], IntCodec(8))
    with pytest.raises(DataError, match="party 0"):
        FederatedDataset("d", 2, [np.array([7])], IntCodec(2))
    with pytest.raises(ParameterError):
        FederatedDataset("d", 8, [], IntCodec(8))
    with pytest.raises(DataError, match="precomputed"):
        FederatedDataset("d", 8, parts, IntCodec(8), precomputed=([1, 2, 7], [1, 3, 2]))
