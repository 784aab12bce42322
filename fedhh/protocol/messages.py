"""Typed, versioned protocol messages between the coordinator and the parties.

Field layouts are stable: protos/fedhh/v1/protocol.proto carries exactly these fields.

* :class:`RunSpec` — everything a party needs to plan its part of a run.
* :class:`Request` — envelope of one task (estimate request, Phase II / TAPS search request).
* :class:`Reply` — envelope of one result (estimates, a party's search result, or an error).
* :class:`RunResult` — the final top-k with estimates, standard errors, cost and privacy figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedhh.core.items import IntCodec, StringCodec
from fedhh.errors import ParameterError
from fedhh.mechanisms.layout import layout_of
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import (
    Codes,
    ErrorResult,
    EstimateResult,
    EstimateTask,
    Floats,
    SearchResult,
    SearchTask,
)

PROTOCOL_VERSION = 2  # 2: codes travel as bytes with their bit length (items of any width)


def codec_from_name(name: str) -> StringCodec | IntCodec:
    """ "str:W" → StringCodec(W) (W ≤ 64 bytes); "int:B" → IntCodec(B) (B ≤ 64)."""
    kind, _, width = name.partition(":")
    if kind == "str" and width.isdigit():
        return StringCodec(int(width))
    if kind == "int" and width.isdigit():
        return IntCodec(int(width))
    raise ParameterError(f"bad item codec {name!r}: expected 'str:W' or 'int:B'")


def codec_name(codec: StringCodec | IntCodec) -> str:
    return f"str:{codec.width}" if isinstance(codec, StringCodec) else f"int:{codec.bits}"


@dataclass(frozen=True)
class RunSpec:
    """A run: its id, the mechanism parameters, the parties (ids and user counts) and the codec."""

    run_id: str
    params: MechanismParams
    party_ids: tuple[str, ...]
    party_sizes: tuple[int, ...]
    codec: str
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not self.party_ids:
            raise ParameterError("a run needs at least one party")
        if len(set(self.party_ids)) != len(self.party_ids):
            raise ParameterError("party ids must be distinct")
        if len(self.party_sizes) != len(self.party_ids):
            raise ParameterError("one user count per party is needed")
        codec = codec_from_name(self.codec)
        if codec.m != self.params.m:
            raise ParameterError(
                f"the item codec has {codec.m} bits but the run asks for m = {self.params.m}"
            )

    @property
    def ended_rule(self) -> bool:
        """Whether TAP/TAPS give a prefix that has ended one child (docs/mechanisms.md §10):
        zero-padded text items (a string codec) wider than 64 bits. Up to 64 bits the plan keeps
        its earlier rule, so those runs give exactly the results they always gave."""
        return self.codec.startswith("str:") and self.params.m > 64

    def party_index(self, party_id: str) -> int:
        try:
            return self.party_ids.index(party_id)
        except ValueError:
            raise ParameterError(f"party {party_id!r} is not in run {self.run_id!r}") from None


def check_feasible(params: MechanismParams, party_ids: Sequence[str], sizes: Sequence[int]) -> None:
    """Every party needs at least one user per level it takes part in (else a clear error)."""
    p = params.resolved()
    planned = layout_of(p).party_levels
    for pid, n in zip(party_ids, sizes, strict=True):
        if n < planned:
            raise ParameterError(
                f"party {pid} has {n} users, fewer than the {planned} levels of this "
                f"{p.mechanism} run (m = {p.m}, η = {p.eta}); give it more users or a larger step"
            )


Task = EstimateTask | SearchTask
Result = EstimateResult | SearchResult | ErrorResult


@dataclass(frozen=True, eq=False)
class Request:
    """Coordinator → party: one task of one round."""

    run_id: str
    request_id: int
    round: int
    party_id: str
    task: Task
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, eq=False)
class Reply:
    """Party → coordinator: the result of one request."""

    run_id: str
    request_id: int
    party_id: str
    result: Result
    version: int = PROTOCOL_VERSION


@dataclass(eq=False)
class RunResult:
    """The answer of a run with its cost and privacy bookkeeping (docs/architecture.md)."""

    run_id: str
    mechanism: str
    items: Codes
    estimates: Floats
    stderrs: Floats
    contributors: Any
    params: dict[str, Any]
    cost: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed_parties: list[str] = field(default_factory=list)
