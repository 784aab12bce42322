"""User files: one file per party, one item per line, or one CSV column (docs/mechanisms.md §9)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedhh.core import codes as cd
from fedhh.core.items import Codes, IntCodec, StringCodec
from fedhh.datasets.common import StrPath, _read_bytes, _split_lines
from fedhh.datasets.container import FederatedDataset
from fedhh.errors import CodecError, DataError, ParameterError

__all__ = ["load_csv_column", "load_party_files", "write_party_files"]


def _check_codec(codec: object) -> StringCodec | IntCodec:
    if not isinstance(codec, (StringCodec, IntCodec)):
        raise ParameterError(f"codec must be a StringCodec or an IntCodec, got {codec!r}")
    return codec


def _path_list(paths: StrPath | Iterable[StrPath]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        out = [Path(paths)]
    else:
        out = [Path(p) for p in paths]
    if not out:
        raise ParameterError("need at least one file (one per party)")
    return out


class _ItemEncoder:
    """Per-file item checks with file/line context, then one vectorised encode per file; keeps
    the distinct items a truncating codec cut and how many users held them."""

    def __init__(
        self, codec: StringCodec | IntCodec, path: Path, cut: set[bytes] | None = None
    ) -> None:
        self.codec = codec
        self.path = path
        self.items: list[object] = []
        self.cut = cut if cut is not None else set()
        self.cut_users = 0

    def add(self, raw: bytes, no: int) -> None:
        if raw == b"":
            raise DataError(f"{self.path}, line {no}: empty item")
        if isinstance(self.codec, StringCodec):
            if b"\0" in raw:
                raise DataError(f"{self.path}, line {no}: item holds a zero byte")
            self.items.append(raw)
            return
        text = raw.strip()
        if not text.isdigit() or len(text) > 30:
            raise DataError(
                f"{self.path}, line {no}: expected a non-negative integer, got {raw[:40]!r}"
            )
        value = int(text)
        if value >> self.codec.m:
            raise DataError(
                f"{self.path}, line {no}: integer {value} does not fit in {self.codec.m} bits"
            )
        self.items.append(value)

    def codes(self) -> Codes:
        if not self.items:
            raise DataError(f"{self.path} holds no items")
        try:
            if not isinstance(self.codec, StringCodec):
                return self.codec.encode(self.items)
            raws = [bytes(i) for i in self.items if isinstance(i, bytes)]
            enc = self.codec.encode_raw(raws)
        except CodecError as exc:  # an item longer than the width (without truncation)
            raise DataError(f"{self.path}: {exc}") from None
        cut = np.flatnonzero(enc.cut)
        self.cut.update(raws[i] for i in cut.tolist())
        self.cut_users += int(cut.size)
        return enc.codes


def _truncation(codec: object, encoders: list[_ItemEncoder]) -> dict[str, object]:
    """The truncation counts of a truncating string codec (empty otherwise)."""
    if not (isinstance(codec, StringCodec) and codec.truncate):
        return {}
    return {
        "item_bytes": codec.width,
        "truncated_items": len(encoders[0].cut) if encoders else 0,
        "truncated_users": sum(e.cut_users for e in encoders),
    }


def load_party_files(
    paths: StrPath | Iterable[StrPath],
    *,
    codec: StringCodec | IntCodec,
    name: str | None = None,
) -> FederatedDataset:
    """One file per party, one item per line (gzip if ``.gz``).

    Only the trailing newline (``\\n`` or ``\\r\\n``) is stripped. With a StringCodec lines are
    read as bytes: a line longer than the codec width raises DataError naming how many are too
    long, unless the codec truncates (``StringCodec(w, truncate=True)``: cut at a UTF-8 character
    boundary, counted in ``params``: ``truncated_items`` distinct items, ``truncated_users``
    lines). With an IntCodec each line is a non-negative integer (surrounding ASCII whitespace
    allowed) below 2^m. An unreadable or empty file, an empty line, a zero byte or a bad integer
    raises DataError naming the file and line.
    """
    codec = _check_codec(codec)
    files = _path_list(paths)
    parties = []
    cut: set[bytes] = set()
    encoders = []
    for path in files:
        enc = _ItemEncoder(codec, path, cut)
        for no, line in enumerate(_split_lines(_read_bytes(path)), start=1):
            enc.add(line, no)
        parties.append(enc.codes())
        encoders.append(enc)
    return FederatedDataset(
        name=name or "files",
        m=codec.m,
        parties=parties,
        codec=codec,
        params={"files": ", ".join(str(p) for p in files), **_truncation(codec, encoders)},
    )


def load_csv_column(
    paths: StrPath | Iterable[StrPath],
    column: str | int,
    *,
    codec: StringCodec | IntCodec,
    header: bool = True,
    delimiter: str = ",",
    name: str | None = None,
) -> FederatedDataset:
    """One CSV file per party (UTF-8), the items in one column, chosen by name or 0-based index.

    With ``header`` the first row names the columns (and is skipped); without it ``column`` must
    be an index. Strings are UTF-8 encoded for a StringCodec; an IntCodec parses integers.
    A missing column, a short row, an empty cell or a bad integer raises DataError naming the file
    and line.
    """
    codec = _check_codec(codec)
    files = _path_list(paths)
    if isinstance(column, bool) or not isinstance(column, (str, int)):
        raise ParameterError(f"column must be a name or a 0-based index, got {column!r}")
    if isinstance(column, str) and not header:
        raise ParameterError("a column given by name needs header=True")
    if isinstance(column, int) and column < 0:
        raise ParameterError(f"column index must be non-negative, got {column}")
    parties = []
    cut: set[bytes] = set()
    encoders = []
    for path in files:
        enc = _ItemEncoder(codec, path, cut)
        encoders.append(enc)
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, delimiter=delimiter)
                col = column
                if header:
                    head = next(reader, None)
                    if head is None:
                        raise DataError(f"{path} is empty (no header row)")
                    if isinstance(column, str):
                        if column not in head:
                            raise DataError(f"{path}: no column {column!r} in header {head}")
                        col = head.index(column)
                assert isinstance(col, int)
                for row in reader:
                    if not row:
                        continue  # blank line
                    if col >= len(row):
                        raise DataError(
                            f"{path}, line {reader.line_num}: row has {len(row)} fields, "
                            f"no column {column!r}"
                        )
                    enc.add(row[col].encode("utf-8"), reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        parties.append(enc.codes())
    return FederatedDataset(
        name=name or "csv",
        m=codec.m,
        parties=parties,
        codec=codec,
        params={
            "files": ", ".join(str(p) for p in files),
            "column": column,
            **_truncation(codec, encoders),
        },
    )


def write_party_files(ds: FederatedDataset, folder: StrPath) -> list[Path]:
    """Write each party's users as one file, one item a line (``party-0.txt``, ...), for
    :func:`load_party_files`: a string item as its bytes, an integer in decimal. A string item
    holding a line break cannot be written (DataError)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, party in enumerate(ds.parties):
        uniq, inv = cd.unique_inverse(party)
        if isinstance(ds.codec, StringCodec):
            items = ds.codec.item_bytes(uniq)
            bad = [b for b in items if b"\n" in b or b"\r" in b]
            if bad:
                raise DataError(f"item {bad[0]!r} holds a line break: not one item a line")
        else:
            items = [str(v).encode() for v in ds.codec.decode(uniq)]
        path = out / f"party-{i}.txt"
        path.write_bytes(b"\n".join(items[j] for j in inv.tolist()) + b"\n")
        paths.append(path)
    return paths
