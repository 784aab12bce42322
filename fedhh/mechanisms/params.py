"""Run parameters of the mechanisms (PEM, PEM-Local, PEM-Global, TAP, TAPS) and their defaults.

Everything a run needs is in :class:`MechanismParams`: it travels in the run spec, so every
party derives the same plan from it. Rules marked [choice] in docs/mechanisms.md are named here and
resolved to strategy objects by :mod:`fedhh.mechanisms.strategies`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fedhh.core.declare import param
from fedhh.core.items import check_bits
from fedhh.core.privacy import DEFAULT_DELTA
from fedhh.errors import ParameterError
from fedhh.mechanisms.registry import MECHANISMS, Mechanism, mechanism_of
from fedhh.oracles import ORACLES
from fedhh.oracles.base import check_epsilon

ORACLE_CHOICES = (*ORACLES, "auto")
STEP_RULES = ("planned", "fixed", "adaptive", "variance")
PARTY_ORDERS = ("size-desc", "size-asc", "given")
COMPLETION_MODES = ("fill", "sum")
PHASE1_KEEP = ("top", "confidence")
DEPTH_RULES = ("chi2", "ratio")
PRUNE_RULES = ("threshold", "consensus")
# the candidate caps of a level, for every layer (what each mechanism is and does, one line
# each: fedhh.mechanisms.registry)
MAX_LEVEL_CANDIDATES = 1 << 20  # a party refuses larger candidate sets
DEFAULT_LEVEL_CANDIDATES = 1 << 17  # B: the level plan's decode budget
MAX_STEP_CANDIDATES = 1 << 17  # the variance-aware step's hard cap (decode cost)
KEEP_PER_K = 2  # κ, κ₁ and k' are 2k unless set
DEFAULT_FINAL_WEIGHT = 1.0
NOISE_KEEP = 0.05  # expected zero-count candidates that pass the noise bar, over a whole level
ANSWER_ALPHA = 0.25  # the answer bar of every mechanism: expected noise items answered (§5)


@dataclass(frozen=True)
class MechanismParams:
    """Parameters of one run. ``None`` means "the default for this mechanism"
    (docs/mechanisms.md §11); call :meth:`resolved` to fill them in. Field names and meanings are
    stable (they are on the wire).
    """

    mechanism: str = param(
        "taps",
        "the mechanism: taps (TAP with a sequential consensus pass, §6) or tap (§5); or a "
        "baseline (§4): pem-local (each party alone, one round), pem-global (every level "
        "shared) or pem (all users pooled, the non-federated reference)",
    )
    epsilon: float = param(
        4.0,
        "privacy budget ε of each user's one report (ε-LDP), in (0, 40]: smaller is more "
        "private and noisier",
    )
    k: int = param(16, "how many heavy hitters to find: the answer holds at most the top k items")
    m: int = param(32, "bits of an item code; the item codec of the data sets it (not a flag)")
    oracle: str = param(
        "auto",
        "frequency oracle (§2): auto picks per level the least-variance one for the level's "
        "candidates (and a seed pool when cheaper to decode); grr, oue, olh, olh-pool or "
        "olh-affine (OLH with a linear hash whose wide levels decode by a Hadamard transform) "
        "use that one at every level",
    )
    eta: int = param(
        4,
        "step η in bits per level (1..16): the baselines' step, every level's with step-rule "
        "fixed, and Phase I's with adaptive or variance",
    )
    gamma: int | None = param(
        None,
        "start length γ in bits (below m) of the baselines and of a non-planned Phase I: the "
        "first level estimates all 2^(γ+η) prefixes (default ⌈log2 k⌉)",
    )
    phase1_levels: int | None = param(
        None,
        "t: shared Phase I levels before the parties may go local (with adaptive depth, the "
        "least; without, exactly); 0: no shared trie (default 1 when planned, else the η-steps "
        "from γ to about m/4 bits)",
    )
    kappa1: int | None = param(
        None, "κ₁: prefixes the coordinator keeps per shared Phase I level (default 2k)"
    )
    kappa: int | None = param(None, "κ: prefixes a party keeps per Phase II level (default 2k)")
    report_k: int | None = param(None, "k': items each party reports at full length (default 2k)")
    step_rule: str = param(
        "planned",
        "how long each level's step is (§10): planned (fewest levels within level-candidates), "
        "fixed (η bits), adaptive (⌊log2(B/|P|)⌋ bits) or variance (widest step that stays "
        "clear of noise); the baselines always step by η",
    )
    budget: int | None = param(
        None,
        "B: candidate budget of the adaptive and variance step rules (default κ·2^η)",
    )
    level_candidates: int | None = param(
        None,
        "planned rule: most candidates one level plans to decode, ≤ 2^20 (TAPS: ≤ 2^20 less "
        "the ⌈prior-factor·k⌉ prior items a level may add; default 2^17)",
    )
    final_weight: float | None = param(
        None,
        "users of the last level relative to any other level's, in (0, 100] (default 1)",
    )
    prune_z: float | None = param(
        None,
        "z of the prune rule, ≥ 0 (default 0 for threshold: keep positive estimates; 2 for "
        "consensus)",
    )
    prune_rule: str | None = param(
        None,
        "Phase II pruning: threshold (keep ĉ > z·SE, the default) or consensus (TAPS: also "
        "reach the prior's bar, §6)",
    )
    phase1_keep: str = param(
        "top",
        "Phase I keeps the top-κ₁ positive sums (top) or also every prefix that may still be "
        "in the top-k (confidence)",
    )
    local_start: bool = param(
        True,
        "Phase II also extends each party's own top-κ prefixes of the last shared level",
    )
    adaptive_depth: bool = param(
        True,
        "keep sharing Phase I levels while the parties look alike (depth-rule decides); off: "
        "exactly phase1-levels shared levels",
    )
    depth_rule: str = param(
        "chi2",
        "adaptive depth test: chi2 (parties' estimates differ beyond their noise, see "
        "heterogeneity and excess-alpha) or ratio (see local-ratio)",
    )
    heterogeneity: float = param(
        3.0,
        "chi2 rule: go local once the parties' χ²/df is this many standard deviations above 1 "
        "(> 0)",
    )
    excess_alpha: float = param(
        0.01,
        "chi2 rule: also go local once one party's excess over its share of a candidate "
        "passes the bar Φ̄⁻¹(α/(M·|C|)), in [0, 1); 0: off",
    )
    local_ratio: float = param(
        0.6,
        "ratio rule: go local once √M / N_eff (N_eff the parties' participation ratio) "
        "reaches this (> 0)",
    )
    party_order: str = param(
        "size-desc",
        "TAPS: order of the sequential pass over the parties: size-desc (largest first), "
        "size-asc or given (as the data lists them)",
    )
    prior_factor: float = param(
        2.0, "TAPS: each party receives the prior's top c·k items, c this factor (> 0)"
    )
    consensus_z: float = param(
        3.0,
        "TAPS: a party reports a prior item when its estimate exceeds z·SE (≥ 0); also the "
        "completion round's gate",
    )
    prior_by_rank: bool = param(
        False,
        "TAPS: also rank prior items the party's own search did not reach into its top-k' "
        "report (off: only significant ones are added)",
    )
    completion: float = param(
        0.0,
        "TAPS completion round: share ρ of each party's users kept back to estimate the final "
        "top items, in [0, 0.5); 0: no completion round",
    )
    completion_mode: str = param(
        "fill",
        "completion round: fill (its estimates fill in only parties that did not report an "
        "item, when significant) or sum (its estimates alone)",
    )
    answer_alpha: float | None = param(
        None,
        "α of the answer's noise bar (§5): an item is answered only above the bar that α of "
        "the zero-count candidates would pass on average, ≥ 0; 0: the plain top-k (default "
        "0.25, the same for every mechanism)",
    )
    central_delta: float = param(
        DEFAULT_DELTA,
        "δ of the run's central guarantee: towards the coordinator, the other parties and the "
        "analyst each user is (ε_c, δ)-DP by shuffling (docs/privacy.md), in (0, 0.01]",
    )
    central_epsilon: float | None = param(
        None,
        "a central target: the run takes the largest ε₀ (at most --epsilon and what the "
        "parties allow) whose ε_c at the smallest group the plan can make, by FMT's bound at "
        "central_delta, is at most this (docs/privacy.md), > 0; unset: ε₀ is --epsilon",
    )
    pool_size: int = param(
        4096,
        "seed-pool OLH: the pool size S of oracle olh-pool, and with auto the least S (auto "
        "grows it with the level's users, up to 2^16), 1..2^24",
    )
    seed: int = param(
        0,
        "seed of the run's randomness (user groups, reports, seed pool), ≥ 0; the data's "
        "seed is data-seed",
    )

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
        if self.level_candidates is not None and self.mech.passes_prior:
            room = MAX_LEVEL_CANDIDATES - self.n_prior  # a party's level adds the prior's items
            need(
                self.level_candidates <= room,
                f"level_candidates must be at most {room} for {self.mechanism} with k = "
                f"{self.k} (2^20 less the {self.n_prior} prior items a level may add), got "
                f"{self.level_candidates}",
            )
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
            isinstance(self.central_delta, (int, float))
            and not isinstance(self.central_delta, bool)
            and 0 < self.central_delta <= 0.01,
            f"central_delta must be in (0, 0.01], got {self.central_delta!r}",
        )
        need(
            self.central_epsilon is None
            or (
                isinstance(self.central_epsilon, (int, float))
                and not isinstance(self.central_epsilon, bool)
                and math.isfinite(self.central_epsilon)
                and self.central_epsilon > 0
            ),
            f"central_epsilon must be a finite number > 0, got {self.central_epsilon!r}",
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
    def mech(self) -> Mechanism:
        """What ``mechanism`` is and does (:mod:`fedhh.mechanisms.registry`)."""
        return mechanism_of(self.mechanism)

    @property
    def planned(self) -> bool:
        """Whether the level planner sets TAP/TAPS's levels (the baselines keep PEM's fixed η)."""
        return self.step_rule == "planned" and not self.mech.baseline

    @property
    def n_keep(self) -> int:
        """κ: prefixes a Phase II level keeps (``kappa``; 2k unless set)."""
        return self.kappa if self.kappa is not None else KEEP_PER_K * self.k

    @property
    def n_keep1(self) -> int:
        """κ₁: prefixes a Phase I level keeps (``kappa1``; 2k unless set)."""
        return self.kappa1 if self.kappa1 is not None else KEEP_PER_K * self.k

    @property
    def n_report(self) -> int:
        """k': items each party reports (``report_k``; 2k unless set)."""
        return self.report_k if self.report_k is not None else KEEP_PER_K * self.k

    @property
    def n_prior(self) -> int:
        """TAPS: the prior's items a party receives, and the completion round's (⌈c·k⌉)."""
        return max(1, math.ceil(self.prior_factor * self.k))

    def resolved(self) -> MechanismParams:
        """A copy with every ``None`` replaced by the default for this mechanism. Made once per
        instance (the instance is frozen, so the copy stays right); a resolved copy resolves to
        itself."""
        done: MechanismParams | None = self.__dict__.get("_resolved")
        if done is None:
            done = self._resolve()
            object.__setattr__(done, "_resolved", done)
            object.__setattr__(self, "_resolved", done)
        return done

    def _resolve(self) -> MechanismParams:
        k = self.k
        gamma = (
            self.gamma
            if self.gamma is not None
            else min(max(0, math.ceil(math.log2(k))), self.m - 1)
        )
        kappa, kappa1, report_k = self.n_keep, self.n_keep1, self.n_report
        budget = self.budget if self.budget is not None else kappa * 2**self.eta
        level_candidates = (
            self.level_candidates if self.level_candidates is not None else DEFAULT_LEVEL_CANDIDATES
        )
        if self.final_weight is not None:
            final_weight = float(self.final_weight)
        else:
            final_weight = 1.0 if self.mech.baseline else DEFAULT_FINAL_WEIGHT
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
        # every mechanism answers only what noise is unlikely to reach, under one rule
        # (mechanisms.md §5); 0 asks for the plain top-k, as the baselines were published
        answer_alpha = ANSWER_ALPHA if self.answer_alpha is None else float(self.answer_alpha)
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
