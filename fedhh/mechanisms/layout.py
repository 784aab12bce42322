"""The one derivation of a run's levels and rounds from its parameters and its mechanism's
declaration (:mod:`fedhh.mechanisms.registry`): :func:`layout_of` and :func:`rounds_of`, asked by
the plans, the parties, the coordinator and the checks before a run
(:func:`fedhh.protocol.messages.check_feasible`, :func:`fedhh.protocol.limits.level_candidates`,
:func:`fedhh.run.engine.expected_rounds`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from fedhh.mechanisms.levels import plan_levels
from fedhh.mechanisms.params import MAX_STEP_CANDIDATES, MechanismParams
from fedhh.mechanisms.registry import Mechanism


@dataclass(frozen=True)
class Rounds:
    """The coordinator rounds of a run: between ``fewest`` and ``most`` (exact when they are
    equal). Adaptive depth decides during the run how many levels are shared, and so does a
    wide text run whose kept prefixes have all ended (docs/mechanisms.md §5, §10)."""

    fewest: int
    most: int

    @property
    def exact(self) -> bool:
        return self.fewest == self.most

    def label(self, current: int) -> str:
        """For a progress display: "round r/N", or "round r/≤N" while only a bound is known."""
        return f"round {current}/{'' if self.exact else '≤'}{self.most}"


@dataclass(frozen=True)
class Layout:
    """The levels and rounds of a run, from its parameters alone."""

    m: int
    shared: tuple[int, ...]  # prefix lengths of the levels that may be shared (all parties)
    fewest_shared: int  # shared levels the run estimates at least (items of ≤ 64 bits)
    planned: int  # levels a party plans its user groups over at the start
    reserve: bool  # a party keeps a reserve for the completion round (one more group)
    searches: bool  # the parties search on their own after the shared levels
    sequential: bool  # ... one party a round (TAPS), else all in one round
    widest: int  # an upper bound on the candidates one level decodes at a party
    wide_rules: bool  # wide text items (§10) can end the shared levels early

    @property
    def party_levels(self) -> int:
        """The user groups a party needs at least: its planned levels and the reserve."""
        return self.planned + int(self.reserve)

    def local_rounds(self, n_parties: int) -> int:
        """The rounds after the shared levels when the parties go on to their own searches."""
        if not self.searches:
            return 0
        return (n_parties if self.sequential else 1) + int(self.reserve)

    def rounds(self, n_parties: int, ended_rule: bool = False) -> Rounds:
        """The rounds over ``n_parties`` parties (``ended_rule``: zero-padded text items wider
        than 64 bits, :attr:`~fedhh.protocol.messages.RunSpec.ended_rule`)."""
        local = self.local_rounds(n_parties)
        n = len(self.shared)
        if n == 0:
            return Rounds(local, local)
        lo, hi = self.fewest_shared, n
        if ended_rule and self.wide_rules:  # every kept prefix may end at the first level
            lo = 1
            if n > 1 and self.shared[-1] >= self.m:  # the parties take the last bits
                hi = n - 1
        # after s shared levels the parties search on their own unless the items are complete
        totals = [s + (local if self.shared[s - 1] < self.m else 0) for s in range(lo, hi + 1)]
        return Rounds(min(totals), max(totals))


@functools.lru_cache(maxsize=256)
def _layout(mech: Mechanism, p: MechanismParams) -> Layout:
    """The one derivation of a run's levels (docs/mechanisms.md §4, §5, §10).

    PEM/PEM-Local: no shared level; a party's search plans the ⌈(m − γ)/η⌉ levels of η bits.
    PEM-Global: every η-level is shared. TAP/TAPS with the level planner: the levels of
    :func:`~fedhh.mechanisms.levels.plan_levels` from the empty prefix (the first estimates
    all 2^ℓ₁ prefixes, ℓ₁ = ⌊log2 of the candidate budget⌋); each may be shared while adaptive
    depth says so (at least t), and a party plans its groups over all of them. TAP/TAPS with
    the other step rules: t Phase I levels of η bits (all of them may be shared with adaptive
    depth), then ⌈(m − L_s)/η⌉ planned Phase II levels. Phase II re-plans from the users left.
    """
    assert p.gamma is not None and p.phase1_levels is not None and p.budget is not None
    assert p.level_candidates is not None and p.kappa is not None and p.kappa1 is not None
    t = p.phase1_levels
    lengths = p.level_lengths(p.gamma, p.eta)
    if not mech.estimates:  # each party searches alone
        shared, planned, fewest = [], len(lengths), 0
    elif mech.search is None:  # every level shared
        shared, planned = lengths, len(lengths)
        fewest = len(shared)
    else:  # a shared trie, then the parties' own searches
        full = lengths
        if p.planned:
            full = list(plan_levels(0, p.m, 1, p.kappa1, 0, p.level_candidates).lengths)
        shared = full if p.adaptive_depth else full[:t]
        if p.planned:
            planned = len(full)
        else:
            planned = len(shared) + math.ceil((p.m - (shared[-1] if shared else p.gamma)) / p.eta)
        fewest = min(max(1, t), len(shared)) if p.adaptive_depth else len(shared)
    # the widest level a party decodes: the first, or one the step rule may take
    keep = max(p.k, p.kappa, p.kappa1)
    first = 2 ** (shared[0] if shared else min(p.gamma + p.eta, p.m))
    if mech.baseline or p.step_rule == "fixed":
        widest = max(2**p.gamma, keep) * 2**p.eta
    elif p.step_rule == "planned":
        widest = max(p.level_candidates, 2 * keep)
    elif p.step_rule == "adaptive":
        widest = max(p.budget, 2 * keep)
    else:
        widest = max(min(4 * p.budget, MAX_STEP_CANDIDATES), 2 * keep)
    prior = p.n_prior if mech.passes_prior else 0  # consensus prefixes join a level's set
    return Layout(
        m=p.m,
        shared=tuple(shared),
        fewest_shared=fewest,
        planned=planned,
        reserve=mech.completion_round and p.completion > 0,
        searches=mech.search is not None,
        sequential=mech.passes_prior,
        widest=int(min(max(first, widest), 2**p.m) + prior),
        wide_rules=not mech.baseline,
    )


def layout_of(params: MechanismParams) -> Layout:
    """The levels and rounds of a run with ``params`` (resolved here; cached)."""
    return _layout(params.mech, params.resolved())


def rounds_of(params: MechanismParams, n_parties: int, ended_rule: bool = False) -> Rounds:
    """The coordinator rounds of the run over ``n_parties`` parties (:meth:`Layout.rounds`)."""
    return layout_of(params).rounds(n_parties, ended_rule)
