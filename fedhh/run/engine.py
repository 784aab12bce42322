"""The embedded engine: coordinator and parties in one process (``fedhh simulate``).

The in-process transport of the protocol's :class:`~fedhh.protocol.RunDriver`: it hands each
request's bytes to its :class:`~fedhh.protocol.Party` and the reply's bytes back, exactly what
the gRPC and Flower transports carry, so results and byte costs equal theirs. PEM (single
population) pools every party's users into one party: it is the non-federated reference.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedhh.core import codes as cd
from fedhh.core.items import IntCodec, StringCodec
from fedhh.errors import ParameterError
from fedhh.mechanisms.layout import rounds_of
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import Party, Progress, RunDriver, RunResult, RunSpec, Sent, codec_name
from fedhh.protocol.admission import BudgetView, admit_run
from fedhh.protocol.encoding import decode_request, encode
from fedhh.protocol.limits import Limits

ProgressCallback = Callable[[Progress], None]


def build_run(
    parties: Sequence[np.ndarray],
    codec: StringCodec | IntCodec,
    params: MechanismParams,
    run_id: str = "run-1",
    party_ids: Sequence[str] | None = None,
    *,
    bounds: Limits | None = None,
    budgets: Mapping[str, BudgetView | None] | None = None,
) -> tuple[RunSpec, dict[str, Party]]:
    """The run spec and one :class:`Party` per party for an in-process run (a run with a
    central target gets its ε₀ from admission first: ``bounds`` and ``budgets`` as the
    driver's)."""
    if params.m != codec.m:
        raise ParameterError(f"the items have {codec.m} bits but the run asks for m = {params.m}")
    arrays = [np.asarray(p, dtype=np.uint64) for p in parties]
    if not arrays:
        raise ParameterError("a run needs at least one party")
    ids = list(party_ids) if party_ids is not None else [f"party-{i}" for i in range(len(arrays))]
    if len(ids) != len(arrays):
        raise ParameterError("one party id per party is needed")
    if params.mech.pools_users:  # the single-population reference (PEM)
        arrays, ids = [np.concatenate(arrays)], ["all-users"]
    for pid, arr in zip(ids, arrays, strict=True):
        if cd.count(arr) == 0:
            raise ParameterError(f"party {pid} has no users")
    sizes = tuple(cd.count(a) for a in arrays)
    if params.central_epsilon is not None:
        chosen = admit_run(params, ids, sizes, bounds or Limits(), budgets=budgets).epsilon
        params = dataclasses.replace(params, epsilon=chosen)
    spec = RunSpec(run_id, params, tuple(ids), sizes, codec_name(codec))
    return spec, {pid: Party(spec, pid, arr) for pid, arr in zip(ids, arrays, strict=True)}


def run_in_process(
    spec: RunSpec,
    parties: dict[str, Party],
    progress: ProgressCallback | None = None,
    policy: str = "continue",
    *,
    bounds: Limits | None = None,
    budgets: Mapping[str, BudgetView | None] | None = None,
) -> RunResult:
    """Drive a run to its end, every message through its wire bytes (admitted by the driver
    against ``bounds`` and the parties' ``budgets``, as on every transport)."""
    driver = RunDriver(spec, policy, bounds=bounds, budgets=budgets)
    queue: list[Sent] = driver.start(time.perf_counter())
    while queue:
        if progress is not None:
            progress(driver.coord.progress)
        nxt: list[Sent] = []
        for sent in queue:
            reply = parties[sent.party_id].handle(decode_request(sent.payload))
            assert reply is not None  # a party over its users' items never waits
            nxt.extend(driver.receive(encode(reply)))
        queue = nxt
    result = driver.outcome(time.perf_counter())
    if progress is not None:
        progress(driver.coord.progress)
    return result


def simulate(
    parties: Sequence[np.ndarray],
    codec: StringCodec | IntCodec,
    params: MechanismParams,
    *,
    progress: ProgressCallback | None = None,
    bounds: Limits | None = None,
    budgets: Mapping[str, BudgetView | None] | None = None,
    **run: Any,
) -> RunResult:
    """One in-process run over per-party code arrays (``run``: :func:`build_run`'s
    ``run_id`` and ``party_ids``; ``bounds`` and ``budgets``: :func:`run_in_process`'s)."""
    spec, party_objs = build_run(parties, codec, params, **run, bounds=bounds, budgets=budgets)
    return run_in_process(spec, party_objs, progress, bounds=bounds, budgets=budgets)


def expected_rounds(params: MechanismParams, n_parties: int) -> int:
    """The most coordinator rounds a run over ``n_parties`` parties takes (for progress
    displays). Exact unless adaptive depth decides during the run how many levels are shared;
    the coordinator's :class:`~fedhh.protocol.Progress` carries both bounds
    (:func:`~fedhh.mechanisms.layout.rounds_of`), exact once the shared levels end."""
    return rounds_of(params, 1 if params.mech.pools_users else n_parties).most


__all__ = ["build_run", "expected_rounds", "run_in_process", "simulate"]
