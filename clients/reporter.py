"""The user SDK: what runs on a user's device.

A device fetches its party's current report task (:class:`ReportTask`: run, prefix length, oracle
and its parameters, and the candidate set for GRR/OUE as the candidates' 64-bit oracle keys),
turns its one item into an ε-LDP report with :func:`make_report` (the item is encoded, cut to the
task's prefix, keyed like the candidates — the prefix itself up to 64 bits, its
:func:`fedhh.core.codes.fingerprint` above — and perturbed on the device; only the perturbed report
leaves it) and submits it once per run. :class:`ReporterClient`
does the three steps against a party agent's report endpoint, with the user's credential (issued
by the party, ``fedhh party enroll``)::

    client = ReporterClient("party.example.org:7800", credential=cred, ca_cert=Path("ca.pem"))
    outcome = client.report("apple")   # fetch task, perturb locally, submit

The device has its own privacy limit: a task asking more than ``max_epsilon`` is refused on the
device (no report is made), whatever the party says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fedhh.core import codes as cd
from fedhh.errors import ParameterError, TransportError
from fedhh.oracles import FrequencyOracle, oracle_from
from fedhh.protocol.admission import DEFAULT_MAX_EPSILON
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

    def to_pb(self) -> Any:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return report_pb2.ReportTask(**values | {"candidates": array_to_pb(self.candidates)})

    @classmethod
    def from_pb(cls, msg: Any) -> ReportTask:
        values = {f.name: getattr(msg, f.name) for f in fields(cls)}
        cand = array_from_pb(msg.candidates, "candidates", "uint64")
        return cls(**values | {"candidates": cand})


def make_report(task: ReportTask, item: object, rng: np.random.Generator | None = None) -> bytes:
    """The ε-LDP report of a user holding ``item`` (a string or an integer, as the run's codec
    wants): encode, cut to the task's prefix, perturb. Returns ``Reports.to_bytes()`` of one
    report; the item itself never leaves this function."""
    codec = codec_from_name(task.codec)
    code = codec.encode([item])  # an item longer than the codec's width is refused here
    value = cd.oracle_keys(cd.prefix(code, task.m, task.length), task.length)
    gen = rng if rng is not None else np.random.default_rng()
    oracle = task.build_oracle()
    cand = task.candidates if oracle.needs_candidates else None
    return oracle.perturb(value, gen, cand).to_bytes()


@dataclass(frozen=True)
class SubmitOutcome:
    """What happened to a device's report."""

    accepted: bool
    status: str  # "accepted", "already-reported", "no-task", "epsilon-too-high", "bad-credential"
    run_id: str = ""
    task_id: int = -1


class EpsilonTooHigh(TransportError):
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
    if len(parts) not in (4, 6) or not parts[2].isdigit():
        raise ParameterError("not a fedhh user credential")
    return parts[2]


class ReporterClient(ServiceClient):
    """A device's client of a party agent's report endpoint, as one user (its credential, sent
    with every call; pass ``channel=`` to share one channel among many users' clients)."""

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
        super().__init__(target, token=None, **kw)

    def fetch_task(self) -> ReportTask:
        """The open task (a refusal raises :class:`TransportError`); :class:`EpsilonTooHigh` if
        it asks more ε than this device allows."""
        msg = self._call("GetTask", report_pb2.GetTaskRequest(user_id=self.user_id))
        task = ReportTask.from_pb(msg)
        if task.epsilon > self.max_epsilon:
            raise EpsilonTooHigh(task, self.max_epsilon)
        return task

    def submit(self, task: ReportTask, report: bytes) -> int:
        """Submit a report; returns the task's report count. A refusal raises
        :class:`TransportError` (ALREADY_EXISTS: this user has reported in this run)."""
        if task.epsilon > self.max_epsilon:
            raise EpsilonTooHigh(task, self.max_epsilon)
        resp = self._call(
            "SubmitReport",
            report_pb2.SubmitReportRequest(
                user_id=self.user_id, run_id=task.run_id, task_id=task.task_id, report=report
            ),
        )
        return int(resp.reports_in_task)

    def submit_batch(
        self, task: ReportTask, reports: list[tuple[str, bytes]]
    ) -> tuple[int, list[tuple[int, str, str]]]:
        """Submit many users' reports ``(credential, report)`` for ``task`` in one call (a
        relay); returns the accepted count and the refused entries (index, status, reason)."""
        resp = self._call(
            "SubmitReportBatch",
            report_pb2.ReportBatch(
                run_id=task.run_id,
                task_id=task.task_id,
                reports=[report_pb2.UserReport(credential=c, report=r) for c, r in reports],
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
        seconds. A task over this device's ε limit is not answered ("epsilon-too-high"); a
        credential the endpoint refuses gives "bad-credential"; any other refusal raises
        :class:`TransportError`."""
        end = time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                task = self.fetch_task()
                self.submit(task, make_report(task, item, rng))
                return SubmitOutcome(True, "accepted", task.run_id, task.task_id)
            except EpsilonTooHigh as exc:
                return SubmitOutcome(False, "epsilon-too-high", exc.task.run_id, exc.task.task_id)
            except TransportError as exc:
                if exc.code == "ALREADY_EXISTS":
                    return SubmitOutcome(False, "already-reported")
                if exc.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                    return SubmitOutcome(False, "bad-credential")
                if exc.code not in ("NOT_FOUND", "FAILED_PRECONDITION"):
                    raise
            if time.monotonic() + delay > end:
                return SubmitOutcome(False, "no-task")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
