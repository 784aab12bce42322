"""Accuracy of a returned heavy-hitter set against the true global top-k (docs/mechanisms.md §8).

Notation: T is the true global top-k (:func:`true_top_k`), Ĥ the returned set, |Ĥ| ≤ k.

* precision = |Ĥ∩T| / |Ĥ|   (0 by convention when Ĥ is empty)
* recall    = |Ĥ∩T| / k
* F1        = 2·P·R / (P + R)   (0 when P + R = 0)
* NCR       = Σ_{v∈Ĥ} score(v) / (k(k+1)/2), where the item of true rank r (1 ≤ r ≤ k) scores
  k − r + 1 and every other item scores 0
* ARE       = mean over v ∈ Ĥ∩T of |ĉ(v) − c(v)| / c(v)   (NaN when Ĥ∩T is empty: there is no
  estimate to judge, and NaN keeps such runs visibly apart from perfect ones; use ``np.nanmean``
  to average over repetitions)

Ties: the true top-k orders items by count descending and breaks ties by code ascending, so T is
deterministic; an item tied with the k-th item but with a larger code is not in T.

Codes are m-bit item codes (any integer array-like, held as ``uint64``; codes wider than 64 bits
as :mod:`fedhh.core.codes` holds them, ``(n, W)`` words, compared through their sortable keys).
Every function is vectorised (``np.isin`` / ``np.searchsorted``); returned sets with duplicate
codes or with more than k items raise :class:`~fedhh.errors.ParameterError`.

**The known-domain reference** (docs/mechanisms.md §8, :func:`known_domain_reference`): the
scores an analyst would get if the item domain were known and all N users answered one round of
the best frequency oracle over it. A yardstick for mechanisms that must also discover the items,
not a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core import codes as cd
from fedhh.core.codes import Codes, as_codes
from fedhh.errors import CodecError, ParameterError

if TYPE_CHECKING:
    from fedhh.oracles import FrequencyOracle

__all__ = [
    "CountTable",
    "Scores",
    "are",
    "evaluate",
    "f1",
    "known_domain_estimates",
    "known_domain_reference",
    "mean_scores",
    "ncr",
    "precision",
    "recall",
    "reference_oracle",
    "true_top_k",
]

#: Exact counts of items: a mapping code → count, or a pair (codes, counts) of equal-length arrays.
CountTable = Mapping[int, int] | tuple[ArrayLike, ArrayLike]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ParameterError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ParameterError(f"k must be at least 1, got {k}")
    return int(k)


def _codes(values: ArrayLike, what: str) -> Codes:
    """``values`` as a 1-D array of sortable code keys (uint64 codes up to 64 bits, the
    :func:`fedhh.core.codes.keys` of wider ones); a wrong shape or kind raises ParameterError."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.dtype == np.uint64:
        return cd.keys(arr)  # type: ignore[return-value]
    if arr.ndim == 1 and arr.dtype.kind == "V":
        return arr
    if arr.ndim != 1:
        raise ParameterError(f"{what} must be a 1-D sequence of codes, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iuO":
        raise ParameterError(f"{what} must hold integer codes, got dtype {arr.dtype}")
    try:
        return as_codes(arr, 64)
    except CodecError as exc:
        raise ParameterError(f"{what}: {exc}") from None


def _unique_codes(values: ArrayLike, what: str) -> Codes:
    codes = _codes(values, what)
    if np.unique(codes).size != codes.size:
        raise ParameterError(f"{what} holds duplicate codes")
    return codes


def _returned(returned: ArrayLike, k: int | None) -> Codes:
    codes = _unique_codes(returned, "returned set")
    if k is not None and codes.size > k:
        raise ParameterError(f"returned set has {codes.size} items, more than k={k}")
    return codes


def _truth(truth: ArrayLike, k: int, what: str = "true top-k") -> Codes:
    codes = _unique_codes(truth, what)
    if codes.size > k:
        raise ParameterError(f"{what} has {codes.size} items, more than k={k}")
    return codes


def _count_table(counts: CountTable) -> tuple[Codes, NDArray[np.int64]]:
    """Split a :data:`CountTable` into (codes, int64 counts), validated."""
    if isinstance(counts, Mapping):
        codes = _codes(np.fromiter(counts.keys(), dtype=object, count=len(counts)), "count codes")
        values = np.asarray(list(counts.values()))
    elif isinstance(counts, tuple) and len(counts) == 2:
        codes = _unique_codes(counts[0], "count codes")
        values = np.asarray(counts[1])
    else:
        raise ParameterError("counts must be a mapping code -> count or a pair (codes, counts)")
    if values.ndim != 1 or values.size != codes.size:
        raise ParameterError(
            f"counts must be a 1-D array as long as the codes ({codes.size}), "
            f"got shape {values.shape}"
        )
    if values.size and values.dtype.kind not in "iu":
        raise ParameterError(f"true counts must be integers, got dtype {values.dtype}")
    if values.size and values.dtype.kind == "i" and int(values.min()) < 0:
        raise ParameterError(f"true counts must be non-negative, got {int(values.min())}")
    return codes, values.astype(np.int64)


def true_top_k(counts: CountTable, k: int) -> Codes:
    """The true top-k codes, most frequent first (ties: smaller code first).

    ``counts`` is a mapping code → count or a pair (codes, counts) of arrays with unique codes.
    Items with count 0 are never returned; with fewer than k items of positive count, all of them
    are returned. Runs in O(n + k log k) for n items (partition, then sort the few candidates).
    """
    k = _check_k(k)
    codes, cnt = _count_table(counts)
    keep = cnt > 0
    codes, cnt = codes[keep], cnt[keep]
    if codes.size > k:
        kth = np.partition(cnt, codes.size - k)[codes.size - k]  # k-th largest count
        cand = cnt >= kth
        codes, cnt = codes[cand], cnt[cand]
    order = np.lexsort((codes, -cnt))  # last key is primary: count descending, then code
    return _from_keys(codes[order[:k]])


def _from_keys(keys: NDArray[np.generic]) -> Codes:
    """Codes from the keys of :func:`_codes` (wide codes back to their words)."""
    if keys.dtype.kind == "V":
        return cd.from_keys(keys, 8 * keys.dtype.itemsize)
    return keys  # type: ignore[return-value]


def precision(returned: ArrayLike, truth: ArrayLike) -> float:
    """|Ĥ∩T| / |Ĥ|; 0.0 for an empty returned set (by convention)."""
    ret = _returned(returned, None)
    tru = _unique_codes(truth, "true top-k")
    if ret.size == 0:
        return 0.0
    return float(np.count_nonzero(np.isin(ret, tru))) / ret.size


def recall(returned: ArrayLike, truth: ArrayLike, k: int) -> float:
    """|Ĥ∩T| / k (with the denominator k, even if fewer than k items exist)."""
    k = _check_k(k)
    ret = _returned(returned, k)
    tru = _truth(truth, k)
    return float(np.count_nonzero(np.isin(ret, tru))) / k


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def f1(returned: ArrayLike, truth: ArrayLike, k: int) -> float:
    """Harmonic mean of :func:`precision` and :func:`recall` (0.0 when both are 0)."""
    return _f1(precision(returned, truth), recall(returned, truth, k))


def ncr(returned: ArrayLike, truth_ranked: ArrayLike, k: int) -> float:
    """Normalised cumulative rank: Σ_{v∈Ĥ} score(v) / (k(k+1)/2).

    ``truth_ranked`` lists T in rank order (rank 1 first, as :func:`true_top_k` returns it); the
    item of rank r scores k − r + 1, items outside T score 0. The order of ``returned`` is ignored.
    """
    k = _check_k(k)
    ret = _returned(returned, k)
    tru = _truth(truth_ranked, k)
    if ret.size == 0 or tru.size == 0:
        return 0.0
    sorter = np.argsort(tru)
    pos = np.searchsorted(tru, ret, sorter=sorter)
    pos = np.minimum(pos, tru.size - 1)
    idx = sorter[pos]  # 0-based rank of the candidate match
    hit = tru[idx] == ret
    score = int(np.sum(k - idx[hit]))
    return score / (k * (k + 1) / 2)


def are(
    returned: ArrayLike, estimates: ArrayLike, truth: ArrayLike, truth_counts: ArrayLike
) -> float:
    """Average relative error mean_{v∈Ĥ∩T} |ĉ(v) − c(v)| / c(v); NaN if Ĥ∩T is empty.

    ``estimates`` are aligned with ``returned`` (ĉ of each returned item); ``truth_counts`` are
    aligned with ``truth`` (the true count of each item of T, all positive).
    """
    ret = _returned(returned, None)
    est = np.asarray(estimates, dtype=np.float64)
    if est.shape != ret.shape:
        raise ParameterError(
            f"estimates must align with the returned set ({ret.size} items), got shape {est.shape}"
        )
    tru = _unique_codes(truth, "true top-k")
    cnt = np.asarray(truth_counts)
    if cnt.shape != tru.shape:
        raise ParameterError(
            f"true counts must align with the true top-k ({tru.size} items), got shape {cnt.shape}"
        )
    if cnt.size and (cnt.dtype.kind not in "iuf" or not np.all(cnt > 0)):
        raise ParameterError("true counts of the true top-k must be positive numbers")
    if ret.size == 0 or tru.size == 0:
        return math.nan
    sorter = np.argsort(tru)
    pos = np.minimum(np.searchsorted(tru, ret, sorter=sorter), tru.size - 1)
    idx = sorter[pos]
    hit = tru[idx] == ret
    if not np.any(hit):
        return math.nan
    c = cnt[idx[hit]].astype(np.float64)
    return float(np.mean(np.abs(est[hit] - c) / c))


@dataclass(frozen=True)
class Scores:
    """All §8 metrics of one run (``are`` is NaN when Ĥ∩T is empty or no estimates were given)."""

    precision: float
    recall: float
    f1: float
    ncr: float
    are: float
    k: int
    n_returned: int
    hits: int  # |Ĥ∩T|

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate(
    returned_codes: ArrayLike,
    estimates: ArrayLike | None,
    global_codes: ArrayLike,
    global_counts: ArrayLike,
    k: int,
) -> Scores:
    """Every metric of a returned set against the exact global counts.

    ``global_codes``/``global_counts`` are the exact counts of every item (unique codes);
    T = ``true_top_k((global_codes, global_counts), k)``. ``estimates`` align with
    ``returned_codes``; pass None to skip ARE (then NaN).
    """
    k = _check_k(k)
    ret = _returned(returned_codes, k)
    codes, cnt = _count_table((global_codes, global_counts))
    truth = _codes(true_top_k((codes, cnt), k), "true top-k")
    hits = int(np.count_nonzero(np.isin(ret, truth)))
    p = hits / ret.size if ret.size else 0.0
    r = hits / k
    if estimates is None:
        a = math.nan
    else:
        sorter = np.argsort(codes)
        pos = np.minimum(np.searchsorted(codes, truth, sorter=sorter), max(codes.size - 1, 0))
        a = are(ret, estimates, truth, cnt[sorter[pos]])
    return Scores(
        precision=p,
        recall=r,
        f1=_f1(p, r),
        ncr=ncr(ret, truth, k),
        are=a,
        k=k,
        n_returned=int(ret.size),
        hits=hits,
    )


# ---------------------------------------------------------------------------------------------
# The known-domain reference (docs/mechanisms.md §8)
# ---------------------------------------------------------------------------------------------


def reference_oracle(epsilon: float, n_items: int) -> FrequencyOracle:
    """The oracle of the known-domain reference: the lowest-variance one among GRR, OLH and OUE
    for a domain of the ``n_items`` distinct items plus ⊥ (d = D + 1) at ε
    (:func:`fedhh.oracles.choose_oracle`)."""
    from fedhh.oracles import choose_oracle  # lazy: the oracles' kernels are not a metrics need

    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ParameterError(f"the reference needs at least one item, got {n_items!r}")
    return choose_oracle(epsilon, int(n_items) + 1)


def known_domain_estimates(
    global_counts: ArrayLike, epsilon: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """One draw of the known-domain estimates ĉ(v) of every item (aligned with ``global_counts``).

    All N = Σ c(v) users report once with :func:`reference_oracle` over the D items; the support
    count of item v is drawn from its exact marginal Binomial(c(v), p) + Binomial(N − c(v), q)
    (the oracle's p and q for d = D + 1) and debiased with the oracle's own
    (C − N·q) / (p − q), so E[ĉ(v)] = c(v) and Var ĉ(v) = ``oracle.variance(N, D + 1, c(v))``.
    Assumption: the items' support counts are drawn independently. That is exact for OUE (each
    bit is perturbed on its own); under GRR one report supports exactly one symbol (the counts
    are multinomial, slightly negatively correlated) and under OLH one report supports every
    item hashed to its bucket (slightly correlated too). The marginals stay exact. Cost O(D),
    not O(N·D).
    """
    cnt = np.asarray(global_counts)
    if cnt.ndim != 1 or cnt.size == 0 or cnt.dtype.kind not in "iu" or int(cnt.min()) < 0:
        raise ParameterError("global counts must be a non-empty 1-D array of non-negative integers")
    cnt = cnt.astype(np.int64)
    n = int(cnt.sum())
    oracle = reference_oracle(epsilon, cnt.size)
    p, q = oracle.probabilities(cnt.size + 1)
    support = rng.binomial(cnt, p) + rng.binomial(n - cnt, q)
    from fedhh.oracles import Support

    return oracle.debias(Support(n, support.astype(np.int64)))


def known_domain_reference(
    global_codes: ArrayLike,
    global_counts: ArrayLike,
    epsilon: float,
    k: int,
    rng: np.random.Generator,
    *,
    repeats: int = 1,
    answer_alpha: float = 0.0,
) -> list[Scores]:
    """Draws of the known-domain reference (docs/mechanisms.md §8): for each of ``repeats``
    independent draws of :func:`known_domain_estimates`, the §8 scores of the top-k estimates
    over every item with a positive count (the domain is all distinct items; ties among
    estimates broken arbitrarily), cut at the noise bar of ``answer_alpha`` as every mechanism's
    answer is (§5: estimate > z·SE, z = Φ̄⁻¹(α/D) over the D items, SE the oracle's zero-count
    standard error; 0: the top-k).

    It tells what an analyst who knew the domain would get from one round of the best oracle,
    so how much a mechanism that must also discover the items has left. It is not an upper
    bound: on strongly non-IID data local selection can beat it, as a party-specific item is
    seen with that party's noise only. Summarise the draws with :func:`mean_scores`.
    """
    k = _check_k(k)
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ParameterError(f"repeats must be a positive integer, got {repeats!r}")
    codes, cnt = _count_table((global_codes, global_counts))
    keep = cnt > 0
    codes, cnt = codes[keep], cnt[keep]
    # Only items counted at least as often as the k-th can be in T: scoring against them alone
    # gives the same T (and the same ARE) at a fraction of the cost of the whole table.
    truth = _codes(true_top_k((codes, cnt), k), "true top-k")
    kth = int(cnt[codes == truth[-1]][0]) if truth.size else 0
    sure = cnt >= kth
    bar = -math.inf
    if answer_alpha > 0:
        from fedhh.oracles import noise_z

        null_var = reference_oracle(epsilon, cnt.size).variance(int(cnt.sum()), cnt.size + 1)
        bar = noise_z(cnt.size, float(answer_alpha)) * math.sqrt(null_var)
    out = []
    for _ in range(int(repeats)):
        est = known_domain_estimates(cnt, epsilon, rng)
        top = np.argpartition(-est, k - 1)[:k] if codes.size > k else np.arange(codes.size)
        top = top[np.argsort(-est[top], kind="stable")]
        top = top[est[top] > bar]
        out.append(evaluate(codes[top], est[top], codes[sure], cnt[sure], k))
    return out


def mean_scores(scores: Sequence[Scores]) -> dict[str, float]:
    """Mean and standard deviation (ddof 0) of every metric over runs: ``f1``, ``f1_std``, ...
    (ARE averaged over the runs where it is defined; NaN if none)."""
    if not scores:
        raise ParameterError("mean_scores needs at least one Scores")
    out: dict[str, float] = {}
    for f in fields(Scores):
        vals = np.array([float(getattr(s, f.name)) for s in scores])
        ok = vals[~np.isnan(vals)]
        out[f.name] = float(ok.mean()) if ok.size else math.nan
        out[f"{f.name}_std"] = float(ok.std()) if ok.size else math.nan
    out["runs"] = float(len(scores))
    return out
