"""Reports from real user devices: the :class:`~fedhh.protocol.party.ReportSource` through
which the protocol's :class:`~fedhh.protocol.Party` gets its users' reports, and what the
party agent's report endpoint (:mod:`fedhh.clients.endpoint`) hands them to.

A party whose users report from their devices is the same :class:`~fedhh.protocol.Party` as
any other: it picks each level's user group from its ledger and estimates with the shared
:func:`~fedhh.mechanisms.local.estimate_reports`. Only the reports come from elsewhere:

* when an estimate request (PEM-Global levels, TAP/TAPS Phase I, the TAPS completion round)
  needs a group's reports, :class:`DeviceSource` opens a *report task* (run, prefix length,
  oracle and its parameters, candidates for GRR/OUE) with the group's size as its quota.
  Devices fetch it, perturb their own item (:mod:`fedhh.clients.reporter`) and submit one
  report each. The task closes when its quota is reached or, with at least one report, when
  ``collect_seconds`` have passed since it opened; until then the party answers None and the
  agent asks again. A run that ends, fails or drops this party closes its task for good
  (:meth:`DeviceSource.close_run`): later reports get FAILED_PRECONDITION.
* Local searches (PEM-Local, TAP/TAPS Phase II) need the users' items inside the party: a device
  party answers them with an error, and the coordinator's policy goes on without it.

Who reports: every call carries a user's credential (:mod:`fedhh.clients.credentials`); a
report counts for that user only, once per run. Which users reported in a run is kept in memory
(one bit per enrolled user) and in the agent's SQLite file, keyed by (run, user), so a second
report is refused with ALREADY_EXISTS, also across agent restarts. Reports are written by the
store's group commit and acknowledged only once durable; the endpoint takes single reports and
batches (``SubmitReportBatch``), both checked by :class:`~fedhh.clients.ingest.ReportChecker`.

What a party keeps of a task's reports is their :class:`~fedhh.oracles.Tally` over the task's
candidates (the oracle's mergeable state: support counts, or the seed pool's count matrix). A
thread folds the stored reports into it while the task collects, :data:`FOLD_ROWS` at a time,
the tally written with the last report it covers; the close folds what is left and decodes. So
the agent's memory and the close of a level grow with the candidates, not with the users (the
state file keeps every report as it came, about 60 bytes each), and the estimate is exactly that
of all the reports decoded at once. Every oracle folds this way: each one's state over fixed
candidates is a sum over its reports, so none needs its raw reports at the close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from fedhh.clients import gate as gt
from fedhh.clients.credentials import Credentials
from fedhh.clients.ingest import ReportChecker, check_single_report
from fedhh.clients.reporter import ReportTask
from fedhh.clients.store import AgentStore, GroupCommit
from fedhh.core import codes as cd
from fedhh.errors import ParameterError, StorageError
from fedhh.oracles import FrequencyOracle, Tally
from fedhh.protocol import codec_from_name
from fedhh.protocol.party import Group
from fedhh.wire.rpc import Refused

if TYPE_CHECKING:
    from fedhh.ops.metrics import ServiceMetrics

log = logging.getLogger("fedhh.party.devices")
MAX_BATCH = 10_000
FOLD_ROWS = 16384  # reports folded into a task's tally at a time (the memory reports may take)
Code = grpc.StatusCode


def may_close(count: int, quota: int, opened: float, collect_seconds: float) -> bool:
    """Whether a report task that opened at ``opened`` (monotonic) with ``count`` of its
    ``quota`` reports may close: its quota is reached, or it has at least one report and has
    collected for ``collect_seconds``."""
    return count >= quota or bool(count and time.monotonic() - opened >= collect_seconds)


@dataclass(eq=False)
class OpenTask:
    key: tuple[str, int]  # (run, request)
    task: ReportTask
    oracle: FrequencyOracle
    candidates: np.ndarray
    quota: int
    opened: float
    count: int  # accepted reports, including those still being written
    checker: ReportChecker
    writing: int = 0  # submissions whose reports are being written
    closing: bool = False
    unfolded: int = 0  # reports stored since the task's tally was last folded
    messages: dict[int, Any] = field(default_factory=dict)  # the task's message by wire version


class DeviceSource:
    """The reports of a party's users, collected from their devices (one task at a time).
    ``fold_every``: fold the open task's stored reports into its tally each time this many have
    come (None: only when it closes)."""

    def __init__(
        self,
        credentials: Credentials,
        codec: str,
        store: AgentStore,
        collect_seconds: float,
        commit: GroupCommit | None = None,
        fold_every: int | None = FOLD_ROWS,
        gate: gt.ShardGate | None = None,
        shard: int = 0,
    ) -> None:
        self.credentials = credentials
        self.n_users = credentials.n_users
        self.codec = codec
        self.m = codec_from_name(codec).m
        self.store = store
        self.commit = commit or GroupCommit(store)
        self.collect_seconds = collect_seconds
        self.fold_every = fold_every
        self.gate, self.shard = gate, shard  # one of several ingestion shards (clients/shards.py)
        lock = threading.Lock()
        self.cond = threading.Condition(lock)  # a submission's reports are written
        self.ready = threading.Condition(lock)  # the open task may close: wakes the agent
        self.open: OpenTask | None = None
        self._reported: dict[str, np.ndarray] = {}
        self.closed: set[str] = set()
        self.metrics: ServiceMetrics | None = None  # counts the endpoint's reports when set
        self._folding = threading.Lock()  # one fold of a task's reports at a time
        self._fold_wanted = threading.Event()
        self._warm: set[type] = set()  # oracles whose decode this process has run
        self._stopping = False
        self._folder = threading.Thread(target=self._fold_open, name="fold", daemon=True)
        self._folder.start()

    def close(self) -> None:
        """Stop folding and writing (the agent is shutting down)."""
        self._stopping = True
        self._fold_wanted.set()
        self._folder.join()
        self.commit.close()

    # --- party side ----------------------------------------------------------------------------
    def reports(self, group: Group, rng: np.random.Generator) -> Tally | None:
        """The tally of the group's reports once its task has closed; None while it is
        collecting."""
        key = (group.request.run_id, group.request.request_id)
        with self.cond:
            cur = self.open
            if cur is not None and cur.key == key:
                if not may_close(cur.count, cur.quota, cur.opened, self.collect_seconds):
                    return None
                self._close(cur)
                log.info("run %s: report task %d closed with %d reports", *key, cur.count)
                return self._stored(key, cur.oracle, cur.candidates, cur.checker)
            cand = cd.oracle_keys(group.candidates, group.length)  # what devices index and hash
            if self.store.reply_for(*key) is not None:  # answered before: a replay
                return self._stored(key, group.oracle, cand)
            self._open(key, group.oracle, group.length, cand, max(int(group.users.size), 1))
            return None

    def open_task(
        self,
        key: tuple[str, int],
        oracle: FrequencyOracle,
        length: int,
        cand: np.ndarray,
        quota: int,
    ) -> None:
        """Collect for ``key`` (a shard, told by its agent; the gate says when it may take
        reports). Opening the open task again changes nothing."""
        with self.cond:
            if self.open is not None and self.open.key == key:  # (close_run closes a run's task)
                return
            self._open(key, oracle, length, cand, quota)

    def task_tally(
        self, key: tuple[str, int], oracle: FrequencyOracle, cand: np.ndarray
    ) -> Tally | None:
        """Stop collecting for ``key`` if it is open, and the tally of all its stored reports
        (None: none); asked again, the same tally."""
        with self.cond:
            cur = self.open
            checker = None
            if cur is not None and cur.key == key:
                self._close(cur)
                checker = cur.checker
        return self._stored(key, oracle, cand, checker)

    def wait(self, timeout: float) -> None:
        """Until the open task may close (its quota reached), at most ``timeout`` seconds."""
        with self.ready:
            self.ready.wait(timeout)

    def close_run(self, run_id: str) -> np.ndarray:
        """The run is over for this party: close its task, refuse its reports from now on.
        Returns the users who reported in it."""
        with self.cond:
            self.closed.add(run_id)
            cur = self.open
            if cur is not None and cur.key[0] == run_id:
                self._close(cur)
                log.info("run %s: report task %d closed (the run ended)", *cur.key)
            if self.gate is not None:  # this shard's users: the agent joins the shards'
                return self.store.reported_ids(run_id)
            users = np.flatnonzero(self._bitmap(run_id))
            self._reported.pop(run_id, None)
            return users

    def open_runs(self) -> list[str]:
        with self.cond:
            return [self.open.key[0]] if self.open is not None else []

    def _close(self, cur: OpenTask) -> None:
        """Stop taking reports for ``cur`` and wait for those being written (lock held)."""
        cur.closing = True
        while cur.writing:
            self.cond.wait()
        if self.open is cur:
            self.open = None
        self.ready.notify_all()

    def _open(
        self,
        key: tuple[str, int],
        oracle: FrequencyOracle,
        length: int,
        cand: np.ndarray,
        quota: int,
    ) -> None:
        """Collect for ``key`` from now on, after closing the open task (lock held); a run that
        has ended for this party opens nothing."""
        if key[0] in self.closed:
            raise ParameterError(f"run {key[0]} has ended for this party")
        if self.open is not None:
            self._close(self.open)
        task = ReportTask.for_oracle(*key, self.m, length, self.codec, oracle, cand)
        count = self.store.count_reports(*key)
        checker = ReportChecker(oracle, task.candidates if task.candidates.size else cand)
        self.open = OpenTask(key, task, oracle, cand, quota, time.monotonic(), count, checker)
        self._fold_wanted.set()  # the folding thread readies the decode while devices report
        log.info(
            "run %s: report task %d open (length %d, %s, %d candidates, quota %d)",
            *key,
            length,
            oracle.name,
            cand.size,
            quota,
        )

    def _stored(
        self,
        key: tuple[str, int],
        oracle: FrequencyOracle,
        candidates: np.ndarray,
        checker: ReportChecker | None = None,
    ) -> Tally | None:
        """The task's tally of all its stored reports (None: it has none)."""
        self._fold(key, oracle, candidates, checker)
        blob = self.store.tally(*key)
        return Tally.from_bytes(blob) if blob is not None else None

    def _fold(
        self,
        key: tuple[str, int],
        oracle: FrequencyOracle,
        candidates: np.ndarray,
        checker: ReportChecker | None = None,
    ) -> None:
        """Fold the task's stored reports into its tally, :data:`FOLD_ROWS` at a time; the
        tally and the last report it covers are written together, so a crash at any point
        loses nothing and counts nothing twice."""
        with self._folding:
            checker = checker or ReportChecker(oracle, candidates)
            blob = self.store.tally(*key)  # only this lock's holder writes it
            total = Tally.from_bytes(blob) if blob is not None else None
            while True:
                rowids, blobs = self.store.unfolded_reports(*key, FOLD_ROWS)
                if not rowids:
                    return
                block = oracle.tally(checker.parse(blobs), candidates)
                total = block if total is None else total + block
                self.store.fold(*key, total.to_bytes(), rowids[-1])

    def _fold_open(self) -> None:
        """The folding thread: folds the open task's reports while it collects, once
        ``fold_every`` have come since the last fold (so its close folds about that many)."""
        while True:
            self._fold_wanted.wait()
            self._fold_wanted.clear()
            if self._stopping:
                return
            with self.cond:
                cur = self.open
                if cur is None:
                    continue
                fold = bool(self.fold_every) and cur.unfolded >= (self.fold_every or 0)
                if fold:
                    cur.unfolded = 0
            if type(cur.oracle) not in self._warm:  # the decode's compiled code, loaded once
                self._warm.add(type(cur.oracle))
                one = cur.oracle.tally(cur.checker.template, cur.candidates)
                if self.gate is None:  # (a shard folds; its agent decodes)
                    cur.oracle.tally_support(one, cur.candidates)
            if not fold:
                continue
            try:
                self._fold(cur.key, cur.oracle, cur.candidates, cur.checker)
            except StorageError as exc:  # folded at the close, or by the next try
                log.warning("run %s: folding task %d's reports failed: %s", *cur.key, exc)

    def _bitmap(self, run_id: str) -> np.ndarray:
        """Who reported in the run (lock held; loaded from the store once)."""
        bits = self._reported.get(run_id)
        if bits is None:
            bits = np.zeros(self.n_users, dtype=bool)
            for u in self.store.reported_users(run_id):
                if u.isdigit() and int(u) < self.n_users:
                    bits[int(u)] = True
            self._reported[run_id] = bits
        return bits

    def _count(self, cur: OpenTask) -> int:
        """The task's accepted reports (of every shard, with a gate)."""
        return self.gate.count() if self.gate is not None else cur.count

    def _taking(self, cur: OpenTask) -> bool:
        """The task takes reports (not closing, not full, and open in the gate)."""
        if cur.closing or self._count(cur) >= cur.quota:
            return False
        return self.gate is None or self.gate.task() == (*cur.key, cur.quota, True)

    def _has_reported(self, run_id: str, user: int) -> bool:
        if self.gate is not None and self.gate.run_count(run_id) is not None:
            return bool(self.gate.state(np.array([user]))[0] == gt.DONE)
        bits = self._reported.get(run_id)
        if bits is not None:
            return bool(bits[user])
        return self.store.has_reported(run_id, str(user))

    # --- device side ---------------------------------------------------------------------------
    def task_message(self, user: int, wire_version: int) -> Any:
        """The open task's message for ``user``'s client of ``wire_version`` (made once per
        task and version: every device of a task gets the same message)."""
        task = self.current_task(user)
        with self.cond:
            cur = self.open
            if cur is None or cur.task is not task:  # it closed meanwhile: a message of it
                return task.to_pb(wire_version)
            msg = cur.messages.get(wire_version)
            if msg is None:
                msg = cur.messages[wire_version] = task.to_pb(wire_version)
            return msg

    def current_task(self, user: int) -> ReportTask:
        with self.cond:
            cur = self.open
            if cur is None or not self._taking(cur):
                raise Refused(Code.NOT_FOUND, "no report task is open")
            if self.gate is not None:
                reported = self._has_reported(cur.key[0], user)
            else:
                reported = bool(self._bitmap(cur.key[0])[user])
            if reported:
                raise Refused(
                    Code.ALREADY_EXISTS, f"user {user} has already reported in run {cur.key[0]}"
                )
            return cur.task

    def _task_for(self, run_id: str, task_id: int) -> OpenTask:
        cur = self.open
        if run_id in self.closed:
            raise Refused(Code.FAILED_PRECONDITION, f"run {run_id} has ended; it takes no reports")
        if cur is None or cur.key != (run_id, task_id) or cur.closing:
            raise Refused(
                Code.FAILED_PRECONDITION,
                f"task {task_id} of run {run_id} is not open; fetch the current task",
            )
        return cur

    def submit(
        self,
        entries: Sequence[tuple[int, bytes | Any]],
        run_id: str,
        task_id: int,
        single: bool = False,
    ) -> tuple[list[tuple[int, Refused]], int]:
        """Take reports ``(user, report)`` (a ``Report`` message, or a wire-version-1 frame) for
        task ``task_id`` of ``run_id``; returns the
        refused entries (index, refusal) and the task's report count. Accepted reports are
        durable when this returns. A task that is not open refuses the whole call (a
        ``single`` report of a user who has reported in the run: ALREADY_EXISTS)."""
        with self.cond:
            try:
                cur = self._task_for(run_id, task_id)
            except Refused:
                if single and self._has_reported(run_id, entries[0][0]):
                    why = f"user {entries[0][0]} has already reported in run {run_id}"
                    raise Refused(Code.ALREADY_EXISTS, why) from None
                raise
        frames, problems = cur.checker.frames([r for _, r in entries])
        slot = -1
        with self.cond:
            if self.open is not cur or cur.closing:
                raise Refused(Code.FAILED_PRECONDITION, f"task {task_id} closed; fetch the next")
            if self.gate is not None:
                out, rows, slot = self.gate.admit_entries(
                    self.shard, *cur.key, entries, frames, problems
                )
            else:
                out, rows = self._admit(cur, entries, frames, problems)
            if not rows:
                return out, self._count(cur)
            cur.writing += 1
        try:
            self.commit.write(rows)
        except StorageError as exc:
            with self.cond:
                if self.gate is not None:
                    self.gate.settle(self.shard, slot, stored=False)
                else:
                    bits = self._bitmap(run_id)
                    for row in rows:
                        bits[int(row[1])] = False
                    cur.count -= len(rows)
                cur.writing -= 1
                self.cond.notify_all()
            raise Refused(Code.UNAVAILABLE, str(exc)) from None
        if self.gate is not None:  # durable: done for every shard (before the task can close)
            self.gate.settle(self.shard, slot, stored=True)
        with self.cond:
            cur.writing -= 1
            count = self._count(cur)
            cur.unfolded += len(rows)
            if self.fold_every and cur.unfolded >= self.fold_every:
                self._fold_wanted.set()
            if not cur.writing:
                self.cond.notify_all()
            if count >= cur.quota:
                self.ready.notify_all()
        return out, count

    def _admit(
        self,
        cur: OpenTask,
        entries: Sequence[tuple[int, bytes | Any]],
        frames: list[bytes],
        problems: list[str | None],
    ) -> tuple[list[tuple[int, Refused]], list[tuple[str, str, int, bytes]]]:
        """The refused entries and the rows to write of those taken (one process; lock held)."""
        run_id, task_id = cur.key
        out: list[tuple[int, Refused]] = []
        rows = []
        bits = self._bitmap(run_id)
        for i, ((user, _), data, problem) in enumerate(zip(entries, frames, problems, strict=True)):
            if problem is not None:
                out.append((i, Refused(Code.INVALID_ARGUMENT, problem)))
            elif bits[user]:
                why = f"user {user} has already reported in run {run_id}"
                out.append((i, Refused(Code.ALREADY_EXISTS, why)))
            elif cur.count >= cur.quota:
                why = f"task {task_id} is full; fetch the next task"
                out.append((i, Refused(Code.FAILED_PRECONDITION, why)))
            else:
                bits[user] = True
                cur.count += 1
                rows.append((run_id, str(user), task_id, data))
        return out, rows

    def status(self, run_id: str, user: int) -> tuple[int, str, int, int]:
        """(open task, its run, its reports, reports in ``run_id`` or the open run) for
        ``user``'s device, which may ask only of the open run or of one it reported in."""
        with self.cond:
            cur = self.open
            info = (cur.key[1], cur.key[0], self._count(cur)) if cur else (-1, "", 0)
            run = run_id or info[1]
            if run and run != info[1] and not self._has_reported(run, user):
                raise Refused(
                    Code.PERMISSION_DENIED,
                    f"user {user} has no report in run {run[:64]!r} and it is not open",
                )
        shared = self.gate.run_count(run) if self.gate is not None and run else None
        accepted = shared if shared is not None else (self.store.count_reports(run) if run else 0)
        return (*info, accepted)


__all__ = ["DeviceSource", "check_single_report"]
