"""The party as a pure state machine: ``party.handle(request) -> reply``.

A party holds its users (a one-report ledger over them). For each task it hands out a fresh group
of users, has them report under ε-LDP, and aggregates; replies carry only scaled estimates and
standard errors. Replaying a request (same id) returns the same reply; any other request for
users that already reported is refused, so no user ever reports twice.

Where the reports come from is the party's :class:`ReportSource`: :class:`LocalUsers` perturbs
the items the party holds (simulation, data-file deployments); a party whose users report from
their devices (:mod:`fedhh.clients.devices`) is the same party with a source that collects
their reports, and answers ``None`` until a group's reports are in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedhh.core import codes as cd
from fedhh.core.codes import as_codes
from fedhh.core.trie import PrefixTrie
from fedhh.errors import DeadlinePassed, FedHHError, ParameterError
from fedhh.mechanisms.layout import layout_of
from fedhh.mechanisms.levels import (
    LENGTH_SHARE,
    byte_lengths,
    horizon_bits,
    length_buckets,
    levels_left,
    n_length_buckets,
    next_group,
)
from fedhh.mechanisms.local import UserLedger, estimate_reports, local_search, top_indices
from fedhh.mechanisms.params import MAX_LEVEL_CANDIDATES
from fedhh.mechanisms.strategies import build_strategies, consensus_bar
from fedhh.mechanisms.tasks import (
    Codes,
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
    SearchTask,
)
from fedhh.oracles import FrequencyOracle, Reports, Tally
from fedhh.protocol.messages import PROTOCOL_VERSION, Reply, Request, Result, RunSpec

SEARCHES = {"pem": "a PEM search", "phase2": "Phase II"}  # the local searches (task modes)


def pool_seed_for(seed: int) -> int:
    """The public seed-pool of a run (derived from the run seed)."""
    return int(np.random.SeedSequence([seed, 0x9001]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass(frozen=True, eq=False)
class Group:
    """One estimate's user group: who reports, on which prefix length, with which oracle (and,
    for GRR/OUE, over which candidates)."""

    request: Request
    users: NDArray[np.int64]
    length: int
    candidates: Codes
    oracle: FrequencyOracle


@runtime_checkable
class ReportSource(Protocol):
    """Where a party's reports come from."""

    n_users: int

    def reports(self, group: Group, rng: np.random.Generator) -> Reports | Tally | None:
        """The group's reports, or their tally over the group's candidates (None: not all in
        yet, ask again)."""
        ...


class LocalUsers:
    """The party holds its users' items (m-bit codes) and perturbs them itself: each user's
    report is made from the 64-bit oracle key of its prefix
    (:func:`fedhh.core.codes.oracle_keys`)."""

    def __init__(self, codes: Codes, m: int) -> None:
        self.codes = as_codes(codes, m)
        self.m = m
        self.n_users = cd.count(self.codes)

    def reports(self, group: Group, rng: np.random.Generator) -> Reports:
        values = cd.prefix(self.codes[group.users], self.m, group.length)
        keys = cd.oracle_keys(values, group.length)
        return group.oracle.perturb(keys, rng, cd.oracle_keys(group.candidates, group.length))


@dataclass
class _Progress:
    levels_done: int = 0
    searched: bool = False
    reserve_used: bool = False


@dataclass(frozen=True)
class _Checkpointed:
    """The run's oracle choice, calling the party's checkpoint first: every level (shared or of
    a local search) starts with it, so a transport's deadline can stop a long request."""

    choose: Callable[[int, int], FrequencyOracle]
    party: Party

    def __call__(self, domain_size: int, n_reports: int = 0) -> FrequencyOracle:
        self.party.check_time()
        return self.choose(domain_size, n_reports)


