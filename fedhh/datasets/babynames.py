"""The Israeli baby-names federation: a real, strongly non-IID federation (docs/mechanisms.md §9).

The file ``babynames_il.tsv.gz`` (shared data, never copied into the project) holds one line per
(sector, sex, year, name) after a header, ``sector<TAB>sex<TAB>year<TAB>name<TAB>count``: the
names given to at least 5 babies in a year, 1949–2024, 8,983,686 births in all. Every birth is one
user holding the name (its UTF-8 bytes). Parties are the sector × sex groups (8 parties, 33,336 to
3,658,626 births) or, with ``party_by="sector-decade"``, the sector × decade groups.

Names are Hebrew script, 2 bytes a letter: median 8 bytes, up to 21. By default every name is an
item of its full length: the item width is the longest name's (21 bytes, m = 168 bits, in the
whole file). A narrower ``item_bytes`` refuses names that do not fit, unless ``truncate``: then a
longer name is cut to the width at a UTF-8 character boundary (a letter is never cut in half, so
every item decodes as text), names that agree on their first bytes become one item, and the
number cut is recorded in the dataset's ``params`` (``truncated_names`` distinct names,
``truncated_users`` births) and shown by ``describe()``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedhh.core import codes as cd
from fedhh.core.items import MAX_WIDTH, StringCodec, display
from fedhh.datasets.common import (
    RngLike,
    StrPath,
    _check_int,
    _read_bytes,
    _split_lines,
    find_data_file,
    make_rng,
)
from fedhh.datasets.container import FederatedDataset
from fedhh.errors import DataError, ParameterError

__all__ = ["BABYNAMES_FILE", "PARTY_RULES", "load_babynames"]

BABYNAMES_FILE = "babynames_il.tsv.gz"
PARTY_RULES = ("sector-sex", "sector-decade")
_HEADER = b"sector\tsex\tyear\tname\tcount"
_FIELDS = 5


def _parse_ints(values: list[bytes], what: str, path: object) -> NDArray[np.int64]:
    """A column of non-negative integers; the first bad one raises DataError with its line."""
    try:
        out = np.array(values).astype(np.int64)
    except ValueError:
        out = None
    if out is None or (out.size and int(out.min()) < 0):
        for i, v in enumerate(values):
            if not v.strip().isdigit():
                raise DataError(
                    f"{path}, line {i + 2}: {what} must be a non-negative integer, got {v!r}"
                )
        raise DataError(f"{path}: bad {what} column")  # pragma: no cover - caught above
    return out


def _truncate(names: NDArray[np.bytes_], width: int) -> tuple[bytes, NDArray[np.int64]]:
    """Names (an ``S`` array) cut to at most ``width`` bytes at a UTF-8 character boundary and
    zero-padded: (back-to-back ``width``-byte records, the byte length of every name)."""
    lengths = np.char.str_len(names).astype(np.int64)
    mat = np.frombuffer(names.tobytes(), dtype=np.uint8).reshape(names.size, names.itemsize)
    if mat.shape[1] < width + 1:
        mat = np.pad(mat, ((0, 0), (0, width + 1 - mat.shape[1])))
    head = mat[:, : width + 1]
    starts = (head & 0xC0) != 0x80  # the byte begins a character (or is zero padding)
    cut = width - np.argmax(starts[:, ::-1], axis=1)  # keep bytes [0, cut): no partial letter
    kept = np.where(np.arange(width) < cut[:, None], head[:, :width], 0).astype(np.uint8)
    return kept.tobytes(), lengths


def load_babynames(
    path: StrPath | None = None,
    *,
    party_by: str = "sector-sex",
    years: tuple[int, int] | None = None,
    item_bytes: int | None = None,
    truncate: bool = False,
    max_users: int | None = None,
    rng: RngLike = None,
    seed: int | None = None,
) -> FederatedDataset:
    """The Israeli baby-names federation: one user per birth holding the name, parties by
    ``party_by`` ("sector-sex", 8 parties, or "sector-decade"), names as UTF-8 items of
    ``item_bytes`` bytes (m = 8·item_bytes; default: the longest name kept). A name longer than
    ``item_bytes`` raises DataError, or with ``truncate`` is cut at a character boundary.

    ``path`` is the file (or its directory), found like the AOL file by default
    (:func:`~fedhh.datasets.find_data_file`: ``$FEDHH_DATA_DIR``, ``../shared/data/``).
    ``years=(first, last)`` keeps the births of those years (inclusive). ``max_users`` keeps a
    random subset of that many births (without replacement, over all parties). Parties are
    ordered by label (e.g. ``Christian-Arab-F`` first) and named in ``party_names``; a party left
    without users by the filters is dropped. Users within a party are in random order (``rng``).
    Vectorised: the whole file (160k rows, 9M users) loads in about a second.
    """
    if party_by not in PARTY_RULES:
        raise ParameterError(f"party_by must be one of {', '.join(PARTY_RULES)}; got {party_by!r}")
    width = None if item_bytes is None else _check_int("item_bytes", item_bytes, 1)
    if width is not None and width > MAX_WIDTH:
        raise ParameterError(f"item_bytes must be at most {MAX_WIDTH}, got {width}")
    if years is not None:
        if len(years) != 2:
            raise ParameterError(f"years must be a pair (first, last), got {years!r}")
        first, last = (_check_int("year", y, 0) for y in years)
        if first > last:
            raise ParameterError(f"years: first year {first} is after the last {last}")
    if max_users is not None:
        max_users = _check_int("max_users", max_users, 1)
    gen = make_rng(rng, seed)
    file = find_data_file(BABYNAMES_FILE, path)
    data = _read_bytes(file)
    if b"\0" in data:
        raise DataError(f"{file} holds a zero byte: not a text file of names")
    lines = _split_lines(data)
    if not lines or lines[0].rstrip() != _HEADER:
        got = lines[0][:60] if lines else b""
        raise DataError(
            f"{file}: expected the header sector<TAB>sex<TAB>year<TAB>name<TAB>count, got {got!r}"
        )
    rows = lines[1:]
    if not rows:
        raise DataError(f"{file} has a header but no rows")
    fields = b"\t".join(rows).split(b"\t")
    if len(fields) != _FIELDS * len(rows):
        bad = next(i for i, r in enumerate(rows) if r.count(b"\t") != _FIELDS - 1)
        raise DataError(
            f"{file}, line {bad + 2}: expected 5 tab-separated fields "
            f"(sector, sex, year, name, count), got {rows[bad][:60]!r}"
        )
    year = _parse_ints(fields[2::_FIELDS], "year", file)
    count = _parse_ints(fields[4::_FIELDS], "count", file)
    names = np.array(fields[3::_FIELDS])
    empty = np.flatnonzero(np.char.str_len(names) == 0)
    if empty.size:
        raise DataError(f"{file}, line {int(empty[0]) + 2}: empty name")
    sector_u, sector = np.unique(np.array(fields[0::_FIELDS]), return_inverse=True)
    if party_by == "sector-sex":
        group_u, group = np.unique(np.array(fields[1::_FIELDS]), return_inverse=True)
        group_labels = [g.decode("utf-8", "replace") for g in group_u]
    else:
        group_u, group = np.unique(year // 10 * 10, return_inverse=True)
        group_labels = [f"{int(d)}s" for d in group_u]
    keep = count > 0
    if years is not None:
        keep &= (year >= first) & (year <= last)
    if not np.any(keep):
        where = f" in the years {first}-{last}" if years is not None else ""
        raise DataError(f"{file}: no births{where}")
    name_u, name = np.unique(names[keep], return_inverse=True)
    party = (sector * group_u.size + group)[keep]
    n_cells = sector_u.size * group_u.size
    # births per (party, name): the finest cells, so the truncation counts stay exact after a
    # subsample
    cells = np.bincount(
        party * name_u.size + name, weights=count[keep], minlength=n_cells * name_u.size
    )
    cells = np.rint(cells).astype(np.int64).reshape(n_cells, name_u.size)
    if max_users is not None and max_users < int(cells.sum()):
        flat = cells.ravel()
        nz = np.flatnonzero(flat)
        flat[nz] = gen.multivariate_hypergeometric(flat[nz], max_users, method="marginals")
    party_users = cells.sum(axis=1)
    name_users = cells.sum(axis=0)
    present = name_users > 0
    lengths = np.char.str_len(name_u).astype(np.int64)
    longest = int(lengths[present].max())
    if width is None:
        width = longest
        if width > MAX_WIDTH:
            raise DataError(f"{file}: a name of {width} bytes, over the widest item ({MAX_WIDTH})")
    long = present & (lengths > width)
    if long.any() and not truncate:
        example = name_u[np.flatnonzero(long)[0]].tobytes().rstrip(b"\0")
        raise DataError(
            f"{file}: {int(long.sum()):,} names ({int(name_users[long].sum()):,} births) are "
            f"longer than {width} bytes, e.g. {display(example)!r} ({len(example)} bytes): give "
            f"item_bytes ≥ {longest} (--item-bytes) or truncate them (--truncate)"
        )
    codec = StringCodec(width, truncate)
    records, _ = _truncate(name_u, width)
    name_code = codec.encode_fixed(records)
    codes, code_of_name = cd.unique_inverse(name_code[present])
    counts = np.rint(
        np.bincount(code_of_name, weights=name_users[present], minlength=cd.count(codes))
    ).astype(np.int64)
    held = name_code[present]
    parties, labels = [], []
    for i in np.flatnonzero(party_users):  # a loop over the ≤ 36 parties, vectorised inside
        users = np.repeat(held, cells[i, present], axis=0)
        gen.shuffle(users)
        parties.append(users)
        labels.append(
            f"{sector_u[i // group_u.size].decode('utf-8', 'replace')}-"
            f"{group_labels[i % group_u.size]}"
        )
    params: dict[str, object] = {"party_by": party_by}
    if years is not None:
        params["years"] = f"{first}-{last}"
    if max_users is not None:
        params["max_users"] = max_users
    params.update(item_bytes=width, names=int(np.count_nonzero(present)))
    if truncate:
        params.update(
            truncated_names=int(np.count_nonzero(long)),
            truncated_users=int(name_users[long].sum()),
        )
    return FederatedDataset(
        name="babynames",
        m=8 * width,
        parties=parties,
        codec=codec,
        params=params,
        precomputed=(codes, counts),
        party_names=labels,
    )
