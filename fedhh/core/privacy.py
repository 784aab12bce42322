"""What a run guarantees, and to whom (docs/privacy.md): the local guarantee of every report and
the central guarantee that aggregation buys towards everyone who sees only a party's sums.

**Local**: every user sends one report, made by an ε₀-LDP frequency oracle; everything computed
from the reports is post-processing, so each user is ε₀-LDP towards everyone, the party that
collects the report included.

**Central** (privacy amplification by shuffling): a party never forwards a report. It forwards,
per group of users (one group a level; the groups are disjoint users), estimates computed from
the multiset of that group's reports, i.e. from the group's reports shuffled. n reports of
ε₀-LDP randomizers, shuffled, are (ε_c, δ)-DP (Feldman, McMillan and Talwar, "Hiding among the
clones", FOCS 2021), with ε_c far below ε₀ for large n. So towards the coordinator, the other
parties and the analyst a user of a group of n is (ε_c(n), δ)-DP; a user is in one group of one
party, so the run's guarantee is the worst group's. Assumptions: the reports are independent
(each user's randomness is its own), the party does not collude with the recipient, and the other
users of the group report honestly.

The bound: with p = e^(−ε₀), C ~ Bin(n − 1, p) (how many of the other users are "clones" of the
one whose data changes) and α = e^ε₀/(e^ε₀ + 1), the shuffled output of two neighbouring inputs
is dominated by the pair of mixtures P_c = α·B_c + (1 − α)·(B_c + 1) and Q_c = (1 − α)·B_c +
α·(B_c + 1), B_c ~ Bin(c, ½); δ(ε) = E_C[Σ_a max(0, P_C(a) − e^ε·Q_C(a))] (FMT21, Theorem 3.2 and
its numerical procedure; P and Q are mirror images, so the two directions agree). The likelihood
ratio P_c(a)/Q_c(a) falls with a, so the inner sum is a difference of two binomial CDFs at one
cutoff; ε_c is the least ε with δ(ε) ≤ δ, by bisection. :func:`shuffle_epsilon_closed_form` is
the paper's closed form (Theorem 3.1), valid for ε₀ ≤ log(n / (16·log(4/δ))), a looser bound
kept to check against.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedhh.core.variation import VariationRatio, least_epsilon, variation_epsilon
from fedhh.errors import ParameterError

DEFAULT_DELTA = 1e-8  # δ of the central guarantee, unless a run asks otherwise
# A party's ledger, unless its operator says otherwise (the one place for these defaults: the
# party agent, the Flower ClientApp, fedhh simulate and the device SDK's own cap take them here,
# a module the device SDK imports cheaply)
DEFAULT_BUDGET = 40.0  # ε each user of a party may spend across runs
DEFAULT_MAX_EPSILON = 10.0  # ε one run may ask of a party's users (and a device's own cap)
FMT = "fmt"
VARIATION = "variation-ratio"
BOUNDS = {
    FMT: "numerical shuffling bound of Feldman, McMillan and Talwar (FOCS 2021)",
    VARIATION: "variation-ratio bound of Wang et al. (VLDB 2024), with the victim's common part "
    "counted among the other users' samples of it (fedhh.core.variation)",
}
BOUND = (
    "per group, the tighter of the " + BOUNDS[FMT] + " and the " + BOUNDS[VARIATION] + " (from "
    "the oracle's own parameters, where it gives them); `groups[].bound` says which"
)
ASSUMPTIONS = (
    "each user's report is made with its own randomness, independent of the other users'",
    "the party forwards only sums over a group's reports, and does not collude with the recipient",
    "the other users of the group report honestly (a dishonest user weakens the guarantee towards "
    "the recipient to that of a smaller group)",
)
_TAIL = 1e-16  # mass of C left out of the sum over c (added to δ: the bound stays an upper bound)


def _check(n: int, eps0: float, delta: float) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"a group needs at least one user, got {n!r}")
    if not (math.isfinite(eps0) and eps0 > 0):
        raise ParameterError(f"ε₀ must be a finite number > 0, got {eps0!r}")
    if not 0 < delta < 1:
        raise ParameterError(f"δ must be in (0, 1), got {delta!r}")


def shuffle_delta(n: int, eps0: float, eps: float) -> float:
    """δ(ε) of n shuffled ε₀-LDP reports (the module's mixture bound; an upper bound)."""
    _check(n, eps0, 0.5)
    if eps >= eps0:
        return 0.0
    if n == 1:  # nobody to hide among: the local randomizer's own δ(ε)
        return _mixture_delta(np.array([0]), np.array([1.0]), eps0, eps)
    p = math.exp(-eps0)
    mean, sd = (n - 1) * p, math.sqrt((n - 1) * p * (1 - p))
    lo, hi = max(0, int(mean - 14 * sd) - 2), min(n - 1, int(mean + 14 * sd) + 2)
    c = np.arange(lo, hi + 1)
    from scipy import stats  # here, not at import: the device SDK imports this module

    w = stats.binom.pmf(c, n - 1, p)
    keep = w > 0
    c, w = c[keep], w[keep]
    left_out = max(0.0, 1.0 - float(w.sum()))
    return min(1.0, _mixture_delta(c, w, eps0, eps) + left_out + _TAIL)


def _mixture_delta(c: np.ndarray, w: np.ndarray, eps0: float, eps: float) -> float:
    """Σ_c w(c)·Σ_a max(0, P_c(a) − e^ε·Q_c(a)) (see the module docstring)."""
    alpha = math.exp(eps0) / (math.exp(eps0) + 1.0)
    ee = math.exp(eps)
    up = alpha - ee * (1 - alpha)  # coefficient of B_c(a) in P_c(a) − e^ε·Q_c(a)
    down = (1 - alpha) - ee * alpha  # coefficient of B_c(a − 1); < 0
    if up <= 0:
        return 0.0
    from scipy import special

    rho = up / -down  # P_c(a) > e^ε·Q_c(a)  ⟺  a/(c − a + 1) < ρ
    t = np.floor(rho * (c + 1) / (1 + rho) - 1e-12)  # the largest a with a/(c − a + 1) < ρ
    f_t = np.where(t >= 0, special.bdtr(np.maximum(t, 0), c, 0.5), 0.0)  # Bin(c, ½) CDF
    f_t1 = np.where(t >= 1, special.bdtr(np.maximum(t - 1, 0), c, 0.5), 0.0)
    inner = np.maximum(0.0, up * f_t + down * f_t1)
    return float(np.dot(w, inner))


@functools.lru_cache(maxsize=4096)
def shuffle_epsilon(n: int, eps0: float, delta: float = DEFAULT_DELTA, tol: float = 1e-4) -> float:
    """ε_c: the least ε with :func:`shuffle_delta` ≤ δ, to within ``tol`` (never above ε₀: the
    local guarantee holds towards everyone)."""
    _check(n, eps0, delta)
    return least_epsilon(lambda eps: shuffle_delta(n, eps0, eps), float(eps0), delta, tol)


def shuffle_epsilon_closed_form(n: int, eps0: float, delta: float) -> float:
    """FMT21's closed form (Theorem 3.1): log(1 + (1 − e^−ε₀)/(1 + e^(−ε₀−e))·(a + c)) with
    a = 8·√(e^ε₀·log(4/δ)/n), c = 8·e^ε₀/n, e = log(1 + a + c); ε₀ outside its regime
    (ε₀ > log(n / (16·log(4/δ)))) gets ε₀."""
    _check(n, eps0, delta)
    if eps0 > math.log(n / (16 * math.log(4 / delta))):
        return float(eps0)
    a = 8 * math.sqrt(math.exp(eps0) * math.log(4 / delta) / n)
    c = 8 * math.exp(eps0) / n
    e = math.log(1 + a + c)
    return math.log(1 + (1 - math.exp(-eps0)) / (1 + math.exp(-eps0 - e)) * (a + c))


@dataclass(frozen=True)
class PrivacyEvent:
    """One group's reports: its party, level (phase and prefix length), oracle, users and ε₀,
    and the oracle's variation-ratio profile over the level's domain (None: it claims none)."""

    party: str
    phase: str
    length: int
    oracle: str
    users: int
    epsilon: float
    profile: VariationRatio | None = None

    def bounds(self, delta: float) -> dict[str, float]:
        """ε_c of this group by each bound that applies (FMT always, the variation-ratio bound
        where the oracle gives its profile)."""
        fmt = shuffle_epsilon(int(self.users), float(self.epsilon), float(delta))
        out = {FMT: fmt}
        if self.profile is not None:
            out[VARIATION] = variation_epsilon(int(self.users), self.profile, float(delta), fmt)
        return out

    def central(self, delta: float) -> float:
        """ε_c of this group towards the recipients of the party's sums: the tighter bound."""
        return min(self.bounds(delta).values())


ProfileOf = Callable[[str, int], "VariationRatio | None"]
"""(oracle name, domain size) -> the oracle's variation-ratio profile, or None."""


def events_of(
    levels: Iterable[Mapping[str, Any]], epsilon: float, profile_of: ProfileOf | None = None
) -> list[PrivacyEvent]:
    """The run's privacy events from its per-level cost records (every group of reports); a
    level's domain is its candidates and ⊥."""
    return [
        PrivacyEvent(
            str(lv["party"]),
            str(lv.get("phase", "")),
            int(lv["length"]),
            str(lv["oracle"]),
            int(lv["reports"]),
            float(epsilon),
            None
            if profile_of is None
            else profile_of(str(lv["oracle"]), int(lv["candidates"]) + 1),
        )
        for lv in levels
        if int(lv["reports"]) > 0
    ]


def _group(e: PrivacyEvent, delta: float) -> dict[str, Any]:
    bounds = e.bounds(delta)
    used = min(bounds, key=lambda k: (bounds[k], k != FMT))  # a tie: FMT, the older
    row = {k: v for k, v in asdict(e).items() if k != "profile"}
    return {
        **row,
        "central_epsilon": bounds[used],
        "bound": used,
        "central_epsilon_by_bound": bounds,
    }


def privacy_block(
    events: Sequence[PrivacyEvent], epsilon: float, delta: float = DEFAULT_DELTA
) -> dict[str, Any]:
    """The result document's ``privacy`` block: the local guarantee, the central one per group
    and for the run (the worst group), per recipient, with the bound and its assumptions."""
    groups = [_group(e, delta) for e in events]
    worst = max((g["central_epsilon"] for g in groups), default=0.0)
    smallest = min((e.users for e in events), default=0)
    local = (
        f"Each user sent at most one report, made by an ε-LDP frequency oracle with ε = "
        f"{epsilon:g}; everything else is post-processing, so the run is {epsilon:g}-LDP for every "
        "user."
    )
    central = (
        f" Towards the coordinator, the other parties and the analyst, who see only sums over "
        f"groups of at least {smallest:,} users, it is ({worst:.3g}, {delta:g})-DP (shuffling)."
        if events
        else ""
    )
    return {
        "epsilon": float(epsilon),
        "reports_per_user": 1,
        "users_reported": int(sum(e.users for e in events)),
        "oracles": sorted({e.oracle for e in events}),
        "statement": local + central,
        "local": {"epsilon": float(epsilon), "towards": "everyone, the party included"},
        "central": {
            "epsilon": worst,
            "delta": float(delta),
            "towards": ["coordinator", "other parties", "analyst"],
            "bound": BOUND,
            "assumptions": list(ASSUMPTIONS),
            "groups": groups,
        },
        "recipients": {
            "party": {"epsilon": float(epsilon), "delta": 0.0},
            "coordinator": {"epsilon": worst, "delta": float(delta)},
            "other parties": {"epsilon": worst, "delta": float(delta)},
            "analyst": {"epsilon": worst, "delta": float(delta)},
        },
    }
