"""Level plans: how many estimation levels a prefix search takes, how many bits each level adds
and how many users each level gets (docs/mechanisms.md, "The level plan").

A search that extends ``n_prefixes`` prefixes of length ℓ₀ to full items of m bits estimates one
candidate set per level, C_j = P_{j−1} × {0,1}^{s_j}, each with a fresh group of users. Two facts
decide the plan:

* every level costs users: with L levels a group has n/L users, so a party-scaled estimate has
  standard deviation √(L·n·Var₁) (Var₁ the oracle's per-user variance);
* a wider level only raises the noise floor of its top candidates by about √(2·ln|C_j|), and its
  decode cost grows with |C_j|.

So the plan takes the fewest levels the decode budget allows: every level's candidate set has at
most ``max_candidates`` prefixes (|P|·2^s ≤ budget); the next level goes as far as the budget
allows, the bits after it are spread evenly over the fewest levels that cover them, and the
users are split over the levels in proportion to their weights: 1 for every level,
``final_weight`` for the last one (the level whose estimates rank the full items).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import ParameterError

LENGTH_SHARE = 0.02  # wide text items: share of a party's users that report their item's length
TAIL_SHARE = 0.01  # the horizon leaves at most this share of the users' items longer than it
LENGTH_BUCKET = 2  # bytes of item length a length report tells apart (few symbols, less noise)


@dataclass(frozen=True)
class LevelPlan:
    """Prefix lengths reached by the levels from ``start`` (increasing, the last one is m) and
    users per level."""

    lengths: tuple[int, ...]
    users: tuple[int, ...]
    start: int = 0

    @property
    def steps(self) -> tuple[int, ...]:
        """Bits each level adds (the first from the plan's start length)."""
        return tuple(b - a for a, b in zip((self.start, *self.lengths), self.lengths, strict=False))

    def to_dict(self) -> dict[str, list[int] | int]:
        return {"start": self.start, "lengths": list(self.lengths), "users": list(self.users)}


def max_step(n_prefixes: int, max_candidates: int, n_ended: int = 0) -> int:
    """The widest step s with n_prefixes·2^s + n_ended ≤ max_candidates (at least 1 bit): an
    ended prefix has one child whatever the step."""
    if n_prefixes < 1 or max_candidates < 1:
        raise ParameterError("a level needs at least one prefix and a candidate budget ≥ 1")
    room = max(max_candidates - n_ended, n_prefixes)
    return max(1, math.floor(math.log2(room / n_prefixes)))


def balanced_steps(total: int, caps: list[int]) -> list[int]:
    """Split ``total`` bits over len(caps) levels, each at most its cap, as evenly as possible."""
    if sum(caps) < total:
        raise ParameterError(f"{len(caps)} levels of at most {caps} bits cannot cover {total}")
    steps = list(caps)
    excess = sum(steps) - total
    while excess > 0:
        widest = max(range(len(steps)), key=lambda j: (steps[j], j))
        steps[widest] -= 1
        excess -= 1
    if any(s < 1 for s in steps):
        raise ParameterError(f"cannot cover {total} bits with {len(caps)} levels of ≥ 1 bit")
    return steps


def split_users(users: int, n_levels: int, final_weight: float = 1.0) -> tuple[int, ...]:
    """``users`` split over ``n_levels`` levels with weight 1 each and ``final_weight`` for the
    last; the counts sum to ``users`` exactly (the last level takes the rounding)."""
    if n_levels < 1:
        raise ParameterError("a plan needs at least one level")
    if users < 0 or not final_weight > 0:
        raise ParameterError("users must be ≥ 0 and the final weight > 0")
    total_weight = (n_levels - 1) + final_weight
    each = int(users // total_weight) if n_levels > 1 else 0
    # the float division can round up to the next integer (453 / 15.100000000000001 → 30.0):
    # the last level keeps at least final_weight times the others' share
    while each > 0 and users - each * (n_levels - 1) < final_weight * each:
        each -= 1
    head = [each] * (n_levels - 1)
    return (*head, users - sum(head))


def next_group(remaining: int, levels_left: int, final_weight: float = 1.0) -> int:
    """Users of the next level when ``levels_left`` levels (the last one weighted) share
    ``remaining`` users: the first entry of :func:`split_users`."""
    return split_users(remaining, max(1, levels_left), final_weight)[0]


def plan_levels(
    start_length: int,
    m: int,
    n_prefixes: int,
    n_keep: int,
    users: int,
    max_candidates: int,
    final_weight: float = 1.0,
    n_ended: int = 0,
    horizon: int | None = None,
    verify: bool = False,
) -> LevelPlan:
    """The plan from ``n_prefixes`` prefixes of length ``start_length`` to full m-bit items.

    The first level extends the ``n_prefixes`` given prefixes (and the ``n_ended`` ones that
    have ended, one child each), every later level the ``n_keep`` prefixes a level keeps; each
    level's candidate set stays within ``max_candidates``. With a ``horizon`` (zero-padded text,
    docs/mechanisms.md §10: the prefix length by which the items have ended) the levels go to
    the horizon and one last level takes the ended prefixes to m; a search past its horizon
    plans to m. With ``verify`` the last level always estimates the kept items afresh: the
    level that takes ended prefixes to m does, and a plan that reaches m by extending ends
    with one more level at m (step 0).
    """
    if start_length >= m:
        raise ParameterError(f"nothing to plan: start length {start_length} ≥ m = {m}")
    target = horizon if horizon is not None and start_length < horizon < m else m
    remaining = target - start_length
    first = min(max_step(n_prefixes, max_candidates, n_ended), remaining)
    steps = [first]
    if first < remaining:
        later = max_step(n_keep, max_candidates)
        n_later = math.ceil((remaining - first) / later)
        steps += balanced_steps(remaining - first, [later] * n_later)
        if target < m:  # to a horizon: no sliver of a level just before it
            steps = balanced_steps(remaining, [first] + [later] * n_later)
    lengths, at = [], start_length
    for s in steps:
        at += s
        lengths.append(at)
    if target < m or verify:
        lengths.append(m)
    return LevelPlan(tuple(lengths), split_users(users, len(lengths), final_weight), start_length)


def levels_left(lengths: Sequence[int], level: int, horizon: int | None, m: int) -> int:
    """Levels from shared level ``level`` on (itself included) for a party of a wide text run
    (docs/mechanisms.md §10): the shared levels below its ``horizon``, the one that reaches it
    and one last level to m; past the horizon (or without one) every shared level left and one
    more level that estimates the items afresh."""
    rest = len(lengths) - level + 1
    if horizon is None or horizon >= m or lengths[level] >= horizon:
        return rest
    below = sum(1 for n in lengths[level:] if n < horizon)
    return min(below + 2, rest)


def byte_lengths(raw: NDArray[np.uint8]) -> NDArray[np.int64]:
    """The length of each zero-padded item of an ``(n, W)`` byte matrix (its last non-zero
    byte's position + 1)."""
    nz = raw != 0
    last = raw.shape[1] - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last, 0).astype(np.int64)


def length_buckets(lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """The symbol a length report carries: ⌈length / LENGTH_BUCKET⌉ (0 for an empty item). Few
    symbols keep the tail sums of the horizon precise at small ε: over W + 1 byte lengths a
    tail adds the noise of up to W symbols of a many-valued oracle."""
    return -(-np.asarray(lengths, dtype=np.int64) // LENGTH_BUCKET)


def n_length_buckets(width: int) -> int:
    """Symbols of the length report for items of ``width`` bytes: buckets 0..⌈W / B⌉
    (B = LENGTH_BUCKET)."""
    return -(-width // LENGTH_BUCKET) + 1


def horizon_bits(
    counts: NDArray[np.float64],
    stderrs: NDArray[np.float64],
    n_reports: int,
    m: int,
    tail_share: float = TAIL_SHARE,
    z: float = -1.0,
) -> int:
    """The horizon of the level plan from a group's estimated counts of its items' length
    buckets (``counts``, ``stderrs``; :func:`length_buckets`): with b the first bucket
    such that the items in later buckets hold at most ``tail_share`` of the ``n_reports`` users
    (their estimated count plus z standard errors), every item of at most L = B·b bytes
    (B = LENGTH_BUCKET) has ended by prefix length 8·(L + 1); m if no such b is below the last
    bucket.

    The default z = −1 takes the tail's lower bound: a horizon too short costs the levels past it
    a smaller share of the users, one too long (m) spreads every level thin, and at small ε the
    tail's standard error exceeds 1% of a party's users (docs/mechanisms.md §10)."""
    c = np.asarray(counts, dtype=np.float64)  # unclipped: the tail sums stay unbiased
    var = np.asarray(stderrs, dtype=np.float64) ** 2
    tail = np.concatenate([np.cumsum(c[::-1])[::-1][1:], [0.0]])  # users in later buckets
    tail_var = np.concatenate([np.cumsum(var[::-1])[::-1][1:], [0.0]])
    ok = np.flatnonzero(tail + z * np.sqrt(tail_var) <= tail_share * max(n_reports, 1))
    if ok.size == 0 or ok[0] >= c.size - 1:
        return m
    return min(m, 8 * (LENGTH_BUCKET * int(ok[0]) + 1))
