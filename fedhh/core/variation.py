"""The variation-ratio shuffling bound (Wang et al., "Privacy amplification via shuffling:
unified, simplified, and tightened", VLDB 2024), in the form fedhh can prove (docs/privacy.md).

A randomizer R is described by its *variation-ratio profile* (:class:`VariationRatio`):
``p`` bounds the ratio R(x⁰)(y)/R(x¹)(y) for any two inputs (e^ε₀ for an ε₀-LDP oracle),
``beta`` is the total variation distance between R(x⁰) and R(x¹) (the same for every pair of
inputs: the oracles that give a profile are symmetric), ``q`` bounds R(x⁰)(y)/R(x)(y) for any
other user's input x, and ``blanket`` is a probability r₂ with which every other user's report
is a sample of the common part of R(x⁰) and R(x¹) (γ/q for any randomizer; more for some).

With α = β/(p − 1) and γ = 1 − (p + 1)·α, the victim's two distributions split as
R(x⁰) = pα·Q₀ + α·Q₁ + γ·Q₂ and R(x¹) = α·Q₀ + pα·Q₁ + γ·Q₂ (Q₀, Q₁ the normalised positive
and negative parts of R(x⁰) − R(x¹), disjoint; Q₂ the normalised common part), and every other
user's report is a Q₀ sample with probability r = pα/q, a Q₁ sample with probability r and a Q₂
sample with probability r₂ (R(x) ≥ max(R(x⁰), R(x¹))/q = (pα·Q₀ + pα·Q₁ + γ·Q₂)/q). Tell the
recipient, for every report, which of Q₀, Q₁, Q₂ or the user's own remainder it was drawn
from: the remainders no longer depend on the victim's input, so what the recipient learns is
a post-processing of the three counts (a, b, d) = (A, B, D) + the victim's e₀, e₁ or e₂, with
(A, B, D) ~ Multinomial(n − 1; r, r, r₂) and the victim's count e₀ | e₁ | e₂ with probabilities
pα | α | γ under x⁰ and α | pα | γ under x¹. δ(ε) is the hockey-stick divergence of that pair.

The paper's own pair counts the victim's Q₂ report among all the other users' non-clone
reports (the third count merged into the remainder). That pair is not always an upper bound:
for shuffled GRR over 3 values, n = 200, ε₀ = 4, δ = 10⁻⁶ it gives ε = 3.73 where the exact
ε is 4.00 (the other users holding the victim's value; tests/core/test_variation.py). Counting
Q₂ samples separately, as here, keeps the bound valid for every dataset.

The likelihood ratio of the pair at (a, b, d) is (p·a + b + κ·d)/(a + p·b + κ·d) with
κ = pγ/(q·r₂), linear in each count, so the region where it exceeds e^ε is, for each clone
count C = a + b and each a, a half-line in d: δ(ε) is a sum over (C, a) of binomial CDFs of D.
Only a band of a per C has a CDF strictly between 0 and 1; outside it the sums are binomial
tails of A. Everything left out (tails beyond 12 standard deviations) is added to δ with the
largest coefficient it could carry, so the figure stays an upper bound.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedhh.errors import ParameterError

_SD = 10.0  # tails beyond this many standard deviations are left out (and their mass added)
_TIE = 1e-9  # relative margin that settles rounding at the region's boundary (see below)
_CHUNK = 256  # clone counts handled at once (bounded memory)


@dataclass(frozen=True)
class VariationRatio:
    """A randomizer's variation-ratio profile (see the module docstring)."""

    p: float
    beta: float
    q: float
    blanket: float

    def __post_init__(self) -> None:
        if not (self.p > 1 and self.q >= 1 and math.isfinite(self.p) and math.isfinite(self.q)):
            raise ParameterError(f"a profile needs p > 1 and q ≥ 1, got p={self.p}, q={self.q}")
        if not 0 < self.beta <= (self.p - 1) / (self.p + 1) * (1 + 1e-12):
            raise ParameterError(
                f"β must be in (0, (p − 1)/(p + 1)] for an LDP randomizer, got {self.beta}"
            )
        if not 0 <= self.blanket <= 1 - 2 * self.clone or (self.common > 0) != (self.blanket > 0):
            raise ParameterError(
                f"the blanket probability must be in [0, 1 − 2r], and > 0 exactly when the "
                f"common part γ is, got {self}"
            )

    @property
    def alpha(self) -> float:
        return self.beta / (self.p - 1)

    @property
    def common(self) -> float:
        """γ: the weight of the victim's common part Q₂ (0 within rounding of the largest β)."""
        gamma = 1.0 - (self.p + 1) * self.alpha
        return gamma if gamma > 1e-12 else 0.0

    @property
    def clone(self) -> float:
        """r: the probability that another user's report is a Q₀ sample (and a Q₁ sample)."""
        return self.p * self.alpha / self.q

    @classmethod
    def generic(cls, epsilon: float, beta: float) -> VariationRatio:
        """The profile any ε₀-LDP randomizer with pairwise total variation β has."""
        p = math.exp(epsilon)
        gamma = 1.0 - (p + 1) * beta / (p - 1)
        return cls(p, beta, p, gamma / p if gamma > 1e-12 else 0.0)


