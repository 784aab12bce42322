"""The user SDK: what runs on a user's device.

A device fetches its party's current report task (:class:`ReportTask`: run, prefix length, oracle
and its parameters, and the candidate set for GRR/OUE as the candidates' 64-bit oracle keys),
turns its one item into an ε-LDP report with :func:`make_report` (the item is encoded, cut to the
task's prefix, keyed like the candidates — the prefix itself up to 64 bits, its
:func:`fedhh.core.codes.fingerprint` above — and perturbed on the device; only the perturbed report
leaves it, as a ``Report`` message of device wire version 2, docs/device-wire.md) and submits it
once per run. :class:`ReporterClient` does the three steps against a party agent's report
endpoint, with the user's credential (issued by the party, ``fedhh party enroll``)::

    client = ReporterClient("party.example.org:7800", credential=cred, ca_cert=Path("ca.pem"))
    outcome = client.report("apple")   # fetch task, perturb locally, submit

The device has its own privacy limit: a task asking more than ``max_epsilon`` is refused on the
device (no report is made), whatever the party says. Every refusal of the endpoint raises a
typed :class:`DeviceRefusal` (:class:`BadCredential`, :class:`NoOpenTask`,
:class:`AlreadyReported`, :class:`TaskClosed`, :class:`ReportRefused`,
:class:`EndpointUnavailable`), the same kinds as the JavaScript client's (``clients-js``); a
connection no retry can fix (a certificate not trusted, expired or for other hosts, TLS on one
side only) raises :class:`~fedhh.errors.ConnectionProblem` saying what to fix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fedhh.clients.device_wire import WIRE_VERSION, report_to_pb
from fedhh.core import codes as cd
from fedhh.core.privacy import DEFAULT_MAX_EPSILON
from fedhh.errors import ConnectionProblem, ParameterError, TransportError
from fedhh.oracles import FrequencyOracle, oracle_from
from fedhh.protocol.encoding import array_from_pb, array_to_pb
from fedhh.protocol.messages import codec_from_name
from fedhh.wire.security import ServiceClient
from fedhh.wire.v1 import report_pb2, report_pb2_grpc

TASK_PARAMETERS = ("g", "pool_size", "pool_seed")  # the oracle parameters a task's fields carry


@dataclass(frozen=True, eq=False)
class ReportTask:
    """One report task of a run, as a device sees it."""

    run_id: str
    task_id: int
    m: int
    length: int
    codec: str
    oracle: str
    epsilon: float
    g: int = 0
    pool_size: int = 0
    pool_seed: int = 0
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    def __post_init__(self) -> None:
        if not 0 <= self.length <= self.m:
            raise ParameterError(f"prefix length {self.length} outside 0..{self.m}")
        if codec_from_name(self.codec).m != self.m:
            raise ParameterError(f"codec {self.codec} does not have m = {self.m} bits")
        if self.build_oracle().needs_candidates and self.candidates.size == 0:
            raise ParameterError(f"a {self.oracle} task needs its candidate set")

    def build_oracle(self) -> FrequencyOracle:
        """The task's frequency oracle (the same object the party aggregates with), built with
        the task's parameter fields that it takes."""
        offered = {k: int(getattr(self, k)) for k in TASK_PARAMETERS}
        return oracle_from(self.oracle, self.epsilon, offered)

    @classmethod
    def for_oracle(
        cls,
        run_id: str,
        task_id: int,
        m: int,
        length: int,
        codec: str,
        oracle: FrequencyOracle,
        candidates: np.ndarray,
    ) -> ReportTask:
        """The task for reports made by ``oracle`` (party side): its public parameters in the
        task's fields (0 for those it does not take), the candidates only if its users need them."""
        params = oracle.parameters()
        if not set(params) <= set(TASK_PARAMETERS):
            extra = ", ".join(sorted(set(params) - set(TASK_PARAMETERS)))
            raise ParameterError(f"a report task has no field for {oracle.name}'s {extra}")
        values = {k: 0 for k in TASK_PARAMETERS} | params
        cand = candidates if oracle.needs_candidates else np.zeros(0, dtype=np.uint64)
        return cls(
            run_id,
            task_id,
            m,
            length,
            codec,
            oracle.name,
            oracle.epsilon,
            values["g"],
            values["pool_size"],
            values["pool_seed"],
            np.asarray(cand, dtype=np.uint64),
        )

    def to_pb(self, wire_version: int = WIRE_VERSION) -> Any:
        """The task's message for a client of ``wire_version`` (2: the candidates as
        ``candidate_keys``; 1, or 0 for a client that does not say: as the NDArray)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "candidates"}
        if wire_version >= 2:
            return report_pb2.ReportTask(**values, candidate_keys=self.candidates.tolist())
        return report_pb2.ReportTask(**values, candidates=array_to_pb(self.candidates))

    @classmethod
    def from_pb(cls, msg: Any) -> ReportTask:
        """The task of a message of either wire version (:class:`ParameterError` or
        :class:`~fedhh.errors.ProtocolError` if it is malformed)."""
        values = {f.name: getattr(msg, f.name) for f in fields(cls) if f.name != "candidates"}
        if len(msg.candidate_keys):
            cand = np.array(msg.candidate_keys, dtype=np.uint64)
        else:
            cand = array_from_pb(msg.candidates, "candidates", "uint64")
        return cls(**values, candidates=cand)


def item_key(task: ReportTask, item: object) -> int:
    """The 64-bit oracle key of ``item``'s prefix for ``task`` (docs/device-wire.md §2):
    encode with the task's codec (:class:`~fedhh.errors.CodecError` if it does not fit), cut to
    ``length`` bits, the prefix itself up to 64 bits, its fingerprint above."""
    code = codec_from_name(task.codec).encode([item])
    return int(cd.oracle_keys(cd.prefix(code, task.m, task.length), task.length)[0])


def make_report(task: ReportTask, item: object, rng: np.random.Generator | None = None) -> Any:
    """The ε-LDP report of a user holding ``item`` (a string or an integer, as the run's codec
    wants): encode, cut to the task's prefix, perturb with the task's oracle. Returns the
    ``Report`` message to submit; the item itself never leaves this function."""
    value = np.array([item_key(task, item)], dtype=np.uint64)
    gen = rng if rng is not None else np.random.default_rng()
    oracle = task.build_oracle()
    cand = task.candidates if oracle.needs_candidates else None
    return report_to_pb(oracle.perturb(value, gen, cand))


@dataclass(frozen=True)
class SubmitOutcome:
    """What happened to a device's report."""

    accepted: bool
    status: str  # "accepted", "already-reported", "no-task", "epsilon-too-high", "bad-credential"
    run_id: str = ""
    task_id: int = -1


