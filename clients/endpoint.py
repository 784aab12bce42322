"""The party agent's report endpoint: the gRPC service user devices call (docs/device-wire.md).
Every call is authenticated by the user credential it carries; what a call asks is done by the
:class:`~fedhh.clients.devices.DeviceSource` behind it, and every refusal is a precise status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from fedhh.clients.devices import MAX_BATCH, DeviceSource
from fedhh.clients.ingest import MAX_REPORT_BYTES
from fedhh.wire.rpc import SERVER_OPTIONS, Refused, add_servicer, health_follows, refused
from fedhh.wire.security import bearer_token, bind_port
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
            task_id, run_id, in_task, accepted = self.source.status(request.run_id, user)
            return report_pb2.ReportStatus(
                accepted=accepted,
                open_task_id=task_id,
                open_run_id=run_id,
                reports_in_open_task=in_task,
            )

        return self._serve("GetReportStatus", context, go)


WORKERS = 32  # report threads: more only add switches; a commit waits (≤ 2 ms) for all of them


def report_server(
    source: DeviceSource,
    listen: str,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    shared: bool = False,
    check_free: bool = True,
) -> tuple[grpc.Server, int]:
    """The report endpoint of ``source`` on ``listen``, started, with its health service
    (NOT_SERVING while the source's state file refuses writes); returns it and its port.
    ``shared``: several ingestion shards listen on this one port (SO_REUSEPORT; the kernel
    spreads the devices' connections over them; ``check_free`` False: the others already
    listen)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    batch_bytes = MAX_BATCH * (MAX_REPORT_BYTES // 64 + 256)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="report"),
        options=[
            *(o for o in SERVER_OPTIONS if not (shared and o[0] == "grpc.so_reuseport")),
            *([("grpc.so_reuseport", 1)] if shared else []),
            ("grpc.max_receive_message_length", batch_bytes),
        ],
    )
    add_servicer(server, report_pb2, "ReportService", ReportServicer(source))
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("fedhh.v1.ReportService", health_pb2.HealthCheckResponse.SERVING)
    health_follows(source.store, hs, ("", "fedhh.v1.ReportService"), "report endpoint")
    port = bind_port(
        server, listen, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure, check_free=check_free
    )
    server.start()
    return server, port
