"""Party-side computations: user groups with a one-report ledger, level estimation and the local
search shared by PEM (single population / PEM-Local) and TAP/TAPS Phase II.

Privacy: every user is in at most one group and sends exactly one ε-LDP report (the ledger
refuses a second), so each user is ε-LDP; candidate sets, priors, thresholds and sums are
post-processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedhh.core import codes as cd
from fedhh.core.trie import PrefixTrie
from fedhh.errors import DuplicateReportError, ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.strategies import (
    StepContext,
    Strategies,
    consensus_bar,
    final_level,
    significant,
)
from fedhh.mechanisms.tasks import Codes, EstimateResult, Floats, LevelCost, SearchResult
from fedhh.oracles import FrequencyOracle, Reports, Tally


class UserLedger:
    """A party's users in a seeded random order, handed out in disjoint groups.

    ``take(n)`` returns the next n users and marks them as having reported; a user can never be
    handed out twice (``mark`` refuses a repeat with :class:`DuplicateReportError`).
    """

    def __init__(self, n_users: int, rng: np.random.Generator, reserve_share: float = 0.0):
        self.n_users = int(n_users)
        self.order = rng.permutation(self.n_users)
        self.reported = np.zeros(self.n_users, dtype=bool)
        self.reserve = math.floor(reserve_share * self.n_users)
        self._cursor = 0  # next user of the main pool
        self._reserve_cursor = self.n_users - self.reserve

    @property
    def remaining(self) -> int:
        """Users of the main pool (not the reserve) that have not reported yet."""
        return self.n_users - self.reserve - self._cursor

    @property
    def reports(self) -> int:
        return int(self.reported.sum())

    def mark(self, users: NDArray[np.int64]) -> None:
        if self.reported[users].any():
            first = int(users[np.flatnonzero(self.reported[users])[0]])
            raise DuplicateReportError(f"user {first} has already reported in this run")
        self.reported[users] = True

    def take(self, count: int) -> NDArray[np.int64]:
        """The next ``count`` users of the main pool (fewer if fewer remain)."""
        count = max(0, min(int(count), self.remaining))
        users = self.order[self._cursor : self._cursor + count]
        self.mark(users)
        self._cursor += count
        return users

    def release(self, count: int) -> None:
        """Give back the last ``count`` users of the latest ``take``: a group whose users
        report from their devices may close with fewer reports than users, and the users who
        did not report stay available to the later levels."""
        count = max(0, min(int(count), self._cursor))
        users = self.order[self._cursor - count : self._cursor]
        self.reported[users] = False
        self._cursor -= count

    def take_reserve(self) -> NDArray[np.int64]:
        """All users of the completion reserve (once)."""
        users = self.order[self._reserve_cursor :]
        self.mark(users)
        self._reserve_cursor = self.n_users
        return users


def estimate_level(
    codes: Codes,
    users: NDArray[np.int64],
    m: int,
    length: int,
    candidates: Codes,
    oracle: FrequencyOracle,
    rng: np.random.Generator,
    party_size: int,
    step: int = 0,
) -> EstimateResult:
    """The group's ε-LDP reports on its length-``length`` prefixes, estimated for ``candidates``
    and scaled to the party (× n_i / n_group).

    Standard error² = scale²·Var_FO(n_g, |C|+1, ĉ_g) + the sampling variance of the group
    (hypergeometric: scale²·n_g·f(1−f)·(n_i−n_g)/(n_i−1), f = ĉ/n_i).
    """
    values = cd.oracle_keys(cd.prefix(codes[users], m, length), length)
    reports = oracle.perturb(values, rng, cd.oracle_keys(candidates, length))
    return estimate_reports(reports, length, candidates, oracle, party_size, step)


def estimate_reports(
    reports: Reports | Tally,
    length: int,
    candidates: Codes,
    oracle: FrequencyOracle,
    party_size: int,
    step: int = 0,
) -> EstimateResult:
    """The estimate of :func:`estimate_level` from a group's reports, wherever they were made
    (perturbed by the party for its users, or on the users' devices), or from their
    :class:`~fedhh.oracles.Tally` over the candidates (folded as they arrived): the same
    estimate either way. The oracle scores the candidates' 64-bit keys
    (:func:`fedhh.core.codes.oracle_keys`)."""
    keys = cd.oracle_keys(candidates, length)
    if isinstance(reports, Reports):
        reports = oracle.tally(reports, keys)
    n_g = int(reports.n)
    n_cand = cd.count(candidates)
    d = n_cand + 1
    raw = oracle.debias(oracle.tally_support(reports, keys))
    scale = party_size / n_g if n_g else 0.0
    est = raw * scale
    var_fo = oracle.variance(n_g, d, np.clip(raw, 0.0, n_g))
    f = np.clip(est / max(party_size, 1), 0.0, 1.0)
    var_s = n_g * f * (1 - f) * (party_size - n_g) / max(party_size - 1, 1)
    se = scale * np.sqrt(var_fo + var_s) if n_g else np.full(n_cand, np.inf)
    evals = oracle.decode_evaluations(n_g, n_cand)
    cost = LevelCost(length, step, n_cand, n_g, oracle.name, evals, reports.nbytes)
    return EstimateResult(est, se, cost)


def top_indices(
    values: Floats, count: int, mask: NDArray[np.bool_] | None = None
) -> NDArray[np.int64]:
    """Indices of the ``count`` largest values (descending, ties by index), within ``mask``."""
    idx = np.arange(values.size) if mask is None else np.flatnonzero(mask)
    if idx.size == 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((idx, -values[idx]))
    return idx[order[:count]].astype(np.int64)


def _level_nodes(
    tree: PrefixTrie,
    p_ids: NDArray[np.int64],
    prefixes: Codes,
    length: int,
    step: int,
    cons: Codes,
    done: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int64], Codes]:
    """Node ids and codes of one level's candidates: the children of P (``prefixes``, the codes
    of the nodes ``p_ids``; one marked ``done`` has ended and has one child, its zero
    extension), plus every consensus prefix that is not among them (hung under its parent node
    at the previous length when it exists). Node labels are the codes' oracle keys (the code up
    to 64 bits, its fingerprint above; :mod:`fedhh.core.trie`)."""
    new = length + step
    kids, parent = cd.extend(prefixes, length, step, done)
    ids = tree.add_nodes(cd.oracle_keys(kids, new), p_ids[parent], new)
    if cd.count(cons) == 0:
        return ids, kids
    missing = cons[~cd.isin(cons, kids)]
    if cd.count(missing) == 0:
        return ids, kids
    up = cd.oracle_keys(cd.prefix(missing, new, length), length)
    parents = tree.find(up, length, alive_only=True)
    extra = tree.add_nodes(cd.oracle_keys(missing, new), parents, new)
    return np.concatenate([ids, extra]), np.concatenate([kids, missing])


ENDED_BAR_Z = 2.0  # wide text: an open prefix must be able to reach the k-th complete item


def _wide_top(
    est: Floats,
    se: Floats,
    cand: Codes,
    length: int,
    passing: NDArray[np.bool_],
    kappa: int,
    k: int,
    horizon: int | None,
) -> NDArray[np.int64]:
    """The prefixes a level of a wide text search keeps (docs/mechanisms.md §10): the top-κ
    ended ones (complete items, one candidate each) and the top-κ open ones, where an open
    prefix must be able to hold a top-k item (ĉ + 2·SE reaches the k-th largest ĉ − 2·SE of the
    complete items kept) and, past the horizon, be significant. Descending by estimate."""
    done = cd.ended(cand, length)
    top_done = top_indices(est, kappa, passing & done)
    # an open subtree below the bar holds no top-k item (−∞ while fewer than k have ended)
    bar = consensus_bar(est[top_done], se[top_done], k, ENDED_BAR_Z)
    open_ok = passing & ~done & (est + ENDED_BAR_Z * se >= bar)
    if horizon is not None and length >= horizon:
        open_ok &= significant(est, se, cd.count(cand))
    top = np.concatenate([top_done, top_indices(est, kappa, open_ok)])
    return top[np.lexsort((top, -est[top]))].astype(np.int64)


@dataclass
class SearchState:
    """Working state of a local search (for inspection and tests)."""

    length: int
    prefixes: Codes
    bar: float = math.inf


def local_search(
    codes: Codes,
    ledger: UserLedger,
    params: MechanismParams,
    strategies: Strategies,
    rng: np.random.Generator,
    start_length: int,
    start_prefixes: Codes,
    prior_items: Codes | None = None,
    trie: PrefixTrie | None = None,
    prune_bar: float = -math.inf,
    ended_rule: bool = False,
    horizon: int | None = None,
    one_child: bool = False,
) -> SearchResult:
    """PEM / TAP Phase II / TAPS Phase II inside one party (docs/mechanisms.md §4–6).

    From P = ``start_prefixes`` at ℓ = ``start_length``: pick a step s (strategy), give the level
    the users left / levels still needed, estimate C = P × {0,1}^s ∪ consensus prefixes, keep
    consensus prefixes plus the top-κ of the candidates that pass the prune rule, repeat until
    ℓ = m. Reports the top-k' of the last level's candidates under the party's own search (reached
    from its start prefixes through prefixes it kept by rank; every candidate with
    ``prior_by_rank``), plus every consensus item whose estimate is significant
    (> consensus_z·SE). ``prune_bar`` is the TAPS prior's bar for the
    consensus prune rule (:func:`~fedhh.mechanisms.strategies.consensus_bar`; −∞: no bar).

    The candidate tree lives in a :class:`~fedhh.core.trie.PrefixTrie` (``trie``, or a fresh one):
    each level's candidates are nodes with their ``estimate`` and ``stderr``; candidates that
    were neither kept nor consensus are pruned, so the alive nodes are the search's frontier.

    ``ended_rule`` (zero-padded text items, docs/mechanisms.md §10): a prefix whose last
    complete byte is 0x00 has ended; it has one child, the level plan counts it as one
    candidate, and once no kept prefix is open (all ended, or pruned) one last level takes the
    ended prefixes and the consensus items to m with every user left. ``horizon`` is the prefix
    length by which the party's items have ended (measured, :func:`~fedhh.mechanisms.levels.
    horizon_bits`): the plan gives its users to the levels up to it. Which prefixes a level keeps:
    :func:`_wide_top`. ``one_child`` alone (the baselines on
    such items) gives an ended prefix one child and changes nothing else.
    """
    m = params.m
    kappa, report_k = params.n_keep, params.n_report
    party_size = cd.count(codes)
    prior = cd.unique(prior_items) if prior_items is not None else cd.empty(m)
    state = SearchState(start_length, cd.unique(start_prefixes))
    own = state.prefixes  # the prefixes the party's own search keeps (no prior item alone)
    tree = trie if trie is not None else PrefixTrie()
    p_ids = tree.add_nodes(cd.oracle_keys(state.prefixes, state.length), -1, state.length)
    levels: list[LevelCost] = []
    est = se = np.zeros(0)
    cand: Codes = state.prefixes
    is_cons = np.zeros(0, dtype=bool)
    is_own: NDArray[np.bool_] | None = None  # candidates under own prefixes (None: all count)
    if state.length >= m:
        raise ParameterError(f"local search starts at length {state.length} ≥ m = {m}")
    verified = False  # wide text: the last level estimates the kept items afresh
    while state.length < m or (ended_rule and not verified and ledger.remaining > 0):
        done = cd.ended(state.prefixes, state.length) if ended_rule or one_child else None
        n_done = int(done.sum()) if done is not None else 0
        n_open = cd.count(state.prefixes) - n_done
        ctx = StepContext(
            n_prefixes=max(1, n_open) if n_done == 0 else n_open,
            length=state.length,
            m=m,
            users_left=ledger.remaining,
            party_size=party_size,
            bar=state.bar,
            n_keep=kappa,
            final_weight=float(params.final_weight or 1.0),
            n_ended=n_done,
            horizon=horizon,
            verify=ended_rule,
        )
        if ended_rule and (not n_open or state.length == m):  # the items are known
            if not cd.count(state.prefixes) and not cd.count(prior):
                return SearchResult(cd.empty(m), np.zeros(0), np.zeros(0), tuple(levels), m)
            plan, verified = final_level(ctx), True
        elif levels and not n_open and cd.count(prior):  # pruned to the consensus items alone
            plan = final_level(ctx)
        else:
            plan = strategies.step.plan(ctx)
        s = plan.steps[0]
        new_len = plan.lengths[0]
        users = ledger.take(plan.users[0])
        cons = cd.unique(cd.prefix(prior, m, new_len)) if cd.count(prior) else cd.empty(new_len)
        ids, cand = _level_nodes(tree, p_ids, state.prefixes, state.length, s, cons, done)
        order = np.argsort(cd.keys(cand), kind="stable")
        ids, cand = ids[order], cand[order]
        if users.size == 0:
            raise ParameterError(
                f"party has too few users for its levels (no users left at length {new_len})"
            )
        oracle = strategies.oracle_for(cd.count(cand) + 1, int(users.size))
        res = estimate_level(codes, users, m, new_len, cand, oracle, rng, party_size, s)
        est, se = res.estimates, res.stderrs
        levels.append(res.cost)
        tree.set_stat("estimate", ids, est)
        tree.set_stat("stderr", ids, se)
        is_cons = cd.isin(cand, cons) if cd.count(cons) else np.zeros(cd.count(cand), dtype=bool)
        if cd.count(prior) and not params.prior_by_rank:  # which candidates its search reached
            is_own = cd.isin(cd.prefix(cand, new_len, state.length), own)
        passing = strategies.prune.keep(est, se, prune_bar)
        if ended_rule:
            top = _wide_top(est, se, cand, new_len, passing, kappa, params.k, horizon)
        else:
            top = top_indices(est, kappa, passing)
        kept = is_cons.copy()
        kept[top] = True
        tree.prune(ids, kept)
        top_sorted = np.sort(top)  # candidates are sorted by code, so this sorts by code
        p_ids = ids[top_sorted]
        state.prefixes = cand[top_sorted]
        own = state.prefixes if is_own is None else cand[top_sorted[is_own[top_sorted]]]
        state.bar = float(est[top[min(params.k, top.size) - 1]]) if top.size else math.inf
        state.length = new_len
    # Report the top-k' of the party's own search plus every consensus item whose estimate is
    # significant: a prior item ranked in would add an upward-selected estimate to the sum.
    passing = strategies.prune.keep(est, se, prune_bar)
    if is_own is not None:
        passing &= is_own
    chosen = top_indices(est, report_k, passing)
    keep = np.zeros(cd.count(cand), dtype=bool)
    keep[chosen] = True
    keep |= is_cons & (est > params.consensus_z * se)
    out = np.flatnonzero(keep)
    out = out[np.lexsort((out, -est[out]))]
    return SearchResult(cand[out], est[out], se[out], tuple(levels), m)
