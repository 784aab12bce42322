"""The party agent's report endpoint: the gRPC service user devices call (docs/device-wire.md).
Every call is authenticated by the user credential it carries; what a call asks is done by the
:class:`~fedhh.clients.devices.DeviceSource` behind it, and every refusal is a precise status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from fedhh.clients.devices import MAX_BATCH, DeviceSource
from fedhh.clients.ingest import MAX_REPORT_BYTES
from fedhh.wire.rpc import Refused, refused
from fedhh.wire.security import bearer_token
from fedhh.wire.v1 import report_pb2

log = logging.getLogger("fedhh.party.devices")
Code = grpc.StatusCode


def report_of(entry: Any) -> bytes | Any:
    """The report a ``SubmitReportRequest`` or ``UserReport`` carries: its ``ldp_report``
    message (wire version 2) or its ``report`` frame (version 1); exactly one must be set."""
    if entry.HasField("ldp_report"):
        if entry.report:
            raise Refused(
                Code.INVALID_ARGUMENT, "set ldp_report or report (wire version 1), not both"
            )
        return entry.ldp_report
    if len(entry.report) > MAX_REPORT_BYTES:
        why = f"report of {len(entry.report)} bytes exceeds {MAX_REPORT_BYTES}"
        raise Refused(Code.RESOURCE_EXHAUSTED, why)
    if not entry.report:
        raise Refused(Code.INVALID_ARGUMENT, "no report: set ldp_report (docs/device-wire.md)")
    return bytes(entry.report)


class ReportServicer:
    """The party agent's report endpoint (user credentials only)."""

    def __init__(self, source: DeviceSource) -> None:
        self.source = source
        self.credentials = source.credentials

    def _user(self, context: grpc.ServicerContext, claimed: str) -> int:
        user, why = self.credentials.check(bearer_token(context.invocation_metadata()))
        if user is None:
            raise Refused(Code.UNAUTHENTICATED, why)
        if claimed and claimed != str(user):
            raise Refused(
                Code.PERMISSION_DENIED,
                f"this credential belongs to user {user}, not {claimed[:64]!r}",
            )
        return user

    def _count(self, outcome: str, n: int = 1) -> None:
        metrics = self.source.metrics
        if metrics is not None and n:
            metrics.device_reports.labels(outcome).inc(n)

    def _serve(self, method: str, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            r = refused(exc)
            if r is None:
                log.exception("%s failed", method)
                r = Refused(Code.INTERNAL, f"{method} failed on the agent")
            else:
                log.info("refused %s from %s: %s %s", method, context.peer(), r.code.name, r)
        if method == "SubmitReport":
            self._count(r.code.name)
        context.abort(r.code, r.message)

    def GetTask(self, request: Any, context: Any) -> Any:
        def go() -> Any:
            user = self._user(context, request.user_id)
            return self.source.task_message(user, 2 if request.wire_version >= 2 else 1)

        return self._serve("GetTask", context, go)

    def SubmitReport(self, request: Any, context: Any) -> Any:
        def go() -> Any:
            user = self._user(context, request.user_id)
            report = report_of(request)
            bad, n = self.source.submit(
                [(user, report)], request.run_id, request.task_id, single=True
            )
            if bad:
                raise bad[0][1]
            self._count("accepted")
            return report_pb2.SubmitReportResponse(accepted=True, reports_in_task=n)

        return self._serve("SubmitReport", context, go)

    def SubmitReportBatch(self, request: Any, context: Any) -> Any:
        def go() -> Any:
            self._user(context, "")
            if len(request.reports) > MAX_BATCH:
                raise Refused(
                    Code.RESOURCE_EXHAUSTED,
                    f"a batch holds at most {MAX_BATCH} reports, got {len(request.reports)}",
                )
            refusals: list[tuple[int, Refused]] = []
            entries, index = [], []
            for i, entry in enumerate(request.reports):
                user, why = self.credentials.check(entry.credential)
                if user is None:
                    refusals.append((i, Refused(Code.UNAUTHENTICATED, why)))
                    continue
                try:
                    entries.append((user, report_of(entry)))
                    index.append(i)
                except Refused as why_not:
                    refusals.append((i, why_not))
            bad, n = self.source.submit(entries, request.run_id, request.task_id)
            refusals += [(index[j], r) for j, r in bad]
            refusals.sort(key=lambda x: x[0])
            self._count("accepted", len(request.reports) - len(refusals))
            for _, r in refusals:
                self._count(r.code.name)
            return report_pb2.ReportBatchResult(
                accepted=len(request.reports) - len(refusals),
                refused=[
                    report_pb2.ReportRefusal(index=i, code=r.code.name, message=r.message)
                    for i, r in refusals
                ],
                reports_in_task=n,
            )

        return self._serve("SubmitReportBatch", context, go)

    def GetReportStatus(self, request: Any, context: Any) -> Any:
        """The report count of the open task's run, or of a run this credential's user has
        reported in: a device learns nothing about the runs it took no part in."""

        def go() -> Any:
            user = self._user(context, "")
            s = self.source
            with s.cond:
                cur = s.open
                info = (cur.key[1], cur.key[0], cur.count) if cur else (-1, "", 0)
                run = request.run_id or info[1]
                if run and run != info[1] and not s._has_reported(run, user):
                    raise Refused(
                        Code.PERMISSION_DENIED,
                        f"user {user} has no report in run {run[:64]!r} and it is not open",
                    )
            return report_pb2.ReportStatus(
                accepted=s.store.count_reports(run) if run else 0,
                open_task_id=info[0],
                open_run_id=info[1],
                reports_in_open_task=info[2],
            )

        return self._serve("GetReportStatus", context, go)