class DeviceRefusal(TransportError):
    """A refusal of the report endpoint, typed by what a device does about it (``code`` is the
    gRPC status name, the message the endpoint's reason). :func:`refusal` picks the class."""

    codes: tuple[str, ...] = ()


class BadCredential(DeviceRefusal):
    """The credential is not one of this party's, expired or revoked (UNAUTHENTICATED), or
    belongs to another user than the one claimed (PERMISSION_DENIED)."""

    codes = ("UNAUTHENTICATED", "PERMISSION_DENIED")


class NoOpenTask(DeviceRefusal):
    """No report task is open now (NOT_FOUND): ask again later."""

    codes = ("NOT_FOUND",)


class AlreadyReported(DeviceRefusal):
    """This user has reported in this run (ALREADY_EXISTS); the first report is kept."""

    codes = ("ALREADY_EXISTS",)


class TaskClosed(DeviceRefusal):
    """The report's task is no longer open, or its run has ended (FAILED_PRECONDITION): fetch
    the current task."""

    codes = ("FAILED_PRECONDITION",)


class ReportRefused(DeviceRefusal):
    """The report (or batch) is malformed or too large for the task (INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED): nothing was stored."""

    codes = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")


class EndpointUnavailable(DeviceRefusal):
    """The endpoint cannot be reached or cannot store now (UNAVAILABLE, DEADLINE_EXCEEDED,
    CANCELLED): retry later."""

    codes = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


_REFUSALS = {
    code: cls
    for cls in (
        BadCredential,
        NoOpenTask,
        AlreadyReported,
        TaskClosed,
        ReportRefused,
        EndpointUnavailable,
    )
    for code in cls.codes
}


def refusal(code: str, message: str) -> DeviceRefusal:
    """The typed refusal of a status name (any other status: a plain :class:`DeviceRefusal`)."""
    return _REFUSALS.get(code, DeviceRefusal)(code, message)


class EpsilonTooHigh(DeviceRefusal):
    """The party's task asks more ε than this device allows (no report was made)."""

    def __init__(self, task: ReportTask, limit: float) -> None:
        super().__init__(
            "EPSILON_TOO_HIGH",
            f"task {task.task_id} of run {task.run_id} asks ε = {task.epsilon:g}, over this "
            f"device's limit of {limit:g}",
        )
        self.task = task


def user_of(credential: str) -> str:
    """The user id a credential is bound to (``fhc2:<party>:<user>:<issued>:<expires>:<tag>``,
    or the first format ``fhc1:<party>:<user>:<tag>``)."""
    parts = credential.split(":")
    printable = credential.isascii() and credential.isprintable() and " " not in credential
    if len(parts) not in (4, 6) or not parts[2].isdigit() or not printable:
        raise ParameterError("not a fedhh user credential")
    return parts[2]


Report = Any  # a report_pb2.Report message (wire version 2), or a version-1 frame (bytes)


def _report_fields(report: Report) -> dict[str, Any]:
    """The request field that carries ``report``: ``ldp_report`` (a message) or, for a
    version-1 frame, ``report``."""
    return {"report": report} if isinstance(report, bytes) else {"ldp_report": report}


