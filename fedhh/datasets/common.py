"""Shared pieces of the dataset modules: argument types and checks, the seeded RNG, and finding
and reading the shared data files."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import DataError, ParameterError

__all__ = ["AOL_FILE", "RngLike", "Sizes", "StrPath", "find_data_file", "make_rng"]

AOL_FILE = "aol_queries_6bytes.txt.gz"

RngLike = np.random.Generator | int | None
StrPath = str | os.PathLike[str]
Sizes = str | Sequence[float] | NDArray[np.floating[Any]]


def make_rng(rng: RngLike = None, seed: int | None = None) -> np.random.Generator:
    """A Generator from ``rng`` (a Generator or an int seed) or ``seed``; not both."""
    if seed is not None:
        if rng is not None:
            raise ParameterError("give rng or seed, not both")
        rng = seed
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or int(rng) < 0:
        raise ParameterError(
            f"rng must be a numpy Generator or a non-negative int seed, got {rng!r}"
        )
    return np.random.default_rng(int(rng))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    return float(value)


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_data_file(name: str = AOL_FILE, path: StrPath | None = None) -> Path:
    """Locate a shared data file; raise DataError listing every place looked.

    ``path`` (a file, or a directory holding ``name``) wins if given. Otherwise, in order:
    ``$FEDHH_DATA_DIR/name``, ``<project root>/../shared/data/name``, ``./../shared/data/name``.
    """
    if path is not None:
        p = Path(path)
        cands = [p / name] if p.is_dir() else [p]
    else:
        cands = []
        env = os.environ.get("FEDHH_DATA_DIR")
        if env:
            cands.append(Path(env) / name)
        cands.append(_project_root().parent / "shared" / "data" / name)
        cands.append(Path.cwd().parent / "shared" / "data" / name)
    for c in cands:
        if c.is_file():
            return c
    looked = "\n  ".join(str(c) for c in cands)
    if path is None and not os.environ.get("FEDHH_DATA_DIR"):
        looked += "\n  ($FEDHH_DATA_DIR is not set)"
    raise DataError(
        f"data file {name} not found; looked in:\n  {looked}\n"
        "pass its path, or set FEDHH_DATA_DIR to the directory holding it"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.exists() and not path.is_file():  # a FIFO or a device would block the read
            raise DataError(f"cannot read {path}: not a regular file")
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _split_lines(data: bytes) -> list[bytes]:
    """Lines without their newline ("\\n" or "\\r\\n"); no empty last line after a final newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