def _log_pmf(k: np.ndarray, n: np.ndarray, prob: float) -> np.ndarray:
    """log P[Bin(n, prob) = k] for 0 ≤ k ≤ n (elementwise; 0 < prob < 1)."""
    from scipy import special

    return (
        special.gammaln(n + 1)
        - special.gammaln(k + 1)
        - special.gammaln(n - k + 1)
        + k * math.log(prob)
        + (n - k) * math.log1p(-prob)
    )


def variation_delta(n: int, profile: VariationRatio, eps: float) -> float:
    """δ(ε) of n shuffled reports of a randomizer with this profile (an upper bound)."""
    from scipy import stats

    p, alpha, gamma = profile.p, profile.alpha, profile.common
    r, r2 = profile.clone, profile.blanket
    ee = math.exp(eps)
    if ee >= p:
        return 0.0
    m = n - 1
    # P ∝ p·a + b + κ·d, Q ∝ a + p·b + κ·d (the common factor of the multinomial cancels)
    kappa = p * gamma / (profile.q * r2) if r2 > 0 else 0.0
    ca, cb, cd = p - ee, 1 - p * ee, kappa * (1 - ee)  # P − e^ε·Q ∝ ca·a + cb·b + cd·d
    parts: tuple[tuple[float, int, int, int], ...] = (
        (p * alpha - ee * alpha, 1, 0, 0),
        (alpha - ee * p * alpha, 0, 1, 0),
    )
    parts += ((gamma * (1 - ee), 0, 0, 1),) if gamma > 0 else ()
    worst = max(abs(c) for c, *_ in parts)
    if m == 0:  # the victim alone: its own hockey-stick divergence
        return max(0.0, p * alpha - ee * alpha)
    sd_c = math.sqrt(m * 2 * r * (1 - 2 * r))
    c_lo = max(0, int(m * 2 * r - _SD * sd_c) - 2)
    c_hi = min(m, int(m * 2 * r + _SD * sd_c) + 2)
    big_c = np.arange(c_lo, c_hi + 1)
    w_c = stats.binom.pmf(big_c, m, 2 * r)
    left_out = max(0.0, 1.0 - float(w_c.sum()))
    total, slack = 0.0, 0.0
    for lo in range(0, big_c.size, _CHUNK):
        c = big_c[lo : lo + _CHUNK]
        t, s = _chunk(c, m, (ca, cb, cd), parts, r, r2)
        total += float(np.dot(w_c[lo : lo + _CHUNK], t))
        slack += float(np.dot(w_c[lo : lo + _CHUNK], s))
    return min(1.0, max(0.0, total) + worst * (left_out + slack * len(parts)))


