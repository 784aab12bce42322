"""What a user has spent across runs, towards its party and towards the coordinator
(docs/privacy.md, "Composition across a user's runs").

**Towards its party** a user is ε₀-LDP in each run it reports in, so after runs of ε₀,₁ … ε₀,ₖ
it is (Σ ε₀,ᵢ)-LDP (basic composition; the party's ledger, :mod:`fedhh.clients.budget`, adds
these up and refuses a run past the budget).

**Towards the coordinator** (and the analyst and other parties, who see only what it passes on)
each run is (ε_c,ᵢ, δᵢ)-DP for the user, the run's ε_c at the user's party (its worst group:
:func:`party_guarantees`). :func:`compose` states what k such runs are together:

* with the ``accounting`` extra (Google's ``dp_accounting``): the optimal composition of k
  (ε_c,ᵢ, δᵢ)-DP mechanisms, computed from their privacy loss distributions (PLD). Each run
  enters as the worst mechanism its (ε, δ) allows (privacy loss ∞ with probability δ, ±ε with
  probabilities ∝ e^±ε: Kairouz, Oh and Viswanath's dominating pair), the PLDs are composed by
  convolution with pessimistic rounding (an upper bound), and ε is the least with δ(ε) ≤
  Σ δᵢ + ``slack``. For k runs of one (ε, δ) this is Kairouz, Oh and Viswanath's optimal
  homogeneous composition, to the rounding; no closed form exists for different ε_c,ᵢ.
* without it, **basic composition**: (Σ ε_c,ᵢ, Σ δᵢ)-DP, valid always, loose once k is large
  and ε_c small.

The stated ε is never above basic composition's (which holds at the smaller δ as well).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedhh.core.privacy import DEFAULT_DELTA
from fedhh.errors import ParameterError

PLD = "pld"
BASIC = "basic"
METHODS = {
    PLD: "optimal composition of the runs' (ε_c, δ) by privacy loss distributions "
    "(dp_accounting, pessimistic rounding)",
    BASIC: "basic composition (Σ ε_c, Σ δ); install the 'accounting' extra for the optimal "
    "composition: pip install 'fedhh[accounting]'",
}
DISCRETIZATION = 1e-4  # the PLD's grid of privacy-loss values (rounded up: an upper bound)


def pld_available() -> bool:
    """Whether ``dp_accounting`` (the ``accounting`` extra) can be imported here."""
    try:
        return importlib.util.find_spec("dp_accounting") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Spent:
    """(ε, δ) of a user's runs together, by ``method``, with basic composition's figures."""

    epsilon: float
    delta: float
    runs: int
    method: str
    basic_epsilon: float
    basic_delta: float

    def fields(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "runs": self.runs,
            "method": self.method,
            "basic": {"epsilon": self.basic_epsilon, "delta": self.basic_delta},
        }


def _checked(guarantees: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    out = []
    for eps, delta in guarantees:
        if not (math.isfinite(eps) and eps >= 0 and 0 <= delta < 1):
            raise ParameterError(f"a run's guarantee must have ε ≥ 0 and δ in [0, 1): {eps, delta}")
        out.append((float(eps), float(delta)))
    return tuple(out)


def compose(
    guarantees: Iterable[tuple[float, float]],
    slack: float = DEFAULT_DELTA,
    method: str | None = None,
) -> Spent:
    """The (ε, δ) of runs of (εᵢ, δᵢ) each, together (see the module docstring). ``method``:
    ``"pld"`` (needs dp_accounting), ``"basic"``, or None: pld where it is installed."""
    runs = _checked(guarantees)
    chosen = method or (PLD if pld_available() else BASIC)
    if chosen not in METHODS:
        raise ParameterError(f"unknown composition method {chosen!r} ({', '.join(METHODS)})")
    if not 0 < slack < 1:
        raise ParameterError(f"the composition's δ slack must be in (0, 1), got {slack}")
    basic_eps = math.fsum(e for e, _ in runs)
    basic_delta = min(1.0, math.fsum(d for _, d in runs))
    if chosen == BASIC or not runs:
        return Spent(basic_eps, basic_delta, len(runs), chosen, basic_eps, basic_delta)
    delta = min(1.0, basic_delta + slack)
    eps = min(_pld_epsilon(tuple(sorted(Counter(runs).items())), delta), basic_eps)
    return Spent(eps, delta, len(runs), PLD, basic_eps, basic_delta)


@functools.lru_cache(maxsize=256)
def _pld_epsilon(counted: tuple[tuple[tuple[float, float], int], ...], delta: float) -> float:
    """ε at ``delta`` of the composition of ``count`` runs of each (ε, δ) (dp_accounting)."""
    from dp_accounting.pld import common
    from dp_accounting.pld import privacy_loss_distribution as pld

    total = None
    for (eps, d), count in counted:
        one = pld.from_privacy_parameters(
            common.DifferentialPrivacyParameters(eps, d),
            value_discretization_interval=DISCRETIZATION,
        )
        part = one.self_compose(count) if count > 1 else one
        total = part if total is None else total.compose(part)
    assert total is not None
    return float(total.get_epsilon_for_delta(delta))


def homogeneous_delta(k: int, eps: float, delta: float, eps_total: float) -> float:
    """δ at ``eps_total`` of k runs of one (ε, δ), composed optimally: Kairouz, Oh and
    Viswanath's closed form (ICML 2015, Theorem 3.3), the hockey-stick divergence of k
    randomized-response pairs, 1 − (1 − δ)^k·(1 − Σ_j C(k, j)·(p^(k−j)·q^j −
    e^eps_total·q^(k−j)·p^j)) over the j with (k − 2j)·ε > eps_total, p = e^ε/(1 + e^ε)."""
    from scipy.special import comb

    p = 1.0 / (1.0 + math.exp(-eps))
    q = 1.0 - p
    inner = math.fsum(
        float(comb(k, j)) * (p ** (k - j) * q**j - math.exp(eps_total) * q ** (k - j) * p**j)
        for j in range(k + 1)
        if (k - 2 * j) * eps > eps_total
    )
    return 1.0 - (1.0 - delta) ** k * (1.0 - inner)


def homogeneous_epsilon(k: int, eps: float, delta: float, delta_total: float) -> float:
    """The least ε with :func:`homogeneous_delta` ≤ ``delta_total`` (bisection to 10⁻⁹; at
    most k·ε, basic composition's figure): the closed form the PLD is checked against."""
    if homogeneous_delta(k, eps, delta, 0.0) <= delta_total:
        return 0.0
    lo, hi = 0.0, k * eps
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if homogeneous_delta(k, eps, delta, mid) <= delta_total else (mid, hi)
    return hi


def party_guarantees(block: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Per party, (ε_c, δ) of a run towards the coordinator for the party's users: its worst
    group's ε_c (a user is in one group of one party), from the run's ``privacy`` block.
    Parties with no group (no report) are left out: the run cost their users nothing."""
    central = block.get("central") or {}
    delta = float(central.get("delta", DEFAULT_DELTA))
    out: dict[str, tuple[float, float]] = {}
    for g in central.get("groups", ()):
        pid = str(g["party"])
        eps = float(g["central_epsilon"])
        out[pid] = (max(eps, out.get(pid, (0.0, 0.0))[0]), delta)
    return out
