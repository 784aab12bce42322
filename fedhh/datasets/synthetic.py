"""Synthetic federations: Zipf(s) users over random m-bit labels, split non-IID
(docs/mechanisms.md §9)."""

from __future__ import annotations

from typing import Unpack

import numpy as np
from numpy.typing import NDArray

from fedhh.core.items import MAX_INT_BITS, Codes, IntCodec, check_bits
from fedhh.datasets.common import RngLike, _check_int, make_rng
from fedhh.datasets.container import FederatedDataset
from fedhh.datasets.splits import (
    SplitOptions,
    SplitRule,
    _check_s,
    _rank_permutation,
    _split_counts,
    apportion,
)
from fedhh.errors import ParameterError

__all__ = ["synthetic_zipf", "zipf_labels", "zipf_pmf"]


def zipf_pmf(n_items: int, s: float) -> NDArray[np.float64]:
    """Zipf(s) probabilities of ranks 1..n_items: p_r ∝ r^−s."""
    n_items = _check_int("n_items", n_items, 1)
    s = _check_s(s)
    p = np.arange(1, n_items + 1, dtype=np.float64) ** -s
    return p / p.sum()


def zipf_labels(n_items: int, m: int, rng: RngLike = None) -> Codes:
    """``n_items`` distinct uniformly random m-bit labels, in random order (label i ↔ rank i+1).

    Raises ParameterError when 2^m < n_items. Dense cases (n_items > 2^m / 2) take a prefix of a
    random permutation of all 2^m codes; sparse ones draw, drop repeats and redraw the shortfall.
    """
    n_items = _check_int("n_items", n_items, 1)
    m = check_bits(m, MAX_INT_BITS)
    gen = make_rng(rng)
    space = 1 << m
    if space < n_items:
        raise ParameterError(f"only 2^{m} = {space} distinct {m}-bit labels, need {n_items}")
    if 2 * n_items > space:
        return gen.permutation(space)[:n_items].astype(np.uint64)
    hi = np.uint64(space - 1)
    out = np.zeros(0, dtype=np.uint64)
    while out.size < n_items:
        need = n_items - out.size
        draw = gen.integers(0, hi, size=need + need // 8 + 16, dtype=np.uint64, endpoint=True)
        allc = np.concatenate([out, draw])
        _, first = np.unique(allc, return_index=True)
        out = allc[np.sort(first)][:n_items]  # keep first occurrences, in draw order
    return out


def synthetic_zipf(
    n_users: int,
    n_parties: int,
    *,
    m: int = 32,
    n_items: int = 10_000,
    s: float = 1.1,
    rng: RngLike = None,
    seed: int | None = None,
    name: str | None = None,
    **split: Unpack[SplitOptions],
) -> FederatedDataset:
    """Zipf(s) users over ``n_items`` random distinct m-bit labels, split non-IID over parties.

    The item of rank r is ``zipf_labels(n_items, m)[r − 1]``. ``split``: "iid", "dirichlet"
    (Dirichlet(α) per item; α = inf is IID) or "permutation" (per-party Zipf over a party-specific
    permutation of a fraction ``permute`` of the ranks); ``sizes``: "equal", "skewed" or weights
    (see the module docstring for the exact rules). Vectorised: 10^7 users take about a second.
    Items are decoded with ``IntCodec(m)``.
    """
    n_users = _check_int("n_users", n_users, 1)
    n_parties = _check_int("n_parties", n_parties, 1)
    if n_users < n_parties:
        raise ParameterError(
            f"n_users={n_users} is fewer than n_parties={n_parties}: every party needs a user"
        )
    m = check_bits(m, MAX_INT_BITS)
    n_items = _check_int("n_items", n_items, 1)
    s = _check_s(s)
    rule = SplitRule.check(n_parties, **split)
    gen = make_rng(rng, seed)

    labels = zipf_labels(n_items, m, gen)
    p = zipf_pmf(n_items, s)
    if rule.split == "permutation":
        target = apportion(n_users, rule.weights)
        glob = np.zeros(n_items, dtype=np.int64)
        parties: list[Codes] = []
        for i in range(n_parties):
            sigma = _rank_permutation(n_items, rule.permute, gen)
            c = gen.multinomial(int(target[i]), p[sigma - 1])
            glob += c
            arr = np.repeat(labels, c)
            gen.shuffle(arr)
            parties.append(arr)
        counts = glob
    else:
        counts = gen.multinomial(n_users, p).astype(np.int64)
        nz = counts > 0
        parties = _split_counts(labels[nz], counts[nz], rule, s, gen)
    nz = counts > 0
    order = np.argsort(labels[nz])
    params = {"n_items": n_items, "s": s, **rule.params()}
    return FederatedDataset(
        name=name or f"zipf(s={s:g})",
        m=m,
        parties=parties,
        codec=IntCodec(m),
        params=params,
        precomputed=(labels[nz][order], counts[nz][order]),
    )
