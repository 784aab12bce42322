"""Reports from real user devices: the party agent's report endpoint and the
:class:`~fedhh.protocol.party.ReportSource` through which the protocol's
:class:`~fedhh.protocol.Party` gets its users' reports from it.

A party whose users report from their devices is the same :class:`~fedhh.protocol.Party` as
any other: it picks each level's user group from its ledger and estimates with the shared
:func:`~fedhh.mechanisms.local.estimate_reports`. Only the reports come from elsewhere:

* when an estimate request (PEM-Global levels, TAP/TAPS Phase I, the TAPS completion round)
  needs a group's reports, :class:`DeviceSource` opens a *report task* (run, prefix length,
  oracle and its parameters, candidates for GRR/OUE) with the group's size as its quota.
  Devices fetch it, perturb their own item (:mod:`fedhh.clients.reporter`) and submit one
  report each. The task closes when its quota is reached or, with at least one report, when
  ``collect_seconds`` have passed since it opened; until then the party answers None and the
  agent asks again.
* Local searches (PEM-Local, TAP/TAPS Phase II) need the users' items inside the party: a device
  party answers them with an error, and the coordinator's policy goes on without it.

One report per user per run: reports are stored keyed by (run, user) in the agent's SQLite file,
so a second submit is refused with ALREADY_EXISTS (the first kept), also across agent restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from fedhh.clients.reporter import ReportTask
from fedhh.clients.store import AgentStore
from fedhh.errors import ParameterError, ReportError
from fedhh.oracles import FrequencyOracle, Reports
from fedhh.protocol import codec_from_name
from fedhh.protocol.party import Group
from fedhh.wire.security import TokenStore, identity
from fedhh.wire.v1 import report_pb2, report_pb2_grpc

log = logging.getLogger("fedhh.party.devices")
MAX_REPORT_BYTES = 1 << 16


def report_template(oracle: FrequencyOracle, candidates: np.ndarray) -> Reports:
    """One report of the oracle (of a dummy value): the shape every device report must have."""
    cand = candidates if candidates.size else None
    return oracle.perturb(np.zeros(1, dtype=np.uint64), np.random.default_rng(0), cand)


def check_single_report(
    data: bytes,
    oracle: FrequencyOracle,
    candidates: np.ndarray,
    template: Reports | None = None,
) -> Reports:
    """Parse one device report and check it is exactly one report of this task's oracle."""
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"report of {len(data)} bytes exceeds {MAX_REPORT_BYTES}")
    rep = Reports.from_bytes(data)
    if rep.n != 1:
        raise ReportError(f"a device sends exactly one report, got {rep.n}")
    if template is None:
        template = report_template(oracle, candidates)
    if rep.kind != template.kind or rep.size != template.size:
        raise ReportError(
            f"report of {rep.kind} over {rep.size} symbols; the task wants {template.kind} over "
            f"{template.size}"
        )
    for name, arr in template.arrays.items():
        got = rep.arrays.get(name)
        if got is None or got.dtype != arr.dtype or got.shape != arr.shape:
            raise ReportError(f"report field {name!r} must be {arr.dtype} of shape {arr.shape}")
    if set(rep.arrays) != set(template.arrays):
        raise ReportError(f"report fields must be {sorted(template.arrays)}")
    limits = {"symbol": rep.size, "bucket": rep.size, "seed_index": getattr(oracle, "pool_size", 0)}
    for name, limit in limits.items():
        if name in rep.arrays and int(rep.arrays[name].max()) >= limit:
            raise ReportError(f"report field {name!r} out of range (must be < {limit})")
    return rep


@dataclass
class OpenTask:
    key: tuple[str, int]  # (run, request)
    task: ReportTask
    oracle: FrequencyOracle
    candidates: np.ndarray
    quota: int
    opened: float
    count: int
    template: Reports


