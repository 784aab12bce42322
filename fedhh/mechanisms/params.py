"""Run parameters of the mechanisms (PEM, PEM-Local, PEM-Global, TAP, TAPS) and their defaults.

Everything a run needs is in :class:`MechanismParams`: it travels in the run spec, so every
party derives the same plan from it. Rules marked [choice] in docs/mechanisms.md are named here and
resolved to strategy objects by :mod:`fedhh.mechanisms.strategies`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fedhh.codec import check_bits
from fedhh.errors import ParameterError
from fedhh.oracles import ORACLES
from fedhh.oracles.base import check_epsilon

MECHANISMS = ("pem", "pem-local", "pem-global", "tap", "taps")
ORACLE_CHOICES = (*ORACLES, "auto")
STEP_RULES = ("planned", "fixed", "adaptive", "variance")
PARTY_ORDERS = ("size-desc", "size-asc", "given")
COMPLETION_MODES = ("fill", "sum")
PHASE1_KEEP = ("top", "confidence")
DEPTH_RULES = ("chi2", "ratio")
PRUNE_RULES = ("threshold", "consensus")
BASELINES = ("pem", "pem-local", "pem-global")
MAX_LEVEL_CANDIDATES = 1 << 20  # a party refuses larger candidate sets
DEFAULT_LEVEL_CANDIDATES = 1 << 17
DEFAULT_FINAL_WEIGHT = 1.0
NOISE_KEEP = 0.05  # expected zero-count candidates that pass the noise bar, over a whole level
ANSWER_ALPHA = 0.25  # TAP/TAPS answer bar: expected noise items answered (held-out seeds, §5)


@dataclass(frozen=True)
class MechanismParams:
    """Parameters of one run. ``None`` means "the default for this mechanism"
    (docs/mechanisms.md §11); call :meth:`resolved` to fill them in. Field names and meanings are
    stable (they are on the wire).
    """

    mechanism: str = "taps"
    epsilon: float = 4.0
    k: int = 16
    m: int = 32
    oracle: str = "auto"  # [choice] per level: "auto" = lowest Var* for |C|+1
    eta: int = 4  # PEM step and Phase I step η
    gamma: int | None = None  # start length γ = ⌈log2 k⌉
    phase1_levels: int | None = None  # t: Phase I rounds, so that L_s ≈ m/4 [choice]
    kappa1: int | None = None  # κ₁: Phase I prefixes kept per level (2k) [choice]
    kappa: int | None = None  # κ: Phase II prefixes kept per level (2k)
    report_k: int | None = None  # k': items each party reports (2k)
    step_rule: str = "planned"  # [choice] "planned" | "fixed" | "adaptive" | "variance"
    budget: int | None = None  # B: the "adaptive"/"variance" rules' candidate budget (κ·2^η)
    level_candidates: int | None = None  # "planned": most candidates a level decodes (2^17)
    final_weight: float | None = None  # users of the last level / any other level (PEM: 1)
    prune_z: float | None = None  # z of the prune rule [choice]: 0 (τ = 0); 2 with "consensus"
    prune_rule: str | None = None  # "threshold" (ĉ > z·SE; default) or "consensus" (TAPS option)
    phase1_keep: str = "top"  # [choice] "top": top-κ₁ positive; "confidence": + plausible top-k
    local_start: bool = True  # [choice] Phase II also extends the party's own top-κ at L_s
    adaptive_depth: bool = True  # [choice] continue Phase I while the parties look alike
    depth_rule: str = "chi2"  # [choice] adaptive depth: "chi2" (heterogeneity) or "ratio"
    heterogeneity: float = 3.0  # "chi2": go local once χ²/df is this many σ above 1
    excess_alpha: float = 0.01  # "chi2": also go local once a party's excess passes Φ̄⁻¹(α/(M·|C|))
    local_ratio: float = 0.6  # "ratio": go local once √M / N_eff reaches this
    party_order: str = "size-desc"  # TAPS sequential order [choice]
    prior_factor: float = 2.0  # TAPS: parties receive the top-c·k prior items [choice]
    consensus_z: float = 3.0  # TAPS: a prior item is reported when its estimate > z·SE [choice]
    prior_by_rank: bool = False  # TAPS: rank prior items its search did not reach, too [choice]
    completion: float = 0.0  # TAPS completion round: reserved user share ρ (0 = off) [choice]
    completion_mode: str = "fill"  # "fill": completion estimates fill missing parties only
    answer_alpha: float | None = None  # answer: items above the noise bar α (0: top-k) [choice]
    pool_size: int = 4096  # seed-pool OLH pool size S
    seed: int = 0

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ParameterError(msg)

        need(
            self.mechanism in MECHANISMS,
            f"unknown mechanism {self.mechanism!r}; choose one of {', '.join(MECHANISMS)}",
        )
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        need(_is_int(self.k) and self.k >= 1, f"k must be an integer ≥ 1, got {self.k!r}")
        object.__setattr__(self, "m", check_bits(self.m))
        need(
            self.oracle in ORACLE_CHOICES,
            f"unknown oracle {self.oracle!r}; choose one of {', '.join(ORACLE_CHOICES)}",
        )
        need(_is_int(self.eta) and 1 <= self.eta <= 16, f"eta must be in 1..16, got {self.eta!r}")
        for name in (
            "gamma",
            "phase1_levels",
            "kappa1",
            "kappa",
            "report_k",
            "budget",
            "level_candidates",
        ):
            v = getattr(self, name)
            need(
                v is None or (_is_int(v) and v >= (0 if name in ("gamma", "phase1_levels") else 1)),
                f"{name} must be a positive integer, got {v!r}",
            )
        need(
            self.step_rule in STEP_RULES,
            f"unknown step rule {self.step_rule!r}; choose one of {', '.join(STEP_RULES)}",
        )
        need(
            self.prune_z is None or (math.isfinite(self.prune_z) and self.prune_z >= 0),
            f"prune_z must be a finite number ≥ 0, got {self.prune_z!r}",
        )
        need(
            self.final_weight is None
            or (
                isinstance(self.final_weight, (int, float))
                and math.isfinite(self.final_weight)
                and 0 < self.final_weight <= 100
            ),
            f"final_weight must be a number in (0, 100], got {self.final_weight!r}",
        )
        need(
            self.level_candidates is None or self.level_candidates <= MAX_LEVEL_CANDIDATES,
            f"level_candidates must be at most {MAX_LEVEL_CANDIDATES}, got {self.level_candidates}",
        )
        need(
            self.prune_rule is None or self.prune_rule in PRUNE_RULES,
            f"unknown prune rule {self.prune_rule!r}; choose one of {', '.join(PRUNE_RULES)}",
        )
        need(
            self.party_order in PARTY_ORDERS,
            f"unknown party order {self.party_order!r}; choose one of {', '.join(PARTY_ORDERS)}",
        )
        need(self.prior_factor > 0, f"prior_factor must be > 0, got {self.prior_factor!r}")
        need(
            isinstance(self.consensus_z, (int, float))
            and math.isfinite(self.consensus_z)
            and self.consensus_z >= 0,
            f"consensus_z must be a finite number ≥ 0, got {self.consensus_z!r}",
        )
        need(0.0 <= self.completion < 0.5, f"completion must be in [0, 0.5), got {self.completion}")
        need(
            self.answer_alpha is None
            or (
                isinstance(self.answer_alpha, (int, float))
                and not isinstance(self.answer_alpha, bool)
                and math.isfinite(self.answer_alpha)
                and self.answer_alpha >= 0
            ),
            f"answer_alpha must be a finite number ≥ 0, got {self.answer_alpha!r}",
        )
        need(
            self.phase1_keep in PHASE1_KEEP,
            f"unknown phase1_keep {self.phase1_keep!r}; choose one of {', '.join(PHASE1_KEEP)}",
        )
        for flag in ("local_start", "adaptive_depth", "prior_by_rank"):
            value = getattr(self, flag)
            need(isinstance(value, bool), f"{flag} must be true or false, got {value!r}")
        need(
            self.depth_rule in DEPTH_RULES,
            f"unknown depth rule {self.depth_rule!r}; choose one of {', '.join(DEPTH_RULES)}",
        )
        need(
            math.isfinite(self.heterogeneity) and self.heterogeneity > 0,
            f"heterogeneity must be a finite number > 0, got {self.heterogeneity!r}",
        )
        need(
            math.isfinite(self.excess_alpha) and 0 <= self.excess_alpha < 1,
            f"excess_alpha must be a number in [0, 1), got {self.excess_alpha!r}",
        )
        need(
            math.isfinite(self.local_ratio) and self.local_ratio > 0,
            f"local_ratio must be a finite number > 0, got {self.local_ratio!r}",
        )
        need(
            self.completion_mode in COMPLETION_MODES,
            f"unknown completion mode {self.completion_mode!r}",
        )
        need(
            _is_int(self.pool_size) and 1 <= self.pool_size <= 1 << 24,
            f"pool_size must be in 1..2^24, got {self.pool_size!r}",
        )
        need(
            _is_int(self.seed) and self.seed >= 0, f"seed must be an integer ≥ 0, got {self.seed!r}"
        )
        if self.gamma is not None:
            need(self.gamma < self.m, f"gamma ({self.gamma}) must be below m ({self.m})")

    # --- derived values (the defaults of docs/mechanisms.md §11) -------------------------
    @property
    def planned(self) -> bool:
        """Whether the level planner sets TAP/TAPS's levels (the baselines keep PEM's fixed η)."""
        return self.step_rule == "planned" and self.mechanism not in BASELINES

    def resolved(self) -> MechanismParams:
        """A copy with every ``None`` replaced by the default for this mechanism."""
        k = self.k
        gamma = (
            self.gamma
            if self.gamma is not None
            else min(max(0, math.ceil(math.log2(k))), self.m - 1)
        )
        kappa = self.kappa if self.kappa is not None else 2 * k
        kappa1 = self.kappa1 if self.kappa1 is not None else 2 * k
        report_k = self.report_k if self.report_k is not None else 2 * k
        budget = self.budget if self.budget is not None else kappa * 2**self.eta
        level_candidates = (
            self.level_candidates if self.level_candidates is not None else DEFAULT_LEVEL_CANDIDATES
        )
        if self.final_weight is not None:
            final_weight = float(self.final_weight)
        else:
            final_weight = 1.0 if self.mechanism in BASELINES else DEFAULT_FINAL_WEIGHT
        if self.phase1_levels is not None:  # 0: no shared trie (the "without Phase I" ablation)
            t = self.phase1_levels
        elif self.planned:
            t = 1
        else:
            t = max(1, round((self.m / 4 - gamma) / self.eta))
        t = max(0, min(t, math.ceil((self.m - gamma) / self.eta)))
        if self.prune_z is not None:
            z = self.prune_z
        else:
            z = 2.0 if self.prune_rule == "consensus" else 0.0
        # TAPS prunes as TAP by default: in the study, consensus pruning gave a lower F1 in 9 of
        # 120 paired runs (ε = 1, 2, 4), a higher one in 2, the same in the rest (mechanisms.md §6)
        prune_rule = self.prune_rule if self.prune_rule is not None else "threshold"
        # TAP/TAPS answer only what noise is unlikely to reach (mechanisms.md §5); the baselines
        # answer their top-k, as published
        if self.answer_alpha is not None:
            answer_alpha = float(self.answer_alpha)
        else:
            answer_alpha = 0.0 if self.mechanism in BASELINES else ANSWER_ALPHA
        return replace(
            self,
            gamma=gamma,
            kappa=kappa,
            kappa1=kappa1,
            report_k=report_k,
            budget=budget,
            phase1_levels=t,
            prune_z=z,
            prune_rule=prune_rule,
            level_candidates=level_candidates,
            final_weight=final_weight,
            answer_alpha=answer_alpha,
        )

    def level_lengths(self, start: int, step: int) -> list[int]:
        """Lengths start+step, start+2·step, ... capped at m (the last step may be short)."""
        out, length = [], start
        while length < self.m:
            length = min(length + step, self.m)
            out.append(length)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MechanismParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParameterError(f"unknown run parameter(s): {', '.join(unknown)}")
        return cls(**data)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
