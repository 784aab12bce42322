"""Reports from real user devices: the party agent's report endpoint and how it answers the
coordinator's estimate requests from them.

Supported (a party whose users report from their devices):

* estimate requests (``EstimateTask``): every level of PEM-Global, the Phase I levels of TAP and
  TAPS, and the TAPS completion round. When such a request arrives the agent opens a *report
  task* (run, prefix length, oracle and its parameters, candidates for GRR/OUE). Devices fetch
  it, perturb their own item (:mod:`fedhh.clients.reporter`) and submit one report each. The
  task closes when its quota is reached — the users not yet reported in this run divided by the
  levels still planned (``phase1_plan``), as the in-process party splits its users — or, with at
  least one report, when ``collect_seconds`` have passed since it opened.
* The agent then answers with the oracle's support counts debiased, scaled by n_i / n_group
  (n_i: the party's enrolled users, n_group: the task's reports) and the standard error of
  :func:`fedhh.mechanisms.local.estimate_level` (oracle variance + group-sampling variance).
* Not supported: local-search requests (PEM-Local, TAP/TAPS Phase II) — they need the party's
  users over several sequential levels chosen inside the party; a device party answers them with
  an ``unsupported`` error and the coordinator's policy goes on without it (or fails the run).

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

from fedhh.errors import FedHHError, ParameterError, ReportError
from fedhh.mechanisms.plans import phase1_plan
from fedhh.mechanisms.strategies import build_strategies
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchTask,
)
from fedhh.oracles import OLH, FrequencyOracle, OLHPool, Reports
from fedhh.protocol import Reply, Request, RunSpec
from fedhh.protocol.party import pool_seed_for
from fedhh.protocol.serde import decode, encode
from fedhh.wire.security import TokenStore, identity
from fedhh.wire.v1 import report_pb2, report_pb2_grpc

log = logging.getLogger("fedhh.party.devices")
MAX_REPORT_BYTES = 1 << 16


def estimate_from_reports(
    reports: Reports,
    oracle: FrequencyOracle,
    candidates: np.ndarray,
    party_size: int,
    length: int,
) -> EstimateResult:
    """Scaled estimates and standard errors of a group's reports (as ``estimate_level``)."""
    n_g = reports.n
    cand = np.asarray(candidates, dtype=np.uint64)
    raw = oracle.estimate(reports, cand)
    scale = party_size / n_g
    est = raw * scale
    p, q = oracle.probabilities(int(cand.size) + 1)
    c = np.clip(raw, 0.0, n_g)
    var_fo = (c * p * (1 - p) + (n_g - c) * q * (1 - q)) / (p - q) ** 2
    f = np.clip(est / max(party_size, 1), 0.0, 1.0)
    var_s = n_g * f * (1 - f) * max(party_size - n_g, 0) / max(party_size - 1, 1)
    se = scale * np.sqrt(var_fo + var_s)
    if isinstance(oracle, OLH):
        evals = n_g * int(cand.size)
    elif isinstance(oracle, OLHPool):
        evals = oracle.pool_size * int(cand.size)
    else:
        evals = 0
    cost = LevelCost(length, 0, int(cand.size), n_g, oracle.name, evals, reports.nbytes())
    return EstimateResult(est, se, cost)


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
    spec: RunSpec
    request: Request
    task: ReportTask
    oracle: FrequencyOracle
    candidates: np.ndarray
    quota: int
    opened: float
    count: int
    template: Reports