class DeviceSource:
    """The reports of a party's users, collected from their devices (one task at a time)."""

    def __init__(self, n_users: int, codec: str, store: AgentStore, collect_seconds: float) -> None:
        self.n_users = n_users
        self.codec = codec
        self.m = codec_from_name(codec).m
        self.store = store
        self.collect_seconds = collect_seconds
        self.cond = threading.Condition()
        self.open: OpenTask | None = None

    # --- party side ----------------------------------------------------------------------------
    def reports(self, group: Group, rng: np.random.Generator) -> Reports | None:
        """The group's reports once its task has closed; None while it is collecting."""
        key = (group.request.run_id, group.request.request_id)
        with self.cond:
            if self.store.reply_for(*key) is not None:  # answered before: a replay
                return self._stored(key)
            cur = self.open
            if cur is None or cur.key != key:
                self._open(key, group)
                return None
            elapsed = time.monotonic() - cur.opened
            if cur.count >= cur.quota or (cur.count > 0 and elapsed >= self.collect_seconds):
                self.open = None
                log.info("run %s: report task %d closed with %d reports", *key, cur.count)
                return self._stored(key)
            return None

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)

    def _open(self, key: tuple[str, int], group: Group) -> None:
        oracle, cand, quota = group.oracle, group.candidates, max(int(group.users.size), 1)
        task = ReportTask.for_oracle(*key, self.m, group.length, self.codec, oracle, cand)
        count = self.store.count_reports(*key)
        self.open = OpenTask(
            key, task, oracle, cand, quota, time.monotonic(), count, report_template(oracle, cand)
        )
        log.info(
            "run %s: report task %d open (length %d, %s, %d candidates, quota %d)",
            *key,
            group.length,
            oracle.name,
            cand.size,
            quota,
        )
        self.cond.notify_all()

    def _stored(self, key: tuple[str, int]) -> Reports | None:
        parts = [Reports.from_bytes(b) for b in self.store.task_reports(*key)]
        if not parts:
            return None
        arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
        return Reports(parts[0].kind, parts[0].size, arrays)

    # --- device side ---------------------------------------------------------------------------
    def current_task(self, user_id: str) -> ReportTask:
        with self.cond:
            cur = self.open
            if cur is None or cur.count >= cur.quota:
                raise _Refused(grpc.StatusCode.NOT_FOUND, "no report task is open")
            if self.store.has_reported(cur.key[0], user_id):
                raise _Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"user {user_id} has already reported in run {cur.key[0]}",
                )
            return cur.task

    def submit(self, user_id: str, run_id: str, task_id: int, data: bytes) -> int:
        with self.cond:
            cur = self.open
            if cur is None or cur.key != (run_id, task_id):
                if self.store.has_reported(run_id, user_id):
                    raise _Refused(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"user {user_id} has already reported in run {run_id}",
                    )
                raise _Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"task {task_id} of run {run_id} is not open; fetch the current task",
                )
            try:
                check_single_report(data, cur.oracle, cur.candidates, cur.template)
            except (ReportError, ParameterError) as exc:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            if self.store.has_reported(run_id, user_id):
                raise _Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"user {user_id} has already reported in run {run_id}",
                )
            if cur.count >= cur.quota:
                raise _Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"task {task_id} is full; fetch the next task",
                )
            if not self.store.add_report(run_id, user_id, task_id, data):
                raise _Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"user {user_id} has already reported in run {run_id}",
                )
            cur.count += 1
            if cur.count >= cur.quota:
                self.cond.notify_all()
            return cur.count


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _user(context: grpc.ServicerContext, user_id: str) -> str:
    if not (0 < len(user_id) <= 128 and user_id.isprintable()):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be 1..128 printable chars")
    return user_id


class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    """The party agent's report endpoint (device tokens only)."""

    def __init__(self, collector: DeviceSource, tokens: TokenStore) -> None:
        self.collector = collector
        self.tokens = tokens

    def _refuse(self, context: grpc.ServicerContext, method: str, exc: _Refused) -> None:
        log.info("refused %s from %s: %s %s", method, context.peer(), exc.code.name, exc.message)
        context.abort(exc.code, exc.message)

    def GetTask(self, request: Any, context: Any) -> Any:
        identity(self.tokens, context)
        user = _user(context, request.user_id)
        try:
            return self.collector.current_task(user).to_pb()
        except _Refused as exc:
            self._refuse(context, "GetTask", exc)

    def SubmitReport(self, request: Any, context: Any) -> Any:
        identity(self.tokens, context)
        user = _user(context, request.user_id)
        try:
            n = self.collector.submit(user, request.run_id, request.task_id, request.report)
        except _Refused as exc:
            self._refuse(context, "SubmitReport", exc)
        return report_pb2.SubmitReportResponse(accepted=True, reports_in_task=n)

    def GetReportStatus(self, request: Any, context: Any) -> Any:
        identity(self.tokens, context)
        c = self.collector
        with c.cond:
            cur = c.open
            return report_pb2.ReportStatus(
                accepted=c.store.count_reports(request.run_id or None),
                open_task_id=cur.key[1] if cur else -1,
                open_run_id=cur.key[0] if cur else "",
                reports_in_open_task=cur.count if cur else 0,
            )


__all__ = ["DeviceSource", "ReportServicer", "check_single_report"]
