"""The mechanism-level tasks a coordinator gives a party, and the party's results.

These are the payloads of the protocol's request/reply envelopes (:mod:`fedhh.protocol`). Arrays
are numpy arrays with fixed dtypes: codes as :mod:`fedhh.core.codes` holds them (1-D ``uint64``
up to 64 bits, ``(n, W)`` words above) and float64 estimates. A codes field names, in its metadata
(:func:`bits_from`), the field that gives its width in bits: the wire carries codes as
⌈bits/8⌉ big-endian bytes each (:mod:`fedhh.protocol.encoding`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Codes = NDArray[np.uint64]
Floats = NDArray[np.float64]


def bits_from(name: str) -> Mapping[str, Any]:
    """Field metadata of a codes field: its codes have as many bits as field ``name`` says."""
    return {"bits": name}


def _no_codes() -> Codes:
    return np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True, eq=False)
class EstimateTask:
    """Estimate the count of each candidate prefix of length ``length`` with a fresh user group.

    ``group`` is "level" (the group planned for Phase I / PEM-Global level ``level``) or
    "reserve" (the TAPS completion reserve).
    """

    level: int
    length: int
    candidates: Codes = field(metadata=bits_from("length"))
    group: str = "level"


@dataclass(frozen=True, eq=False)
class SearchTask:
    """Run a local search inside the party.

    ``mode`` "pem": PEM over the party's own users from length γ (PEM-Local).
    ``mode`` "phase2": TAP/TAPS Phase II from ``start_prefixes`` of length ``start_length``;
    ``prior_items`` / ``prior_estimates`` / ``prior_stderrs`` are the TAPS consensus prior: the
    items the parties before this one reported most, with their summed estimates and standard
    errors (empty for TAP); ``item_bits`` is the run's m, the width of the prior items;
    ``horizon`` (wide text items, docs/mechanisms.md §10; 0: none) the prefix length by which
    the federation's items have ended, from the parties' item-length levels.
    """

    mode: str
    start_length: int
    start_prefixes: Codes = field(metadata=bits_from("start_length"))
    prior_items: Codes = field(default_factory=_no_codes, metadata=bits_from("item_bits"))
    prior_estimates: Floats = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    prior_stderrs: Floats = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    item_bits: int = 0
    horizon: int = 0


@dataclass(frozen=True)
class LevelCost:
    """Bookkeeping of one estimation level inside a party (docs/mechanisms.md §7). A level of
    length 0 is the item-length level of wide text items (§10): ``candidates`` counts the byte
    lengths 0..W."""

    length: int
    step: int
    candidates: int
    reports: int
    oracle: str
    hash_evaluations: int
    report_bytes: int


@dataclass(frozen=True, eq=False)
class EstimateResult:
    """Scaled estimates (× n_i / n_group) and standard errors, in the task's candidate order.
    ``pre_levels``: levels the party ran before this one for its own plan (the item-length
    level of wide text items, docs/mechanisms.md §10), declared with its first reply, and
    ``length_counts`` / ``length_stderrs`` what that level found: the party's users per item
    length 0..W bytes (scaled estimates), from which the coordinator plans the shared levels."""

    estimates: Floats
    stderrs: Floats
    cost: LevelCost
    pre_levels: tuple[LevelCost, ...] = ()
    length_counts: Floats = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    length_stderrs: Floats = field(default_factory=lambda: np.zeros(0, dtype=np.float64))


@dataclass(frozen=True, eq=False)
class SearchResult:
    """A party's reported items (full codes of ``item_bits`` = m bits) with scaled estimates and
    standard errors."""

    items: Codes = field(metadata=bits_from("item_bits"))
    estimates: Floats
    stderrs: Floats
    levels: tuple[LevelCost, ...]
    item_bits: int = 0


@dataclass(frozen=True)
class ErrorResult:
    """A party could not do the task (e.g. it has no users left); the reason is in ``message``."""

    code: str
    message: str
