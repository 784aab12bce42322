"""Post-processing of estimate vectors (never changes privacy: it only touches outputs).

Norm-Sub (Wang et al., NDSS 2020): subtract one constant δ from every estimate and clip at zero so
that the clipped estimates sum to a known total. Clip-to-zero: replace negative estimates by 0.
The noise bar (:func:`noise_z`): the z-score above which an estimate of a candidate nobody holds
is unlikely, the answer rule of every mechanism and of the known-domain reference.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.errors import ParameterError


def noise_z(n_candidates: int, alpha: float) -> float:
    """The noise bar's z = Φ̄⁻¹(α/|C|) (Bonferroni): of |C| candidates nobody holds, α on
    average have an estimate above z·SE (−∞ when α ≥ |C|: no bar)."""
    tail = alpha / max(n_candidates, 1)
    if tail >= 1.0:
        return -math.inf
    return -NormalDist().inv_cdf(tail) if tail > 0.0 else math.inf


def normal_sf(x: float) -> float:
    """Φ̄(x) = P(Z > x) for a standard normal Z (exact in the tail, unlike 1 − Φ(x))."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def clip_to_zero(estimates: ArrayLike) -> NDArray[np.float64]:
    """max(ĉ, 0) elementwise."""
    return np.maximum(np.asarray(estimates, dtype=np.float64), 0.0)


def norm_sub(estimates: ArrayLike, total: float) -> NDArray[np.float64]:
    """Norm-Sub: max(ĉ − δ, 0) with δ chosen so the result sums to ``total`` (> 0).

    Solved exactly in O(d log d): sort descending; for the j largest estimates kept positive,
    δ = (Σ_{i≤j} ĉ_(i) − total)/j, taking the largest j with ĉ_(j) > δ.
    """
    est = np.asarray(estimates, dtype=np.float64)
    if est.ndim != 1 or est.size == 0:
        raise ParameterError("norm_sub needs a non-empty 1-D estimate vector")
    if not np.isfinite(total) or total <= 0:
        raise ParameterError(f"norm_sub needs a finite total > 0, got {total}")
    srt = np.sort(est)[::-1]
    csum = np.cumsum(srt)
    j = np.arange(1, est.size + 1)
    delta = (csum - total) / j
    valid = np.flatnonzero(srt > delta)
    d = delta[valid[-1]] if valid.size else delta[0]
    return np.maximum(est - d, 0.0)
