"""[choice] rules (docs/mechanisms.md) as strategy objects: Phase II step, pruning, TAPS party
order and per-level oracle choice. :func:`build_strategies` turns a run's parameters into the
objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedhh.mechanisms.levels import LevelPlan, plan_levels, split_users
from fedhh.mechanisms.params import MAX_STEP_CANDIDATES, NOISE_KEEP, MechanismParams
from fedhh.oracles import OLH, FrequencyOracle, OLHPool, choose_oracle, noise_z, oracle_from
from fedhh.oracles.postprocess import normal_sf


@dataclass(frozen=True)
class StepContext:
    """What a step rule may look at before a Phase II level."""

    n_prefixes: int  # |P|: prefixes to extend
    length: int  # current prefix length ℓ
    m: int
    users_left: int  # users still available to Phase II
    party_size: int  # n_i (estimates are scaled to the party)
    bar: float  # the κ-th largest estimate of the last level (scaled), or +inf if unknown
    n_keep: int = 1  # κ: prefixes a level keeps (what later levels extend)
    final_weight: float = 1.0  # users of the last level relative to every other level
    n_ended: int = 0  # prefixes that have ended (one child each; zero-padded text, §10)
    horizon: int | None = None  # prefix length by which the items have ended (§10), if known
    verify: bool = False  # the plan ends with a level that estimates the kept items afresh


class StepRule(Protocol):
    @property
    def name(self) -> str: ...

    def plan(self, ctx: StepContext) -> LevelPlan:
        """The levels still to run from ``ctx`` to full items; the search runs the first."""
        ...


def final_level(ctx: StepContext) -> LevelPlan:
    """No prefix is open (docs/mechanisms.md §10): one level at m with every user left, over
    the ended prefixes taken to m, or the items already at m."""
    return LevelPlan((ctx.m,), (ctx.users_left,), ctx.length)


def _uniform_plan(ctx: StepContext, step: int) -> LevelPlan:
    """Levels of ``step`` bits to m (the last may be shorter), users split by the level weights."""
    lengths = (*range(ctx.length + step, ctx.m, step), ctx.m)
    return LevelPlan(
        lengths, split_users(ctx.users_left, len(lengths), ctx.final_weight), ctx.length
    )


@dataclass(frozen=True)
class FixedStep:
    """Always η bits (PEM's rule)."""

    eta: int
    name: str = "fixed"

    def step(self, ctx: StepContext) -> int:
        return max(1, min(self.eta, ctx.m - ctx.length))

    def plan(self, ctx: StepContext) -> LevelPlan:
        return _uniform_plan(ctx, self.step(ctx))


@dataclass(frozen=True)
class AdaptiveStep:
    """s = clamp(⌊log2(B/|P|)⌋, 1, m − ℓ): small candidate sets take larger steps (the
    published Phase II rule); the levels still needed are counted at that step."""

    budget: int
    name: str = "adaptive"

    def step(self, ctx: StepContext) -> int:
        raw = math.floor(math.log2(self.budget / max(1, ctx.n_prefixes)))
        return max(1, min(raw, ctx.m - ctx.length))

    def plan(self, ctx: StepContext) -> LevelPlan:
        return _uniform_plan(ctx, self.step(ctx))


@dataclass(frozen=True)
class VarianceAwareStep:
    """The largest s for which the expected number of zero-count candidates whose noisy
    estimate beats the last level's κ-th estimate stays below 1 (within the domain budget).

    For a step s the level gets users_left / ⌈(m−ℓ)/s⌉ users; a zero-count candidate's scaled
    estimate is ≈ N(0, σ_s²) with σ_s from the oracle's variance, so the expectation is
    |P|·2^s·Φ̄(bar/σ_s).
    """

    budget: int
    oracle_for: OracleChoice
    name: str = "variance"

    def step(self, ctx: StepContext) -> int:
        best = 1
        for s in range(1, ctx.m - ctx.length + 1):
            n_cand = ctx.n_prefixes * 2**s
            if n_cand > min(self.budget * 4, MAX_STEP_CANDIDATES):
                break
            levels = math.ceil((ctx.m - ctx.length) / s)
            n_group = max(1, ctx.users_left // levels)
            oracle = self.oracle_for(n_cand + 1)
            sigma = math.sqrt(oracle.variance(n_group, n_cand + 1)) * ctx.party_size / n_group
            expected_fp = n_cand * normal_sf(ctx.bar / sigma) if sigma > 0 else 0.0
            if expected_fp < 1.0:
                best = s
        return best

    def plan(self, ctx: StepContext) -> LevelPlan:
        return _uniform_plan(ctx, self.step(ctx))


@dataclass(frozen=True)
class PlannedSteps:
    """The level plan of :mod:`fedhh.mechanisms.levels`: the fewest levels whose candidate
    sets fit the decode budget (|C| ≤ ``max_candidates``), bits spread evenly, the last level
    weighted by ``final_weight``. Re-planned before every level, so a level that keeps fewer
    prefixes buys wider steps for the rest."""

    max_candidates: int
    name: str = "planned"

    def plan(self, ctx: StepContext) -> LevelPlan:
        return plan_levels(
            ctx.length,
            ctx.m,
            ctx.n_prefixes,
            ctx.n_keep,
            ctx.users_left,
            self.max_candidates,
            ctx.final_weight,
            ctx.n_ended,
            ctx.horizon,
            ctx.verify,
        )


class PruneRule(Protocol):
    def keep(
        self, estimates: NDArray[np.float64], stderrs: NDArray[np.float64], bar: float = -math.inf
    ) -> NDArray[np.bool_]:
        """Which candidates may stay (before the top-κ cut); ``bar`` is the TAPS prior's bar."""
        ...


@dataclass(frozen=True)
class NoPrune:
    """PEM: keep the top-κ whatever their estimates."""

    def keep(
        self, estimates: NDArray[np.float64], stderrs: NDArray[np.float64], bar: float = -math.inf
    ) -> NDArray[np.bool_]:
        return np.ones(estimates.shape, dtype=bool)


@dataclass(frozen=True)
class ThresholdPrune:
    """Keep candidates whose estimate exceeds τ = z·SE (z = 0: τ = 0, positive estimates)."""

    z: float

    def keep(
        self, estimates: NDArray[np.float64], stderrs: NDArray[np.float64], bar: float = -math.inf
    ) -> NDArray[np.bool_]:
        return estimates > self.z * stderrs


@dataclass(frozen=True)
class ConsensusPrune:
    """TAPS' consensus-based pruning: a positive candidate stays unless the prior and the party's
    own estimate rule it out of the global top-k, i.e. unless its upper confidence bound
    ĉ + z·SE is below the prior's bar (:func:`consensus_bar`). Without a prior (the first party)
    the bar is −∞ and the rule is TAP's τ = 0."""

    z: float

    def keep(
        self, estimates: NDArray[np.float64], stderrs: NDArray[np.float64], bar: float = -math.inf
    ) -> NDArray[np.bool_]:
        return (estimates > 0) & (estimates + self.z * stderrs >= bar)


def noise_candidates(last_levels: Iterable[tuple[bool, int]]) -> int:
    """N of the answer's noise bar (:func:`noise_z`): the candidates a noise item of the answer
    could come from, given each party's last full-length level as (shared, candidates). A shared
    level counts once (every party estimated the same set and the coordinator summed them); the
    parties' own levels add up (each party's noise candidates are its own)."""
    shared, own = 0, 0
    for is_shared, n in last_levels:
        if is_shared:
            shared = max(shared, int(n))
        else:
            own += int(n)
    return max(1, shared + own)


def significant(
    estimates: NDArray[np.float64], stderrs: NDArray[np.float64], n_candidates: int
) -> NDArray[np.bool_]:
    """Candidates whose estimate exceeds z·SE with z = Φ̄⁻¹(NOISE_KEEP/|C|): of |C| candidates
    nobody holds, NOISE_KEEP pass on average (docs/mechanisms.md §10). Wide text items need it:
    a noise prefix that passes is extended level after level, and over many levels (up to 512
    bits) one would reach full length with a noisy, selected, large estimate."""
    return np.asarray(estimates > noise_z(n_candidates, NOISE_KEEP) * stderrs)


def consensus_bar(
    estimates: NDArray[np.float64], stderrs: NDArray[np.float64], k: int, z: float
) -> float:
    """The k-th largest lower confidence bound F − z·SE of the prior items: with confidence ≈
    Φ(z), k items have global counts at least this large, so an item below it is not in the
    global top-k. −∞ when the prior has fewer than k items."""
    if estimates.size < k or stderrs.size != estimates.size:
        return -math.inf
    return float(np.sort(estimates - z * stderrs)[-k])


class OracleChoice(Protocol):
    def __call__(self, domain_size: int, n_reports: int = 0) -> FrequencyOracle:
        """The oracle for a level whose domain has ``domain_size`` symbols (|C| + 1) and that
        ``n_reports`` users answer (0: unknown)."""
        ...


@dataclass(frozen=True)
class FixedOracle:
    """One oracle for every level."""

    oracle: FrequencyOracle

    def __call__(self, domain_size: int, n_reports: int = 0) -> FrequencyOracle:
        return self.oracle


USERS_PER_POOL_SEED = 32  # seed-pool size S ≥ n/32: collision variance ≤ 6.4·Σf² of Var*
MAX_POOL_SIZE = 1 << 16  # S·|C| look-ups per level: the decode cost of the largest parties
POOL_EVALUATION_COST = 4  # one seed-pool evaluation (a look-up) costs about 4 plain OLH ones


def pool_size_for(n_reports: int, minimum: int) -> int:
    """Seed-pool size for a level of ``n_reports`` users: the smallest power of two ≥ n/32, at
    least ``minimum`` and at most 2^16 (unless ``minimum`` is larger). The pool adds
    (p−q')²·Σ_x n_x(n_x−1)/S to the support variance (:meth:`OLHPool.variance`): about
    0.2·(n/S)·Σf² of plain OLH's n·q(1−q), so ≤ 6.4·Σf² below the cap (Σf² the collision
    probability of the users' prefixes, a few per cent for real data)."""
    want = min(max(1, -(-n_reports // USERS_PER_POOL_SEED)), MAX_POOL_SIZE)
    want = max(want, minimum)
    return int(1 << max(0, (want - 1).bit_length()))


@dataclass(frozen=True)
class AutoOracle:
    """Per level, the oracle with the smallest Var* for the level's |C| + 1 (docs/mechanisms.md
    §2). An OLH level decodes from a seed pool instead when that is cheaper: the same ε-LDP report
    and almost the same variance, but S·|C| look-ups instead of n·|C| hash tests (S from
    :func:`pool_size_for`; a look-up costs about ``POOL_EVALUATION_COST`` tests)."""

    epsilon: float
    pool_size: int = 4096
    pool_seed: int = 0

    def __call__(self, domain_size: int, n_reports: int = 0) -> FrequencyOracle:
        best = choose_oracle(self.epsilon, domain_size)
        size = pool_size_for(n_reports, self.pool_size)
        if isinstance(best, OLH) and POOL_EVALUATION_COST * size < n_reports:
            return OLHPool(self.epsilon, pool_size=size, pool_seed=self.pool_seed)
        return best


def party_order(rule: str, sizes: list[int]) -> list[int]:
    """Order of the TAPS sequential pass over party indices [choice: by descending size]."""
    idx = list(range(len(sizes)))
    if rule == "size-desc":
        return sorted(idx, key=lambda i: (-sizes[i], i))
    if rule == "size-asc":
        return sorted(idx, key=lambda i: (sizes[i], i))
    return idx


@dataclass(frozen=True)
class Strategies:
    """The strategy objects of one run (built from its parameters)."""

    oracle_for: OracleChoice
    step: StepRule
    prune: PruneRule


def oracle_choice(params: MechanismParams, pool_seed: int = 0) -> OracleChoice:
    """The per-level oracle rule of a run (``auto`` or one fixed oracle)."""
    if params.oracle == "auto":
        return AutoOracle(params.epsilon, params.pool_size, pool_seed)
    offered = {"pool_size": params.pool_size, "pool_seed": pool_seed}  # the run's oracle params
    return FixedOracle(oracle_from(params.oracle, params.epsilon, offered))


def level_oracles(
    params: MechanismParams, domain_size: int, n_users: int
) -> dict[str, FrequencyOracle]:
    """By name, the oracles the run's rule may give a level of ``domain_size`` symbols whose
    group has at most ``n_users`` users, each with the parameters of the largest such group (the
    coordinator bounds a reply's level costs by them): a fixed oracle, or ``auto``'s choice and,
    where a group may be large enough, its seed pool (whose S only grows with the group)."""
    choice = oracle_choice(params)
    return {o.name: o for o in (choice(domain_size, 0), choice(domain_size, n_users))}


def build_strategies(params: MechanismParams, pool_seed: int = 0) -> Strategies:
    """Strategy objects for a run; ``params`` must be :meth:`MechanismParams.resolved`."""
    oracle_for = oracle_choice(params, pool_seed)
    assert params.budget is not None and params.prune_z is not None
    step: StepRule
    if params.mech.baseline or params.step_rule == "fixed":
        step = FixedStep(params.eta)
    elif params.step_rule == "planned":
        assert params.level_candidates is not None
        step = PlannedSteps(params.level_candidates)
    elif params.step_rule == "adaptive":
        step = AdaptiveStep(params.budget)
    else:
        step = VarianceAwareStep(params.budget, oracle_for)
    prune: PruneRule
    if params.mech.baseline:
        prune = NoPrune()
    elif params.prune_rule == "consensus":
        prune = ConsensusPrune(params.prune_z)
    else:
        prune = ThresholdPrune(params.prune_z)
    return Strategies(oracle_for, step, prune)