class Party:
    """One party of one run, over its users' codes or another :class:`ReportSource`.

    ``checkpoint`` (set by a transport, None by default) is called before each level's work; it
    raises :class:`~fedhh.errors.DeadlinePassed` to stop a request whose deadline has passed
    (the party's state is then partial: the transport drops it and rebuilds it from its log).
    """

    def __init__(self, spec: RunSpec, party_id: str, users: Codes | ReportSource) -> None:
        self.spec = spec
        self.party_id = party_id
        self.index = spec.party_index(party_id)
        self.params = spec.params.resolved()
        self.source: ReportSource = (
            users if isinstance(users, ReportSource) else LocalUsers(users, self.params.m)
        )
        n_users = self.source.n_users
        if n_users != spec.party_sizes[self.index]:
            raise ParameterError(
                f"party {party_id!r} has {n_users} users but the run spec says "
                f"{spec.party_sizes[self.index]}"
            )
        self.rng = np.random.default_rng([self.params.seed, 0x5EED, self.index])
        layout = layout_of(self.params)
        reserve = self.params.completion if layout.reserve else 0.0
        self.ledger = UserLedger(n_users, self.rng, reserve)
        self.checkpoint: Callable[[], None] | None = None
        strategies = build_strategies(self.params, pool_seed_for(self.params.seed))
        self.strategies = replace(strategies, oracle_for=_Checkpointed(strategies.oracle_for, self))
        self.shared_lengths, self.planned_levels = list(layout.shared), layout.planned
        # the baselines run as published: an ended prefix has one child, nothing else changes
        self.ended_rule = spec.ended_rule and not self.params.mech.baseline
        self.horizon: int | None = None
        self._pre_levels: tuple[LevelCost, ...] = ()
        self._lengths = (np.zeros(0), np.zeros(0))
        if self.ended_rule and self.params.planned and isinstance(self.source, LocalUsers):
            self._measure_lengths(self.source)
        self._progress = _Progress()
        self._last_shared: tuple[Codes, np.ndarray] | None = None
        self.trie = PrefixTrie()  # the party's local-search candidate tree, for inspection
        self._replies: dict[int, Reply] = {}
        self._waiting: Group | None = None

    def handle(self, request: Request) -> Reply | None:
        """Answer one request (errors become an :class:`ErrorResult` reply, never an exception);
        None while its group's reports are still coming in (ask again later)."""
        if request.request_id in self._replies:
            return self._replies[request.request_id]
        result: Result | None
        problem = self._check_envelope(request)
        if problem:
            result = ErrorResult("invalid-request", problem)
        else:
            try:
                self.check_time()
                result = self._run(request)
            except DeadlinePassed:
                self._waiting = None
                raise
            except FedHHError as exc:
                self._waiting = None
                result = ErrorResult("failed", str(exc))
        if result is None:
            return None
        reply = Reply(self.spec.run_id, request.request_id, self.party_id, result)
        self._replies[request.request_id] = reply
        return reply

    def _measure_lengths(self, source: LocalUsers) -> None:
        """The item-length level of wide text items (docs/mechanisms.md §10): a share of the
        users reports its item's byte length (ε-LDP, their one report), and the level plan
        gives the other users to the levels up to the length the items have ended by."""
        users = self.ledger.take(max(1, math.ceil(LENGTH_SHARE * self.ledger.n_users)))
        width = self.params.m // 8
        raw = np.frombuffer(cd.to_bytes(source.codes[users], self.params.m), dtype=np.uint8)
        buckets = length_buckets(byte_lengths(raw.reshape(-1, width))).astype(np.uint64)
        symbols = np.arange(n_length_buckets(width), dtype=np.uint64)
        oracle = self.strategies.oracle_for(symbols.size + 1, int(users.size))
        reports = oracle.perturb(buckets, self.rng, symbols)
        res = estimate_reports(reports, 0, symbols, oracle, self.ledger.n_users)
        self.horizon = horizon_bits(res.estimates, res.stderrs, self.ledger.n_users, self.params.m)
        self._pre_levels = (res.cost,)
        self._lengths = (res.estimates, res.stderrs)

    def _search_horizon(self, task: SearchTask) -> int | None:
        """The federation's horizon when the coordinator sent one (every party's length level:
        more reports, a surer horizon), else the party's own."""
        if self.horizon is not None and 0 < task.horizon <= self.params.m:
            return int(task.horizon)
        return self.horizon

    def _take_pre_levels(self) -> tuple[LevelCost, ...]:
        out, self._pre_levels = self._pre_levels, ()
        return out

    def _first_reply(self, res: EstimateResult) -> EstimateResult:
        """An estimate with what the party ran before it (declared once)."""
        pre = self._take_pre_levels()
        if not pre:
            return res
        counts, stderrs = self._lengths
        return replace(res, pre_levels=pre, length_counts=counts, length_stderrs=stderrs)

    def check_time(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint()

    # --- internals -------------------------------------------------------------------------
    def _check_envelope(self, request: Request) -> str:
        if request.version != PROTOCOL_VERSION:
            return f"protocol version {request.version} is not {PROTOCOL_VERSION}"
        if request.run_id != self.spec.run_id:
            return f"request for run {request.run_id!r}, this party serves {self.spec.run_id!r}"
        if request.party_id != self.party_id:
            return f"request addressed to {request.party_id!r}, this is {self.party_id!r}"
        return ""

    @property
    def codes(self) -> Codes:
        """The users' items, for a party that holds them."""
        if not isinstance(self.source, LocalUsers):
            raise ParameterError(
                "a party whose users report from their devices answers estimate requests only "
                "(PEM-Global levels, TAP/TAPS Phase I, TAPS completion); local searches "
                "(PEM-Local, Phase II) are not supported"
            )
        return self.source.codes

    def _run(self, request: Request) -> Result | None:
        task = request.task
        if isinstance(task, EstimateTask):
            waiting = self._waiting
            if waiting is not None and waiting.request.request_id == request.request_id:
                return self._collect(task, waiting)
            return self._estimate(request, task)
        if isinstance(task, SearchTask):
            return self._search(task)
        raise ParameterError(f"unknown task type {type(task).__name__}")

    def _check_candidates(self, candidates: np.ndarray, length: int) -> Codes:
        cand = as_codes(candidates, max(length, 1)) if length > 0 else candidates
        n = cd.count(cand)
        if n == 0 or n > MAX_LEVEL_CANDIDATES:
            raise ParameterError(f"candidate set of {n} prefixes (1..{MAX_LEVEL_CANDIDATES})")
        return np.asarray(cand, dtype=np.uint64)

    def _estimate(self, request: Request, task: EstimateTask) -> EstimateResult | None:
        p, prog = self.params, self._progress
        if self._waiting is not None:
            rid = self._waiting.request.request_id
            raise ParameterError(f"request {rid} is still collecting reports")
        cand = self._check_candidates(task.candidates, task.length)
        if task.group == "reserve":
            if self.ledger.reserve == 0 or prog.reserve_used:
                raise ParameterError("no completion reserve left for this run")
            if task.length != p.m:
                raise ParameterError(f"completion estimates full items (length {p.m})")
            users = self.ledger.take_reserve()
            prog.reserve_used = True
        elif task.group == "level":
            if prog.searched or task.level != prog.levels_done:
                raise ParameterError(
                    f"level {task.level} requested, next shared level is {prog.levels_done}"
                )
            if task.level >= len(self.shared_lengths):
                raise ParameterError(f"this run has {len(self.shared_lengths)} shared levels")
            if task.length != self.shared_lengths[task.level]:
                raise ParameterError(
                    f"level {task.level} has length {self.shared_lengths[task.level]}, "
                    f"not {task.length}"
                )
            left = self.planned_levels - task.level
            if self.ended_rule and p.planned:
                left = levels_left(self.shared_lengths, task.level, self.horizon, p.m)
            assert p.final_weight is not None
            users = self.ledger.take(next_group(self.ledger.remaining, left, p.final_weight))
            prog.levels_done += 1
        else:
            raise ParameterError(f"unknown user group {task.group!r}")
        if users.size == 0:
            raise ParameterError("no users left for this level")
        oracle = self.strategies.oracle_for(cd.count(cand) + 1, int(users.size))
        return self._collect(task, Group(request, users, task.length, cand, oracle))

    def _collect(self, task: EstimateTask, group: Group) -> EstimateResult | None:
        reports = self.source.reports(group, self.rng)
        if reports is None:
            self._waiting = group
            return None
        self._waiting = None
        if reports.n == 0:
            raise ParameterError("no user reported for this level")
        if task.group == "level" and reports.n < group.users.size:
            self.ledger.release(group.users.size - reports.n)  # for the levels still to come
        self.check_time()
        cand = group.candidates
        step = 0
        if task.group == "level":  # bits this shared level adds to the previous one
            step = task.length - (self.shared_lengths[task.level - 1] if task.level else 0)
        res = estimate_reports(reports, task.length, cand, group.oracle, self.ledger.n_users, step)
        if task.group == "level":
            self._last_shared = (cand, res.estimates)
        return self._first_reply(res)

    def _search(self, task: SearchTask) -> SearchResult:
        p, prog = self.params, self._progress
        if prog.searched:
            raise ParameterError("this party has already run its local search")
        n_prior = cd.count(task.prior_items)
        if task.prior_estimates.size != n_prior or task.prior_stderrs.size != n_prior:
            raise ParameterError(
                f"{n_prior} prior items with {task.prior_estimates.size} estimates and "
                f"{task.prior_stderrs.size} standard errors"
            )
        if task.mode not in SEARCHES:
            raise ParameterError(f"unknown search mode {task.mode!r}")
        if task.mode != p.mech.search:
            raise ParameterError(f"{SEARCHES[task.mode]} is not part of {p.mechanism}")
        if task.mode == "phase2":
            done = prog.levels_done
            start_length = self.shared_lengths[done - 1] if done else p.gamma
            if task.start_length != start_length or done < (p.phase1_levels or 0):
                raise ParameterError(
                    "Phase II must start at the end of the shared trie "
                    f"(length {start_length} after {done} shared levels)"
                )
        start = self._check_candidates(task.start_prefixes, task.start_length)
        if cd.count(task.prior_items) and task.item_bits != p.m:
            raise ParameterError(f"prior items of {task.item_bits} bits in a run of m = {p.m}")
        if task.mode == "phase2" and p.local_start and self._last_shared is not None:
            cand, est = self._last_shared  # the party's own view of the last shared level
            mine = cand[top_indices(est, p.n_keep, est > 0)]
            start = cd.unique(np.concatenate([start, mine]))
        prior = as_codes(task.prior_items, p.m) if cd.count(task.prior_items) else None
        bar = consensus_bar(task.prior_estimates, task.prior_stderrs, p.k, p.prune_z or 0.0)
        prog.searched = True
        res = local_search(
            self.codes,
            self.ledger,
            p,
            self.strategies,
            self.rng,
            task.start_length,
            start,
            prior,
            trie=self.trie,
            prune_bar=bar,
            ended_rule=self.ended_rule,
            horizon=self._search_horizon(task),
            one_child=self.spec.ended_rule,
        )
        return replace(res, levels=self._take_pre_levels() + res.levels)
