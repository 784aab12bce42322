"""Tests of the file loaders of fedhh.datasets: the AOL query log, one file (or CSV column) per
party, the baby-names federation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from dataset_checks import assert_consistent

from fedhh import datasets
from fedhh.core.items import IntCodec, StringCodec
from fedhh.datasets import (
    FederatedDataset,
    find_data_file,
    load_aol,
    load_babynames,
    load_csv_column,
    load_party_files,
)
from fedhh.errors import DataError, ParameterError

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
