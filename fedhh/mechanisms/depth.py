"""Adaptive depth [choice] (docs/mechanisms.md §5): after each shared level, whether the parties
should go on to their own searches. The statistics read the parties' estimates of the level
(their replies), the sum ``est`` with its standard errors ``se`` and the parties' user counts."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import EstimateResult, Floats, SearchResult
from fedhh.oracles import noise_z

Replies = Mapping[int, EstimateResult | SearchResult]


def heterogeneity_z(replies: Replies, top: np.ndarray, est: Floats, sizes: list[int]) -> float:
    """z-score of χ²/df for the parties' estimates of the kept prefixes against the homogeneous
    model c_i(v) = (n_i/N)·F(v): (χ²/df − 1)/√(2/df). Near 0 when the parties' data look alike
    (IID); large when they differ more than their noise explains."""
    if len(replies) < 2 or top.size == 0:
        return math.inf
    total = float(sum(sizes[i] for i in replies))
    stat, df = 0.0, 0
    for i, res in replies.items():
        assert isinstance(res, EstimateResult)
        resid = (res.estimates[top] - sizes[i] / total * est[top]) / np.maximum(
            res.stderrs[top], 1e-9
        )
        stat += float(np.sum(resid**2))
        df += top.size
    df = max(df - top.size, 1)  # F is estimated from the same data
    return (stat / df - 1.0) / math.sqrt(2.0 / df)


def go_local(
    params: MechanismParams,
    replies: Replies,
    top: np.ndarray,
    est: Floats,
    se: Floats,
    sizes: list[int],
) -> bool:
    """Adaptive depth [choice]: whether Phase II should start after this shared level. "chi2":
    once the parties' estimates of the kept prefixes differ more than their noise explains
    (:func:`heterogeneity_z`), or once one party holds a candidate far beyond its share of the
    sum (:func:`party_excess_z` above the bar Φ̄⁻¹(α/(M·|C|)), α = ``excess_alpha``; 0: off)."""
    if params.depth_rule == "ratio":
        return local_advantage(replies, top, est, se) >= params.local_ratio
    if heterogeneity_z(replies, top, est, sizes) >= params.heterogeneity:
        return True
    if params.excess_alpha <= 0:
        return False
    bar = noise_z(len(replies) * est.size, params.excess_alpha)
    return party_excess_z(replies, est, se, sizes) > bar


def party_excess_z(replies: Replies, est: Floats, se: Floats, sizes: list[int]) -> float:
    """The largest z-score, over parties i and all candidates v of a shared level, of party i's
    excess over its share of the sum: (ĉ_i(v) − w_i·F(v)) / SD with w_i = n_i/N and
    SD² = (1 − w_i)²·SE_i(v)² + w_i²·(SE(v)² − SE_i(v)²) (the sum holds ĉ_i itself).

    Under the homogeneous model each is ≈ N(0, 1), so of M·|C| of them the largest passes
    Φ̄⁻¹(α/(M·|C|)) with probability ≈ α. It sees what the χ² over the kept prefixes cannot: an
    item one party holds much of, too rare in the sum to be kept (docs/mechanisms.md §5).
    −∞ with fewer than two parties."""
    if len(replies) < 2 or est.size == 0:
        return -math.inf
    total = float(sum(sizes[i] for i in replies))
    best = -math.inf
    for i, res in replies.items():
        assert isinstance(res, EstimateResult)
        w = sizes[i] / total
        own = res.stderrs**2
        var = (1.0 - w) ** 2 * own + w**2 * np.maximum(se**2 - own, 0.0)
        z = (res.estimates - w * est) / np.sqrt(np.maximum(var, 1e-18))
        best = max(best, float(z.max()))
    return best


def local_advantage(replies: Replies, top: np.ndarray, est: Floats, se: Floats) -> float:
    """√M / N_eff for the kept prefixes: how much better one party sees an item than the sum does.

    N_eff = Σ_v (F_v² − SE_v²) / Σ_v Σ_i (ĉ_i,v² − SE_i,v²) is the effective number of parties
    holding the prefixes' users (noise-corrected participation ratio; M for IID data, 1 when every
    item lives in one party). With equal noise per party, a party holding 1/N_eff of an item sees
    it with z-score (c/N_eff)/σ, the sum with c/(√M·σ): their ratio is √M / N_eff. Only prefixes
    with F > 2·SE take part; 0 when none does (stay global).
    """
    strong = top[est[top] > 2.0 * se[top]]
    if len(replies) < 2 or strong.size == 0:
        return 0.0
    num = float(np.sum(est[strong] ** 2 - se[strong] ** 2))
    den = 0.0
    for res in replies.values():
        assert isinstance(res, EstimateResult)
        den += float(np.sum(res.estimates[strong] ** 2 - res.stderrs[strong] ** 2))
    if num <= 0.0 or den <= 0.0:
        return 0.0
    return math.sqrt(len(replies)) * den / num
