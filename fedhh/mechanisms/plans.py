"""Coordinator-side logic of each mechanism as a plan: a generator that yields one round of tasks
(party index → task) at a time and receives the parties' results. Plans are pure: no I/O, no
clocks, no randomness, so a transport can replay a plan from stored replies to resume a run.
Each mechanism of :mod:`fedhh.mechanisms.registry` has its plan here (:data:`PLANS`):
:func:`pem_plan`, :func:`global_plan`, :func:`tap_plan` or :func:`taps_plan`.

Combination (docs/mechanisms.md §5): per item, the sum of the parties' scaled estimates (a party
that did not report an item contributes 0) with standard error √Σ SE², and the answer is the
top-k by sum.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from fedhh.core import codes as cd
from fedhh.mechanisms.depth import go_local
from fedhh.mechanisms.layout import layout_of
from fedhh.mechanisms.levels import horizon_bits
from fedhh.mechanisms.local import top_indices
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.registry import REGISTRY
from fedhh.mechanisms.strategies import noise_candidates, party_order, significant
from fedhh.mechanisms.tasks import (
    Codes,
    EstimateResult,
    EstimateTask,
    Floats,
    SearchResult,
    SearchTask,
)
from fedhh.oracles import noise_z

Task = EstimateTask | SearchTask
Result = EstimateResult | SearchResult
Round = dict[int, Task]
Replies = dict[int, Result]


@dataclass(frozen=True, eq=False)
class Combined:
    """Items with summed estimates, standard errors and how many parties contributed."""

    items: Codes
    estimates: Floats
    stderrs: Floats
    contributors: np.ndarray

    def top(self, k: int) -> Combined:
        idx = top_indices(self.estimates, k)
        return self._take(idx)

    def above_noise(self, alpha: float, final_candidates: int) -> Combined:
        """The items whose estimate exceeds the noise bar z·SE, z = Φ̄⁻¹(α/N) with N the
        candidates of the last (full-length) levels that produced them: of N candidates nobody
        holds, α on average would pass (docs/mechanisms.md §5). α = 0: every item."""
        if alpha <= 0:
            return self
        keep = self.estimates > noise_z(final_candidates, alpha) * self.stderrs
        return self._take(np.flatnonzero(keep))

    def _take(self, idx: np.ndarray) -> Combined:
        return Combined(
            self.items[idx], self.estimates[idx], self.stderrs[idx], self.contributors[idx]
        )

    @classmethod
    def empty(cls, bits: int) -> Combined:
        z = np.zeros(0, dtype=np.float64)
        return cls(cd.empty(bits), z, z, np.zeros(0, np.int64))


@dataclass
class PlanOutcome:
    """What a plan returns: the answer and a short record of how it got there."""

    answer: Combined
    phase1_lengths: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def combine(parts: list[tuple[Codes, Floats, Floats]], bits: int = 64) -> Combined:
    """Sum estimates per item over parties (missing = 0); SE = √Σ SE² over reporting parties.
    Items are codes of ``bits`` bits (the width of an empty answer)."""
    parts = [p for p in parts if cd.count(p[0])]
    if not parts:
        return Combined.empty(bits)
    items = np.concatenate([p[0] for p in parts])
    uniq, inv = cd.unique_inverse(items)
    weights = np.concatenate([p[1] for p in parts])
    n = cd.count(uniq)
    est = np.bincount(inv, weights=weights, minlength=n).astype(np.float64)
    sq = np.concatenate([p[2] for p in parts]) ** 2
    var = np.bincount(inv, weights=sq, minlength=n).astype(np.float64)
    contrib = np.bincount(inv, minlength=n)
    return Combined(uniq, est, np.sqrt(var), contrib)


def phase1_plan(params: MechanismParams) -> tuple[list[int], int]:
    """Prefix lengths of the shared levels and the number of levels a party plans for at start
    (the run's :class:`~fedhh.mechanisms.layout.Layout`: ``shared``, ``planned``)."""
    layout = layout_of(params)
    return list(layout.shared), layout.planned


def _phase1_keep(
    params: MechanismParams, est: Floats, se: Floats, notes: list[str], level: int
) -> np.ndarray:
    """Phase I selection [choice]. "top": the top-κ₁ prefixes with a positive sum (all top-κ₁
    if none is). "confidence": also every prefix that may still be in the top-k, i.e. whose
    F + 2·SE reaches the k-th largest F − 2·SE (at most 4κ₁ prefixes)."""
    kappa1 = params.n_keep1
    top = top_indices(est, kappa1, est > 0)
    if top.size == 0:
        notes.append(f"phase I level {level}: no positive sum; kept top-κ₁ anyway")
        return top_indices(est, kappa1)
    if params.phase1_keep == "confidence":
        order = top_indices(est, params.k)
        bar = est[order[-1]] - 2.0 * se[order[-1]]
        plausible = top_indices(est, 4 * kappa1, est + 2.0 * se >= bar)
        top = np.union1d(top, plausible)
        top = top[np.lexsort((top, -est[top]))]
    return top


def _shared_horizon(replies: Replies, m: int, sizes: list[int]) -> int | None:
    """The horizon of the shared levels (wide text items, docs/mechanisms.md §10) from the
    parties' item-length levels (their first replies); None when no party measured one."""
    got = {
        i: r for i, r in replies.items() if isinstance(r, EstimateResult) and r.length_counts.size
    }
    if not got or len({r.length_counts.size for r in got.values()}) != 1:
        return None
    total = np.sum([r.length_counts for r in got.values()], axis=0)
    var = np.sum([r.length_stderrs**2 for r in got.values()], axis=0)
    return horizon_bits(total, np.sqrt(var), max(1, sum(sizes[i] for i in got)), m)


def _wide_keep(
    top: np.ndarray,
    cand: Codes,
    length: int,
    est: Floats,
    se: Floats,
    horizon: int | None,
) -> tuple[np.ndarray, bool]:
    """Wide text items: past the ``horizon`` the kept prefixes that are still open must be
    significant (:func:`~fedhh.mechanisms.strategies.significant`); and whether every kept
    prefix has ended (the shared levels stop, the parties take the items to m)."""
    done = cd.ended(cand, length)
    if horizon is not None and length >= horizon:
        ok = done | significant(est, se, cd.count(cand))
        if ok[top].any():
            top = top[ok[top]]
    return top, bool(top.size) and bool(done[top].all())


def _sum_estimates(replies: Replies, candidates: Codes) -> tuple[Floats, Floats]:
    est = np.zeros(cd.count(candidates))
    var = np.zeros(cd.count(candidates))
    for res in replies.values():
        assert isinstance(res, EstimateResult)
        est += res.estimates
        var += res.stderrs**2
    return est, np.sqrt(var)


def _final_candidates(replies: Replies) -> int:
    """Candidates of the parties' last (full-length) levels: where a noise item could come from."""
    return noise_candidates(
        (False, res.levels[-1].candidates)
        for res in replies.values()
        if isinstance(res, SearchResult) and res.levels
    )


def _search_parts(replies: Replies) -> list[tuple[Codes, Floats, Floats]]:
    parts = []
    for res in replies.values():
        assert isinstance(res, SearchResult)
        parts.append((res.items, res.estimates, res.stderrs))
    return parts


def run_plan(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool = False
) -> Generator[Round, Replies, PlanOutcome]:
    """The plan of ``params.mechanism`` (resolved params) over parties of the given sizes: the
    generator :data:`PLANS` gives its mechanism. ``ended_rule``: the
    items are zero-padded text wider than 64 bits (docs/mechanisms.md §10): a prefix that has
    ended has one child, and TAP/TAPS plan by the items' lengths."""
    return PLANS[params.mechanism](params, party_sizes, ended_rule)


def pem_plan(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool = False
) -> Generator[Round, Replies, PlanOutcome]:
    """PEM and PEM-Local (§4): every party searches alone from all prefixes of length γ, in one
    round (PEM is one party: the engine pools the users); the answer is the top-k of the sum."""
    assert params.gamma is not None
    m = params.m
    outcome = PlanOutcome(Combined.empty(m))
    start = np.arange(2**params.gamma, dtype=np.uint64)
    task = SearchTask("pem", params.gamma, start, item_bits=m)
    replies = yield {i: task for i in range(len(party_sizes))}
    best = combine(_search_parts(replies), m).top(params.k)
    outcome.answer = best.above_noise(_alpha(params), _final_candidates(replies))
    return outcome


def global_plan(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool = False
) -> Generator[Round, Replies, PlanOutcome]:
    """PEM-Global (§4): every level shared; the top-k of the last level is the answer."""
    outcome = PlanOutcome(Combined.empty(params.m))
    trie = yield from _shared_trie(params, party_sizes, ended_rule, outcome)
    outcome.answer = trie.answer(params)
    return outcome


def tap_plan(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool = False
) -> Generator[Round, Replies, PlanOutcome]:
    """TAP (§5): the shared trie, then every party's Phase II search in one round."""
    outcome = PlanOutcome(Combined.empty(params.m))
    trie = yield from _shared_trie(params, party_sizes, ended_rule, outcome)
    if trie.last >= params.m:
        outcome.answer = trie.answer(params)
        return outcome
    start, reach = cd.sort(trie.cand), trie.horizon or 0
    task = SearchTask("phase2", trie.last, start, item_bits=params.m, horizon=reach)
    replies = yield {i: task for i in range(len(party_sizes))}
    best = combine(_search_parts(replies), params.m).top(params.k)
    outcome.answer = best.above_noise(_alpha(params), _final_candidates(replies))
    return outcome


def taps_plan(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool = False
) -> Generator[Round, Replies, PlanOutcome]:
    """TAPS (§6): the shared trie, then a sequential Phase II with the running prior F (one
    party a round), then the completion round if ``completion`` > 0."""
    k, m = params.k, params.m
    outcome = PlanOutcome(Combined.empty(m))
    trie = yield from _shared_trie(params, party_sizes, ended_rule, outcome)
    if trie.last >= m:
        outcome.answer = trie.answer(params)
        return outcome
    start, reach = cd.sort(trie.cand), trie.horizon or 0
    by_party: dict[int, tuple[Codes, Floats, Floats]] = {}
    finals: Replies = {}
    for i in party_order(params.party_order, party_sizes):
        prior = combine(list(by_party.values()), m).top(params.n_prior)
        task = SearchTask(
            "phase2",
            trie.last,
            start,
            prior.items,
            prior.estimates,
            prior.stderrs,
            item_bits=m,
            horizon=reach,
        )
        replies = yield {i: task}
        finals.update(replies)
        for idx, part in zip(replies, _search_parts(replies), strict=True):
            by_party[idx] = part
    combined = combine(list(by_party.values()), m)
    if params.completion > 0:
        final = combined.top(params.n_prior)
        parties = range(len(party_sizes))
        replies = yield {i: EstimateTask(-1, params.m, final.items, "reserve") for i in parties}
        combined = complete(
            by_party, replies, final.items, params.completion_mode, params.consensus_z
        )
        outcome.notes.append(f"completion round over {cd.count(final.items)} items")
    outcome.answer = combined.top(k).above_noise(_alpha(params), _final_candidates(finals))
    return outcome


def _alpha(params: MechanismParams) -> float:
    return float(params.answer_alpha or 0.0)  # the answer's noise bar α (0: the top-k)


@dataclass(frozen=True, eq=False)
class _Trie:
    """Where the shared levels stopped: the prefixes kept at the last one (length ``last``; γ
    when there was none) with their summed estimates, the candidates of that level, the parties
    that answered it and the horizon of wide text items (None: none)."""

    cand: Codes
    est: Floats
    se: Floats
    last: int
    n_last: int
    answered: int
    horizon: int | None

    def answer(self, params: MechanismParams) -> Combined:
        """The answer from the last shared level (every party that answered it estimated it)."""
        contrib = np.full(cd.count(self.cand), self.answered, np.int64)
        top = Combined(self.cand, self.est, self.se, contrib).top(params.k)
        return top.above_noise(_alpha(params), self.n_last)


def _shared_trie(
    params: MechanismParams, party_sizes: list[int], ended_rule: bool, outcome: PlanOutcome
) -> Generator[Round, Replies, _Trie]:
    """The shared levels (one round each, every party): PEM-Global's all of them, keeping the
    top-k; TAP/TAPS Phase I (§5), keeping by :func:`_phase1_keep` until adaptive depth (or the
    ended prefixes of wide text items, §10) sends the parties to their own search."""
    parties = list(range(len(party_sizes)))
    m = params.m
    assert params.gamma is not None
    mech = params.mech
    local = mech.search is not None  # the parties search on their own after the shared levels
    wide = ended_rule and not mech.baseline
    shared = layout_of(params).shared
    # Without Phase I (t = 0) the parties start Phase II from all prefixes of length γ.
    cand = np.arange(2 ** (shared[0] if shared else params.gamma), dtype=np.uint64)
    est = se = np.zeros(0)
    n_last = 0  # candidates of the last shared level
    last = params.gamma
    horizon: int | None = None
    replies: Replies = {}
    for j, length in enumerate(shared):
        replies = yield {i: EstimateTask(j, length, cand) for i in parties}
        est, se = _sum_estimates(replies, cand)
        outcome.phase1_lengths.append(length)
        last = length
        if wide and j == 0:
            horizon = _shared_horizon(replies, m, party_sizes)
        if local:
            top = _phase1_keep(params, est, se, outcome.notes, j)
        else:
            top = top_indices(est, params.k)
        ended_all = False
        if wide:  # docs/mechanisms.md §10: past the horizon an open prefix must be significant
            top, ended_all = _wide_keep(top, cand, length, est, se, horizon)
        # wide text: the parties take the last bits (their searches end with a fresh estimate)
        stop = (
            j + 1 == len(shared)
            or ended_all
            or (wide and shared[j + 1] >= m)
            or (
                local
                and j + 1 >= (params.phase1_levels or 0)
                and (
                    not params.adaptive_depth
                    or go_local(params, replies, top, est, se, party_sizes)
                )
            )
        )
        if stop:
            n_last = cd.count(cand)
            cand, est, se = cand[top], est[top], se[top]
            break
        kept = cd.sort(cand[top])
        done = cd.ended(kept, length) if ended_rule else None
        cand, _ = cd.extend(kept, length, shared[j + 1] - length, done)
    return _Trie(cand, est, se, last, n_last, len(replies), horizon)


def complete(
    by_party: dict[int, tuple[Codes, Floats, Floats]],
    replies: Replies,
    items: Codes,
    mode: str,
    z: float = 0.0,
) -> Combined:
    """Completion round [choice]: every party's estimate of every final item.

    "fill": a party's Phase II estimate where it reported the item; the reserve estimates of the
    parties that did not report it are added only when their sum is significant (above z
    standard errors; z = ``consensus_z``), so an item that those parties do not hold gains no
    noise (docs/mechanisms.md §6). "sum": the reserve estimates alone (fresh users, so free of
    selection bias). A party without a completion reply keeps its Phase II estimates.
    """
    n = cd.count(items)
    est, var = np.zeros(n), np.zeros(n)
    fill, fill_var = np.zeros(n), np.zeros(n)
    contrib, fill_contrib = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i in sorted(set(by_party) | set(replies)):  # summed in party order
        have = np.zeros(n, dtype=bool)
        if i in by_party and (mode == "fill" or i not in replies):
            p_items, p_e, p_s = by_party[i]
            if cd.count(p_items):
                idx = cd.index_of(items, p_items)  # len(p_items) where not reported
                have = idx < cd.count(p_items)
                est[have] += p_e[idx[have]]
                var[have] += p_s[idx[have]] ** 2
                contrib += have
        res = replies.get(i)
        if isinstance(res, EstimateResult):
            fill[~have] += res.estimates[~have]
            fill_var[~have] += res.stderrs[~have] ** 2
            fill_contrib += ~have
    use = np.ones(n, dtype=bool) if mode == "sum" else fill > z * np.sqrt(fill_var)
    est[use] += fill[use]
    var[use] += fill_var[use]
    contrib[use] += fill_contrib[use]
    return Combined(items, est, np.sqrt(var), contrib)


Plan = Callable[[MechanismParams, list[int], bool], Generator[Round, Replies, PlanOutcome]]
PLANS: dict[str, Plan] = {  # one line per mechanism of the registry
    "pem": pem_plan,
    "pem-local": pem_plan,
    "pem-global": global_plan,
    "tap": tap_plan,
    "taps": taps_plan,
}
if set(PLANS) != set(REGISTRY):
    raise ImportError(f"plans {sorted(PLANS)} differ from the registry {sorted(REGISTRY)}")