class DeviceCollector:
    """The agent's source of replies when its users report from devices."""

    def __init__(
        self, party_id: str, n_users: int, store: AgentStore, collect_seconds: float
    ) -> None:
        self.party_id = party_id
        self.n_users = n_users
        self.store = store
        self.collect_seconds = collect_seconds
        self.cond = threading.Condition()
        self.open: OpenTask | None = None

    # --- coordinator side ----------------------------------------------------------------------
    def handle(self, spec: RunSpec, req: Request) -> Reply | None:
        """The reply to ``req`` once its report task is complete; None while collecting."""
        stored = self.store.reply_for(req.run_id, req.request_id)
        if stored is not None:
            reply: Reply = decode(stored)
            return reply
        with self.cond:
            cur = self.open
            if cur is None or (cur.request.run_id, cur.request.request_id) != (
                req.run_id,
                req.request_id,
            ):
                problem = self._open(spec, req)
                if problem is not None:
                    return self._finish_error(spec, req, "unsupported", problem)
                return None
            elapsed = time.monotonic() - cur.opened
            if cur.count >= cur.quota or (cur.count > 0 and elapsed >= self.collect_seconds):
                return self._finish(cur)
            if elapsed >= self.collect_seconds and cur.count == 0:
                return None  # keep waiting: the coordinator's deadline decides
            return None

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)

    def _open(self, spec: RunSpec, req: Request) -> str | None:
        task = req.task
        if req.party_id != self.party_id or spec.party_ids[spec.party_index(self.party_id)] != (
            self.party_id
        ):
            return f"request addressed to {req.party_id}, this is {self.party_id}"
        if isinstance(task, SearchTask):
            return (
                "a party whose users report from devices answers estimate requests only "
                "(PEM-Global levels, TAP/TAPS Phase I, TAPS completion); local searches "
                "(PEM-Local, Phase II) are not supported"
            )
        assert isinstance(task, EstimateTask)
        params = spec.params.resolved()
        strategies = build_strategies(params, pool_seed_for(params.seed))
        cand = np.asarray(task.candidates, dtype=np.uint64)
        if cand.size == 0:
            return "empty candidate set"
        oracle = strategies.oracle_for(int(cand.size) + 1)
        reported = self.store.count_reports(req.run_id)
        remaining = max(self.n_users - reported, 0)
        if task.group == "reserve":
            quota = remaining
        else:
            _, planned = phase1_plan(params)
            quota = remaining // max(1, planned - task.level)
        quota = max(quota, 1)
        rt = ReportTask.for_oracle(
            req.run_id, req.request_id, params.m, task.length, spec.codec, oracle, cand
        )
        count = self.store.count_reports(req.run_id, req.request_id)
        self.open = OpenTask(
            spec,
            req,
            rt,
            oracle,
            cand,
            quota,
            time.monotonic(),
            count,
            report_template(oracle, cand),
        )
        log.info(
            "run %s: report task %d open (length %d, %s, %d candidates, quota %d)",
            req.run_id,
            req.request_id,
            task.length,
            oracle.name,
            cand.size,
            quota,
        )
        self.cond.notify_all()
        return None

    def _finish(self, cur: OpenTask) -> Reply:
        blobs = self.store.task_reports(cur.request.run_id, cur.request.request_id)
        reports = Reports.from_bytes(blobs[0])
        rest = [Reports.from_bytes(b) for b in blobs[1:]]
        if rest:
            reports = Reports(
                reports.kind,
                reports.size,
                {
                    k: np.concatenate([reports.arrays[k], *(r.arrays[k] for r in rest)])
                    for k in reports.arrays
                },
            )
        assert isinstance(cur.request.task, EstimateTask)
        try:
            result: Any = estimate_from_reports(
                reports, cur.oracle, cur.candidates, self.n_users, cur.request.task.length
            )
        except FedHHError as exc:
            result = ErrorResult("failed", str(exc))
        reply = Reply(cur.request.run_id, cur.request.request_id, self.party_id, result)
        self.store.save_handled(
            cur.request.run_id,
            cur.request.request_id,
            encode(cur.spec),
            encode(cur.request),
            encode(reply),
        )
        log.info(
            "run %s: report task %d closed with %d reports",
            cur.request.run_id,
            cur.request.request_id,
            reports.n,
        )
        self.open = None
        return reply

    def _finish_error(self, spec: RunSpec, req: Request, code: str, message: str) -> Reply:
        reply = Reply(req.run_id, req.request_id, self.party_id, ErrorResult(code, message))
        self.store.save_handled(
            req.run_id, req.request_id, encode(spec), encode(req), encode(reply)
        )
        return reply

    def close_run(self, run_id: str) -> None:
        with self.cond:
            if self.open is not None and self.open.request.run_id == run_id:
                self.open = None

    # --- device side ---------------------------------------------------------------------------
    def current_task(self, user_id: str) -> ReportTask:
        with self.cond:
            cur = self.open
            if cur is None or cur.count >= cur.quota:
                raise _Refused(grpc.StatusCode.NOT_FOUND, "no report task is open")
            if self.store.has_reported(cur.request.run_id, user_id):
                raise _Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"user {user_id} has already reported in run {cur.request.run_id}",
                )
            return cur.task

    def submit(self, user_id: str, run_id: str, task_id: int, data: bytes) -> int:
        with self.cond:
            cur = self.open
            if cur is None or (cur.request.run_id, cur.request.request_id) != (run_id, task_id):
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

    def __init__(self, collector: DeviceCollector, tokens: TokenStore) -> None:
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
                open_task_id=cur.request.request_id if cur else -1,
                open_run_id=cur.request.run_id if cur else "",
                reports_in_open_task=cur.count if cur else 0,
            )


__all__ = ["DeviceCollector", "ReportServicer", "check_single_report", "estimate_from_reports"]