def _chunk(
    big_c: np.ndarray,
    m: int,
    coefs: tuple[float, float, float],
    parts: tuple[tuple[float, int, int, int], ...],
    r: float,
    r2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """For clone counts ``big_c``: Σ_parts coef·P[(A, C − A, D) + the part's count ∈ S | C], and
    the mass of D left out of its window (which the caller adds with the largest coefficient)."""
    from scipy import special

    ca, cb, cd = coefs
    nd = (m - big_c).astype(np.float64)  # D | C ~ Bin(n − 1 − C, r₂ / (1 − 2r))
    pd = r2 / (1 - 2 * r) if r2 > 0 else 0.0
    out = np.zeros(big_c.size)
    if cd == 0 or pd == 0:  # no common part: a threshold on A alone
        for coef, da, db, _ in parts:
            thr = -(ca * da + cb * (big_c + db)) / (ca - cb)
            thr = thr - (_TIE if coef > 0 else -_TIE) * (1 + np.abs(thr))  # see below
            a_hi = np.clip(np.floor(thr) + 1, 0, big_c + 1)
            out += coef * special.bdtrc(a_hi - 1, big_c, 0.5) * (a_hi > 0) + coef * (a_hi <= 0)
        return out, np.zeros(big_c.size)
    mean_d, sd_d = nd * pd, np.sqrt(nd * pd * (1 - pd))
    d_lo = np.maximum(0, np.floor(mean_d - _SD * sd_d) - 2)
    d_hi = np.minimum(nd, np.ceil(mean_d + _SD * sd_d) + 2)
    ni = m - big_c  # (scipy's binomial CDFs take integer trials)
    below = np.where(d_lo > 0, special.bdtr(np.maximum(d_lo - 1, 0), ni, pd), 0.0)
    above = np.where(d_hi < nd, special.bdtrc(d_hi, ni, pd), 0.0)
    # the CDF of D over its window, one row per C (an index past the row's end is its last)
    k = d_lo[:, None] + np.arange(int(np.max(d_hi - d_lo)) + 1)[None, :]
    inwin = k <= d_hi[:, None]
    pmf = np.where(inwin, np.exp(_log_pmf(np.minimum(k, nd[:, None]), nd[:, None], pd)), 0.0)
    cdf = below[:, None] + np.cumsum(pmf, axis=1)
    last = (d_hi - d_lo).astype(np.int64)
    slope = (ca - cb) / -cd  # the threshold on d grows by this per unit of a
    for coef, da, db, dd in parts:
        # the part adds (da, db, dd): (a, b, d) ∈ S ⟺ D < u(A) = (ca·(A + da) + cb·(C − A +
        # db)) / (−cd) − dd; below a_lo D's CDF there is (almost) 0, from a_hi on (almost) 1
        base = (ca * da + cb * (big_c + db)) / -cd - dd
        a_lo = np.clip(np.floor((d_lo - base) / slope), 0, big_c + 1)
        a_hi = np.clip(np.ceil((d_hi + 1 - base) / slope) + 1, 0, big_c + 1)
        width = int(np.max(a_hi - a_lo))
        band = np.zeros(big_c.size)
        if width > 0:
            a = a_lo[:, None] + np.arange(width)[None, :]
            inside = (a < a_hi[:, None]) & (a <= big_c[:, None])
            u = base[:, None] + slope * a
            # a cell on the boundary must not fall out of a positive part's region nor into a
            # negative one's by rounding: widen the region for the first, narrow it for the
            # second (either only adds to δ)
            u = u + (_TIE if coef > 0 else -_TIE) * (1 + np.abs(u))
            top = np.ceil(u) - 1 - d_lo[:, None]  # the largest D in the region, in the window
            idx = np.clip(top, 0, last[:, None]).astype(np.int64)
            val = np.where(top < 0, below[:, None], np.take_along_axis(cdf, idx, axis=1))
            ac = np.minimum(a, big_c[:, None])
            pa = np.exp(_log_pmf(ac, big_c[:, None].astype(np.float64), 0.5))
            band = np.where(inside, pa * val, 0.0).sum(axis=1)
        tail = np.where(a_hi > big_c, 0.0, special.bdtrc(np.maximum(a_hi - 1, 0), big_c, 0.5))
        tail = np.where(a_hi <= 0, 1.0, tail)  # P[A ≥ a_hi]
        out += coef * (band + tail)
    return out, below + above


@functools.lru_cache(maxsize=4096)
def variation_epsilon(
    n: int, profile: VariationRatio, delta: float, below: float | None = None, tol: float = 1e-4
) -> float:
    """ε_c: the least ε with :func:`variation_delta` ≤ δ, to within ``tol`` (at most ln p).
    With ``below`` (another bound's ε_c), returns ``below`` unchanged when this bound cannot
    beat it, after one evaluation."""
    hi = math.log(profile.p) if below is None else min(below, math.log(profile.p))
    if variation_delta(n, profile, hi) > delta:
        return hi if below is None else below
    return least_epsilon(lambda eps: variation_delta(n, profile, eps), hi, delta, tol)


def least_epsilon(delta_at: Callable[[float], float], hi: float, delta: float, tol: float) -> float:
    """The least ε in [0, ``hi``] with ``delta_at(ε)`` ≤ δ, to within ``tol``, by bisection
    (δ(ε) falls with ε; ``hi`` is taken to meet δ): the last step of every shuffling bound."""
    if delta_at(0.0) <= delta:
        return 0.0
    lo = 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if delta_at(mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi
