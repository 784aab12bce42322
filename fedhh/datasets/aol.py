"""The AOL query log (6-byte prefixes, m = 48) and ``value<TAB>count`` files
(docs/mechanisms.md §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import numpy as np
from numpy.typing import NDArray

from fedhh.core.items import Codes, StringCodec
from fedhh.datasets.common import (
    AOL_FILE,
    RngLike,
    StrPath,
    _check_int,
    _read_bytes,
    _split_lines,
    find_data_file,
    make_rng,
)
from fedhh.datasets.container import FederatedDataset
from fedhh.datasets.splits import SplitOptions, SplitRule, _split_counts
from fedhh.errors import DataError, ParameterError

__all__ = ["AOL_FILE", "AOL_WIDTH", "load_aol", "read_value_counts"]

AOL_WIDTH = 6  # bytes per AOL item (m = 48)


def read_value_counts(
    path: StrPath, width: int = AOL_WIDTH, *, strip_trailing_spaces: bool = False
) -> tuple[Codes, NDArray[np.int64]]:
    """Read a ``value<TAB>count`` file (gzip if ``.gz``) as bytes: (sorted unique codes, counts).

    Values are raw bytes (any encoding, possibly with spaces) of at most ``width`` bytes,
    zero-padded to ``width`` and encoded with ``StringCodec(width)``; the value is everything
    before the last tab. Repeated values add up; zero counts are dropped. With
    ``strip_trailing_spaces`` the values' trailing spaces (the AOL file pads short queries with
    spaces) are dropped before padding, so e.g. ``b"-     "`` decodes as ``"-"``.
    """
    p = Path(path)
    codec = StringCodec(width)
    lines = _split_lines(_read_bytes(p))
    if not lines:
        raise DataError(f"{p} is empty: expected lines value<TAB>count")
    values: list[bytes] = []
    counts = np.empty(len(lines), dtype=np.int64)
    for no, line in enumerate(lines, start=1):
        value, tab, count = line.rpartition(b"\t")
        if not tab:
            raise DataError(f"{p}, line {no}: expected value<TAB>count, got {line[:40]!r}")
        if strip_trailing_spaces:
            value = value.rstrip(b" ")
        if len(value) > width:
            raise DataError(f"{p}, line {no}: value {value!r} is longer than {width} bytes")
        if b"\0" in value:
            raise DataError(f"{p}, line {no}: value {value!r} holds a zero byte")
        cnt = count.strip()
        if not cnt.isdigit():
            raise DataError(f"{p}, line {no}: count must be a non-negative integer, got {count!r}")
        values.append(value.ljust(width, b"\0"))
        counts[no - 1] = int(cnt)
    codes = codec.encode_fixed(b"".join(values))
    uniq, inv = np.unique(codes, return_inverse=True)
    total = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(total, inv, counts)
    keep = total > 0
    return uniq[keep], total[keep]


def load_aol(
    path: StrPath | None = None,
    *,
    n_parties: int = 8,
    rng: RngLike = None,
    seed: int | None = None,
    max_users: int | None = None,
    strip_trailing_spaces: bool = False,
    **split: Unpack[SplitOptions],
) -> FederatedDataset:
    """The AOL query log (6-byte prefixes, m = 48), split into parties.

    ``path`` is the file (or its directory); by default it is found by :func:`find_data_file`
    (``$FEDHH_DATA_DIR``, then ``../shared/data/`` beside the project root, then beside the
    working directory). The full file has 657,427 users over 120,978 distinct values. Values are
    read as bytes (3 are not valid UTF-8: they decode with U+FFFD). ``max_users`` keeps a random
    subset of that many users (without replacement) for quick runs. The split rules are those of
    :func:`partition` (module docstring).
    """
    n_parties = _check_int("n_parties", n_parties, 1)
    rule = SplitRule.check(n_parties, **split)
    if max_users is not None:
        max_users = _check_int("max_users", max_users, 1)
        if max_users < n_parties:
            raise ParameterError(
                f"max_users={max_users} is fewer than n_parties={n_parties}: "
                "every party needs a user"
            )
    gen = make_rng(rng, seed)
    file = find_data_file(AOL_FILE, path)
    codes, counts = read_value_counts(file, AOL_WIDTH, strip_trailing_spaces=strip_trailing_spaces)
    if max_users is not None and max_users < int(counts.sum()):
        counts = gen.multivariate_hypergeometric(counts, max_users, method="marginals")
        keep = counts > 0
        codes, counts = codes[keep], counts[keep].astype(np.int64)
    parties = _split_counts(codes, counts, rule, 1.0, gen)
    params = rule.params()
    if max_users is not None:
        params["max_users"] = max_users
    return FederatedDataset(
        name="aol",
        m=8 * AOL_WIDTH,
        parties=parties,
        codec=StringCodec(AOL_WIDTH),
        params=params,
        precomputed=(codes, counts),
    )
