"""Resource bounds of a run, checked before any work starts.

A run's cost at a party grows with its users and with the candidate sets its levels decode, and
both follow from the run parameters. The coordinator checks a run against its own
:class:`Limits` when it is started (and again when it launches, once every party's user count
is known); each party agent checks it against its own limits when the run's first request
arrives, and every estimate request's candidate set before estimating. A run over a bound is
refused with :class:`~fedhh.errors.ParameterLimit` (RESOURCE_EXHAUSTED on gRPC); a k larger than
the federation's users with :class:`~fedhh.errors.ParameterError` (INVALID_ARGUMENT).

The memory figure is an estimate, not a measurement: the per-user arrays (items, user order,
the one-report ledger, prefixes and perturbation temporaries), one level's reports, and the
candidate sets with their statistics and trie nodes (see docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedhh.core.codes import words
from fedhh.errors import ParameterError, ParameterLimit
from fedhh.mechanisms.layout import layout_of
from fedhh.mechanisms.params import MAX_LEVEL_CANDIDATES, MechanismParams
from fedhh.mechanisms.strategies import oracle_choice

DEFAULT_MAX_K = 4096
DEFAULT_MAX_MEMORY_MB = 2048
BYTES_PER_USER = 40  # items, order, ledger, prefixes and perturbation temporaries
BYTES_PER_CANDIDATE = 512  # candidates, support, estimates, errors, trie nodes, temporaries
BASE_BYTES = 192 << 20  # the interpreter, numpy, scipy and the compiled kernels


@dataclass(frozen=True)
class Limits:
    """Bounds of one coordinator or one party agent (configured; see ``--help``)."""

    max_k: int = DEFAULT_MAX_K
    max_candidates: int = MAX_LEVEL_CANDIDATES
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB

    def __post_init__(self) -> None:
        if not (isinstance(self.max_k, int) and self.max_k >= 1):
            raise ParameterError(f"the k limit must be an integer ≥ 1, got {self.max_k!r}")
        if not (isinstance(self.max_candidates, int) and self.max_candidates >= 2):
            raise ParameterError(f"the candidate limit must be ≥ 2, got {self.max_candidates!r}")
        if not (math.isfinite(self.max_memory_mb) and self.max_memory_mb > 0):
            raise ParameterError(f"the memory limit must be > 0 MB, got {self.max_memory_mb!r}")


def level_candidates(params: MechanismParams) -> int:
    """An upper bound on the candidates one level of the run decodes at a party (the
    run's :class:`~fedhh.mechanisms.layout.Layout`)."""
    return layout_of(params).widest


def report_bytes(params: MechanismParams, candidates: int) -> int:
    """Bytes of one user's report at the run's widest level (the largest of its oracles)."""
    choice = oracle_choice(params.resolved())  # auto: its choice over domains small to wide
    oracles = [choice(d) for d in {2, 16, 256, candidates + 1}]
    return max(o.report_bytes(candidates) for o in oracles)


def run_memory(params: MechanismParams, n_users: int) -> int:
    """Estimated peak bytes of the run at a party of ``n_users`` users."""
    cand = level_candidates(params)
    wider = 2 * 8 * (words(params.m) - 1)  # items over 64 bits: the code and a prefix, a word each
    per_user = BYTES_PER_USER + wider + report_bytes(params, cand)
    return int(BASE_BYTES + n_users * per_user + cand * BYTES_PER_CANDIDATE)


def check_run(
    params: MechanismParams,
    party_ids: Sequence[str],
    sizes: Sequence[int] | None,
    limits: Limits,
) -> None:
    """Refuse a run over ``limits`` (``sizes``: the parties' user counts, None if not known
    yet: then only what the parameters alone decide)."""
    check_params(params, limits)
    if sizes is None:
        return
    check_k(params, sum(sizes))
    for pid, n in zip(party_ids, sizes, strict=True):
        check_memory(params, pid, int(n), limits)


def check_params(params: MechanismParams, limits: Limits) -> None:
    """k and the candidate sets against the limits (the parameters alone)."""
    p = params.resolved()
    if p.k > limits.max_k:
        raise ParameterLimit(f"k = {p.k} is over the limit of {limits.max_k}")
    widths = {"kappa": p.kappa, "kappa1": p.kappa1, "report_k": p.report_k}
    for name, value in widths.items():
        if value is not None and value > limits.max_candidates:
            raise ParameterLimit(
                f"{name} = {value} is over the candidate limit of {limits.max_candidates}"
            )
    cand = level_candidates(p)
    if cand > limits.max_candidates:
        raise ParameterLimit(
            f"a level of this run may decode {cand:,} candidates, over the limit of "
            f"{limits.max_candidates:,} (lower k, kappa, eta, budget or level_candidates)"
        )


def check_k(params: MechanismParams, total_users: int) -> None:
    """k cannot exceed the federation's users (there are no more distinct items than that)."""
    if params.k > total_users:
        raise ParameterError(
            f"k = {params.k} is more than the {total_users:,} users of the run's parties"
        )


def check_memory(params: MechanismParams, party_id: str, n_users: int, limits: Limits) -> None:
    """The run's estimated memory at a party of ``n_users`` users against the limit."""
    need = run_memory(params, n_users)
    if need > limits.max_memory_mb * (1 << 20):
        raise ParameterLimit(
            f"this run would need about {need / (1 << 20):,.0f} MB at party {party_id} "
            f"({n_users:,} users, up to {level_candidates(params):,} candidates a level), over "
            f"the limit of {limits.max_memory_mb:,.0f} MB"
        )


def check_candidates(n_candidates: int, limits: Limits) -> None:
    """Refuse an estimate request whose candidate set is over the limit (before estimating)."""
    if n_candidates > limits.max_candidates:
        raise ParameterLimit(
            f"{n_candidates:,} candidates are over this party's limit of {limits.max_candidates:,}"
        )
