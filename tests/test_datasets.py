"""Tests of fedhh.datasets: synthetic non-IID splits, partitioning, the AOL loader, user files."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh import codes as cd
from fedhh import datasets
from fedhh.codec import IntCodec, StringCodec
from fedhh.datasets import (
    FederatedDataset,
    apportion,
    find_data_file,
    load_aol,
    load_babynames,
    load_csv_column,
    load_party_files,
    partition,
    size_weights,
    synthetic_zipf,
    zipf_labels,
)
from fedhh.errors import DataError, ParameterError
from fedhh.metrics import true_top_k

# --- helpers ----------------------------------------------------------------------------------


def assert_consistent(ds: FederatedDataset) -> None:
    """Parties are uint64 arrays whose concatenation has exactly the global counts."""
    assert len(ds.parties) == ds.n_parties
    ndim = 1 if ds.m <= 64 else 2  # fedhh.codes: (n, W) words above 64 bits
    assert all(p.dtype == np.uint64 and p.ndim == ndim and p.size > 0 for p in ds.parties)
    codes, counts = cd.unique_counts(np.concatenate(ds.parties))
    np.testing.assert_array_equal(codes, ds.global_codes)
    np.testing.assert_array_equal(counts, ds.global_counts)
    assert ds.global_codes.dtype == np.uint64
    assert ds.global_counts.dtype == np.int64
    assert ds.n_users == int(ds.party_sizes.sum()) == int(ds.global_counts.sum())
    assert ds.n_distinct == cd.count(ds.global_codes)
    if ds.m < 64:
        assert int(ds.global_codes.max()) < 1 << ds.m


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


# --- AOL --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aol() -> FederatedDataset:
    return load_aol(n_parties=8, seed=0)


def test_aol_default_search_and_sizes(aol: FederatedDataset) -> None:
    assert aol.name == "aol"
    assert aol.m == 48
    assert isinstance(aol.codec, StringCodec) and aol.codec.width == 6
    assert aol.n_users == 657_427
    assert aol.n_distinct == 120_978
    assert aol.n_parties == 8
    assert_consistent(aol)


def test_aol_top_items(aol: FederatedDataset) -> None:
    top = aol.top_k(2)
    first, second = aol.decode(top)
    # the file pads short values with spaces: the top value is b"-     "
    assert first.rstrip(" ") == "-"
    assert second == "google"
    assert aol.count_of(top).tolist() == [18_720, 12_292]


def test_aol_invalid_utf8_values_load(aol: FederatedDataset) -> None:
    code = StringCodec(6).encode([b"www.b\xc3"])
    assert aol.count_of(code)[0] >= 1
    assert aol.decode(code)[0] == "www.b\\xc3"  # shown escaped
    assert aol.codec.item_bytes(code) == [b"www.b\xc3"]  # carried exactly


def test_aol_strip_trailing_spaces() -> None:
    ds = load_aol(n_parties=2, split="iid", seed=0, strip_trailing_spaces=True)
    assert ds.n_distinct == 120_978  # no two values merge
    assert ds.decode(ds.top_k(1)) == ["-"]


def test_aol_max_users_and_determinism(aol: FederatedDataset) -> None:
    a = load_aol(n_parties=4, split="permutation", sizes="skewed", seed=3, max_users=20_000)
    b = load_aol(n_parties=4, split="permutation", sizes="skewed", seed=3, max_users=20_000)
    assert a.n_users == 20_000
    assert_consistent(a)
    for pa, pb in zip(a.parties, b.parties, strict=True):
        np.testing.assert_array_equal(pa, pb)
    # a subsample without replacement never exceeds the full counts
    assert np.all(a.global_counts <= aol.count_of(a.global_codes))
    assert a.params["max_users"] == 20_000
    with pytest.raises(ParameterError):
        load_aol(n_parties=4, max_users=3, seed=0)


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.write(b"".join(lines))
    return path


def test_aol_data_dir_env_and_explicit_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_gz(
        data / datasets.AOL_FILE,
        [b"ab cd \t3\n", b"x\xff\t2\n", b"-     \t4\n", b"x\xff\t1\n"],
    )
    monkeypatch.setenv("FEDHH_DATA_DIR", str(data))
    ds = load_aol(n_parties=2, split="iid", seed=0)
    assert ds.n_users == 10
    assert ds.n_distinct == 3  # repeated values add up
    assert ds.count_of(StringCodec(6).encode([b"x\xff"])).tolist() == [3]
    assert ds.decode(ds.top_k(1)) == ["-     "]
    monkeypatch.delenv("FEDHH_DATA_DIR")
    ds2 = load_aol(data, n_parties=1, seed=0)  # a directory holding the file
    assert ds2.n_users == 10


def test_aol_not_found_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "proj"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(datasets.common, "_project_root", lambda: proj)
    monkeypatch.chdir(work)
    monkeypatch.setenv("FEDHH_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        load_aol(seed=0)
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg
    assert str(tmp_path / "shared" / "data") in msg
    assert "FEDHH_DATA_DIR" in msg
    with pytest.raises(DataError, match="not found"):
        find_data_file(path=tmp_path / "missing.txt.gz")


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([b"ab\t1\n", b"no tab here\n"], "line 2"),
        ([b"ab\t1\n", b"toolong\t1\n"], "line 2.*longer than 6"),
        ([b"ab\tx\n"], "line 1.*count"),
        ([b"ab\t-1\n"], "line 1.*count"),
        ([], "empty"),
    ],
)
def test_aol_bad_file(tmp_path: Path, lines: list[bytes], match: str) -> None:
    path = write_gz(tmp_path / "bad.txt.gz", lines)
    with pytest.raises(DataError, match=match):
        load_aol(path, n_parties=1, seed=0)


def test_aol_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        load_aol(path, n_parties=1, seed=0)


# --- user files -------------------------------------------------------------------------------


def test_party_files_round_trip_strings(tmp_path: Path) -> None:
    items = [["apple", "pear", "apple", " lead", "trail ", "é!"], ["kiwi", "apple"]]
    paths = []
    for i, party in enumerate(items):
        p = tmp_path / f"party{i}.txt"
        p.write_bytes(("\n".join(party) + "\n").encode("utf-8"))
        paths.append(p)
    (tmp_path / "crlf.txt").write_bytes(b"fig\r\nfig")  # CRLF, no final newline
    paths.append(tmp_path / "crlf.txt")
    ds = load_party_files(paths, codec=StringCodec(8), name="fruit")
    assert ds.name == "fruit"
    assert ds.party_sizes.tolist() == [6, 2, 2]
    assert ds.decode(ds.parties[0]) == items[0]  # files keep their order
    assert ds.decode(ds.parties[2]) == ["fig", "fig"]
    assert ds.decode(ds.top_k(1)) == ["apple"]
    assert_consistent(ds)


def test_party_files_bytes_and_gzip(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "p.txt.gz", [b"\xff\xfe\n", b"abcdefgh\n"])
    with pytest.raises(DataError, match=r"1 item.* longer than 4 bytes, e.g. 'abcdefgh'"):
        load_party_files(path, codec=StringCodec(4))
    ds = load_party_files(path, codec=StringCodec(4, truncate=True))
    assert StringCodec(4).to_bytes(ds.parties[0]) == [b"\xff\xfe", b"abcd"]  # truncated to 4
    assert ds.truncation() == {"item_bytes": 4, "distinct": 1, "users": 1}


def test_party_files_round_trip_ints(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("3\n 17 \n65535\n3\n")
    q = tmp_path / "b.txt"
    q.write_text("0\n")
    ds = load_party_files([p, q], codec=IntCodec(16))
    assert ds.decode(ds.parties[0]) == [3, 17, 65535, 3]
    assert ds.global_counts.tolist() == [1, 2, 1, 1]


@pytest.mark.parametrize(
    ("content", "codec", "match"),
    [
        (b"", StringCodec(4), "no items"),
        (b"a\n\nb\n", StringCodec(4), "line 2: empty item"),
        (b"a\x00b\n", StringCodec(4), "line 1: item holds a zero byte"),
        (b"1\nx\n", IntCodec(8), "line 2: expected a non-negative integer"),
        (b"1\n-4\n", IntCodec(8), "line 2"),
        (b"1\n2\n256\n", IntCodec(8), "line 3: integer 256 does not fit in 8 bits"),
        (b"1.5\n", IntCodec(8), "line 1"),
        (b"9" * 5000 + b"\n", IntCodec(64), "line 1"),
    ],
)
def test_party_file_errors(tmp_path: Path, content: bytes, codec: object, match: str) -> None:
    p = tmp_path / "party.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        load_party_files([p], codec=codec)  # type: ignore[arg-type]
    assert "party.txt" in str(info.value)


def test_party_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt"):
        load_party_files([tmp_path / "missing.txt"], codec=IntCodec(8))
    with pytest.raises(DataError, match="cannot read"):
        load_party_files([tmp_path], codec=IntCodec(8))  # a directory
    with pytest.raises(ParameterError):
        load_party_files([], codec=IntCodec(8))
    with pytest.raises(ParameterError):
        load_party_files([tmp_path / "x"], codec="utf8")  # type: ignore[arg-type]


def test_csv_column(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text('user,query,n\n1,"hello, world",5\n2,bye,7\n\n3,bye,9\n', encoding="utf-8")
    b = tmp_path / "b.csv"
    b.write_text("user,query,n\n4,bye,1\n", encoding="utf-8")
    ds = load_csv_column([a, b], "query", codec=StringCodec(8, truncate=True))
    assert ds.decode(ds.parties[0]) == ["hello, w", "bye", "bye"]
    assert ds.params["truncated_items"] == 1 and ds.params["truncated_users"] == 1
    assert ds.party_sizes.tolist() == [3, 1]
    ints = load_csv_column(a, 2, codec=IntCodec(8))
    assert ints.decode(ints.parties[0]) == [5, 7, 9]
    c = tmp_path / "c.csv"
    c.write_text("10;x\n20;y\n")
    raw = load_csv_column(c, 0, codec=IntCodec(8), header=False, delimiter=";")
    assert raw.decode(raw.parties[0]) == [10, 20]


def test_csv_column_errors(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("user,query\n1,x\n2\n")
    with pytest.raises(DataError, match="line 3"):
        load_csv_column(a, "query", codec=StringCodec(4))
    with pytest.raises(DataError, match="no column 'nope'"):
        load_csv_column(a, "nope", codec=StringCodec(4))
    b = tmp_path / "b.csv"
    b.write_text("user,n\n1,\n")
    with pytest.raises(DataError, match="line 2: empty item"):
        load_csv_column(b, "n", codec=IntCodec(8))
    e = tmp_path / "e.csv"
    e.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_csv_column(e, 0, codec=IntCodec(8))
    h = tmp_path / "h.csv"
    h.write_text("n\n")
    with pytest.raises(DataError, match="no items"):
        load_csv_column(h, "n", codec=IntCodec(8))
    u = tmp_path / "u.csv"
    u.write_bytes(b"q\n\xff\n")
    with pytest.raises(DataError, match="cannot read"):
        load_csv_column(u, "q", codec=StringCodec(4))
    with pytest.raises(DataError, match="cannot read"):
        load_csv_column(tmp_path / "missing.csv", 0, codec=IntCodec(8))
    with pytest.raises(ParameterError):
        load_csv_column(a, "query", codec=StringCodec(4), header=False)
    with pytest.raises(ParameterError):
        load_csv_column(a, -1, codec=StringCodec(4))


# --- the baby-names federation ----------------------------------------------------------------

BABY_HEADER = b"sector\tsex\tyear\tname\tcount\n"


def write_babynames(path: Path, rows: list[tuple[str, str, int, str, int]]) -> Path:
    lines = [BABY_HEADER] + [f"{s}\t{x}\t{y}\t{n}\t{c}\n".encode() for s, x, y, n, c in rows]
    return write_gz(path / datasets.BABYNAMES_FILE, lines)


# 'אבגדה' is 10 bytes (5 Hebrew letters), 'אב-גד' 9 bytes (a '-' shifts the letters by one byte)
BABY_ROWS = [
    ("Jewish", "F", 1990, "נועה", 5),
    ("Jewish", "F", 2001, "אבגדה", 7),
    ("Jewish", "M", 1995, "אבגדו", 2),
    ("Jewish", "M", 2003, "דוד", 9),
    ("Muslim", "M", 2003, "אב-גד", 3),
    ("Muslim", "F", 1999, "Lea", 4),
    ("Muslim", "F", 2001, "נועה", 1),
]


def test_babynames_parties_truncation_and_counts(tmp_path: Path) -> None:
    write_babynames(tmp_path, BABY_ROWS)
    whole = load_babynames(tmp_path, seed=0)  # a directory holding the file; names whole
    assert whole.m == 80 and whole.n_distinct == 6 and whole.truncation() is None
    assert "אבגדה" in whole.decode(whole.global_codes)
    with pytest.raises(DataError, match=r"3 names .12 births. are longer than 8 bytes"):
        load_babynames(tmp_path, item_bytes=8, seed=0)
    ds = load_babynames(tmp_path, item_bytes=8, truncate=True, seed=0)
    assert_consistent(ds)
    assert ds.name == "babynames" and ds.m == 64 and ds.n_users == 31
    assert ds.party_names == ("Jewish-F", "Jewish-M", "Muslim-F", "Muslim-M")
    assert ds.party_sizes.tolist() == [12, 11, 5, 3]
    # 'אבגדה' and 'אבגדו' both cut to 'אבגד' (8 bytes) and merge; 'אב-גד' (9 bytes) is cut at the
    # character boundary before the last letter: 'אב-ג' (7 bytes), never half a letter
    items = dict(zip(ds.decode(ds.global_codes), ds.global_counts.tolist(), strict=True))
    assert items == {"נועה": 6, "אבגד": 9, "דוד": 9, "אב-ג": 3, "Lea": 4}
    assert ds.params["truncated_names"] == 3 and ds.params["truncated_users"] == 12
    assert ds.params["names"] == 6
    note = ds.truncation_note()
    assert "3 of 6 distinct names" in note and "12 of 31 users" in note
    assert note in ds.describe() and "Jewish-F 12" in ds.describe()
    summary = ds.summary()
    assert summary["party_names"][0] == "Jewish-F" and summary["params"]["truncated_users"] == 12


def test_babynames_options(tmp_path: Path) -> None:
    write_babynames(tmp_path, BABY_ROWS)
    by_decade = load_babynames(tmp_path, party_by="sector-decade", seed=0)
    assert by_decade.party_names == ("Jewish-1990s", "Jewish-2000s", "Muslim-1990s", "Muslim-2000s")
    assert by_decade.party_sizes.tolist() == [7, 16, 4, 4]
    recent = load_babynames(tmp_path, years=(2000, 2024), item_bytes=4, truncate=True, seed=0)
    assert recent.n_users == 20 and recent.m == 32
    assert recent.party_names == ("Jewish-F", "Jewish-M", "Muslim-F", "Muslim-M")
    assert sorted(recent.decode(recent.global_codes)) == sorted(["אב", "דו", "נו"])
    sub = load_babynames(tmp_path, max_users=10, seed=3)
    assert sub.n_users == 10
    assert_consistent(sub)
    again = load_babynames(tmp_path, max_users=10, seed=3)
    for a, b in zip(sub.parties, again.parties, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"party_by": "sex"}, "party_by"),
        ({"item_bytes": 65}, "at most 64"),
        ({"years": (2010, 2000)}, "after"),
        ({"years": (1800, 1801)}, "no births in the years 1800-1801"),
        ({"max_users": 0}, "max_users"),
    ],
)
def test_babynames_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    write_babynames(tmp_path, BABY_ROWS)
    with pytest.raises((ParameterError, DataError), match=match):
        load_babynames(tmp_path, seed=0, **kwargs)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([b"name\tcount\n"], "expected the header"),
        ([BABY_HEADER], "no rows"),
        ([BABY_HEADER, b"Jewish\tF\t1990\tx\t1\n", b"Jewish\tF\t1990\t2\n"], "line 3.*5 tab"),
        ([BABY_HEADER, b"Jewish\tF\t19x0\tx\t1\n"], "line 2.*year"),
        ([BABY_HEADER, b"Jewish\tF\t1990\tx\t-1\n"], "line 2.*count"),
        ([BABY_HEADER, b"Jewish\tF\t1990\t\t1\n"], "line 2.*empty name"),
    ],
)
def test_babynames_bad_files(tmp_path: Path, lines: list[bytes], match: str) -> None:
    write_gz(tmp_path / datasets.BABYNAMES_FILE, lines)
    with pytest.raises(DataError, match=match):
        load_babynames(tmp_path, seed=0)


def test_babynames_real_file() -> None:
    ds = load_babynames(seed=0)
    assert_consistent(ds)
    assert ds.n_parties == 8 and ds.n_users == 8_969_719  # the sum of the file's counts
    assert int(ds.party_sizes.min()) == 33_336 and int(ds.party_sizes.max()) == 3_658_626
    assert ds.party_names[5] == "Jewish-M"
    top = ds.decode(ds.top_k(3))
    assert top == ["מוחמד", "יוסף", "דוד"]  # whole names (the widest is 21 bytes)
    assert ds.m == 168 and ds.truncation() is None
    ref = ds.reference(2.0, 16, 0, repeats=5)
    assert ref["oracle"].startswith("olh") and 0.8 < ref["f1"] <= 1.0