class ReporterClient(ServiceClient):
    """A device's client of a party agent's report endpoint, as one user (its credential, sent
    with every call; pass ``channel=`` to share one channel among many users' clients).

    Every refusal raises a :class:`DeviceRefusal` subclass (:class:`BadCredential`,
    :class:`NoOpenTask`, :class:`AlreadyReported`, :class:`TaskClosed`,
    :class:`ReportRefused`, :class:`EndpointUnavailable`; all :class:`TransportError` with the
    status name as ``code``); a CA certificate that cannot be read, a malformed credential or
    a task the device cannot use raise :class:`ParameterError`, an item the task's codec cannot
    encode :class:`~fedhh.errors.CodecError`."""

    stub = report_pb2_grpc.ReportServiceStub

    def __init__(
        self,
        target: str,
        *,
        credential: str,
        max_epsilon: float = DEFAULT_MAX_EPSILON,  # a device's own cap: a party's default
        **kw: Any,
    ) -> None:
        if not max_epsilon > 0:
            raise ParameterError(f"max_epsilon must be > 0, got {max_epsilon}")
        self.credential = credential
        self.user_id = user_of(credential)
        self.max_epsilon = float(max_epsilon)
        self._auth = (("authorization", f"Bearer {credential}"),)
        try:
            super().__init__(target, token=None, **kw)
        except OSError as exc:
            raise ParameterError(f"cannot read the CA certificate: {exc}") from None

    def _call(self, method: str, request: Any) -> Any:
        try:
            return super()._call(method, request)
        except ConnectionProblem:  # a certificate or TLS mismatch: no retry fixes it
            raise
        except TransportError as exc:
            raise refusal(exc.code, exc.message) from None

    def fetch_task(self) -> ReportTask:
        """The open task (a refusal raises :class:`DeviceRefusal`); :class:`EpsilonTooHigh` if
        it asks more ε than this device allows."""
        msg = self._call(
            "GetTask", report_pb2.GetTaskRequest(user_id=self.user_id, wire_version=WIRE_VERSION)
        )
        task = ReportTask.from_pb(msg)
        if task.epsilon > self.max_epsilon:
            raise EpsilonTooHigh(task, self.max_epsilon)
        return task

    def submit(self, task: ReportTask, report: Report) -> int:
        """Submit a report (:func:`make_report`'s message); returns the task's report count.
        A refusal raises :class:`DeviceRefusal` (:class:`AlreadyReported`: this user has
        reported in this run)."""
        if task.epsilon > self.max_epsilon:
            raise EpsilonTooHigh(task, self.max_epsilon)
        resp = self._call(
            "SubmitReport",
            report_pb2.SubmitReportRequest(
                user_id=self.user_id,
                run_id=task.run_id,
                task_id=task.task_id,
                **_report_fields(report),
            ),
        )
        return int(resp.reports_in_task)

    def submit_batch(
        self, task: ReportTask, reports: list[tuple[str, Report]]
    ) -> tuple[int, list[tuple[int, str, str]]]:
        """Submit many users' reports ``(credential, report)`` for ``task`` in one call (a
        relay); returns the accepted count and the refused entries (index, status, reason)."""
        resp = self._call(
            "SubmitReportBatch",
            report_pb2.ReportBatch(
                run_id=task.run_id,
                task_id=task.task_id,
                reports=[
                    report_pb2.UserReport(credential=c, **_report_fields(r)) for c, r in reports
                ],
            ),
        )
        return int(resp.accepted), [(int(r.index), r.code, r.message) for r in resp.refused]

    def status(self, run_id: str = "") -> Any:
        return self._call("GetReportStatus", report_pb2.ReportStatusRequest(run_id=run_id))

    def report(
        self,
        item: object,
        rng: np.random.Generator | None = None,
        *,
        wait: float = 30.0,
    ) -> SubmitOutcome:
        """Fetch the open task, make the report on this device and submit it once. While no
        task is open (or the fetched one closes before the submit) retry for up to ``wait``
        seconds, and so while the endpoint is unavailable (a shard of it restarting, a report
        of this user still being stored). A task asked again gets the report already made for
        it, never a new perturbation (if it was stored meanwhile, it is refused as already
        reported). A task over this device's ε limit is not answered ("epsilon-too-high"); a
        credential the endpoint refuses gives "bad-credential"; any other refusal raises its
        :class:`DeviceRefusal`."""
        end = time.monotonic() + wait
        delay = 0.05
        made: dict[tuple[str, int], Report] = {}
        while True:
            try:
                task = self.fetch_task()
                key = (task.run_id, task.task_id)
                if key not in made:
                    made[key] = make_report(task, item, rng)
                self.submit(task, made[key])
                return SubmitOutcome(True, "accepted", task.run_id, task.task_id)
            except EpsilonTooHigh as exc:
                return SubmitOutcome(False, "epsilon-too-high", exc.task.run_id, exc.task.task_id)
            except AlreadyReported:
                return SubmitOutcome(False, "already-reported")
            except BadCredential:
                return SubmitOutcome(False, "bad-credential")
            except (NoOpenTask, TaskClosed):
                pass
            except EndpointUnavailable as exc:  # down, restarting or busy: ask again
                if time.monotonic() + delay > end:
                    raise exc from None
            if time.monotonic() + delay > end:
                return SubmitOutcome(False, "no-task")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
