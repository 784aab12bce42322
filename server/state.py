"""The coordinator service's runs: one :class:`~fedhh.protocol.RunDriver` per running run in
memory, everything else in the SQLite :class:`~fedhh.server.store.Store`.

* A run waits until every listed party has registered (their user counts make the run spec),
  then runs round by round; the driver buffers a round's replies, so the result is exactly that
  of ``fedhh simulate`` for the same data and seed.
* Every request, accepted reply and failure is stored before anything depends on it; a
  restarted coordinator replays them (:meth:`RunDriver.replay`) to the same state.
* A request not answered within the run's deadline fails its party (a watcher thread); the
  failure policy then continues without it or fails the run. A reply whose figures cannot be
  true for its party (:class:`~fedhh.errors.ImplausibleReply`) is refused and fails the party
  the same way.
* Runs are checked against the coordinator's :class:`~fedhh.protocol.limits.Limits` and the
  parties' privacy budgets (as their agents last reported them) when they are started, and again
  when they launch; a run over either is refused before any party does any work.
* Refusals are :class:`Refused` with the gRPC status the services answer with.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

import grpc

from fedhh.errors import (
    FedHHError,
    ImplausibleReply,
    ParameterError,
    ProtocolError,
    StorageError,
)
from fedhh.mechanisms.params import MechanismParams
from fedhh.ops.metrics import ServiceMetrics
from fedhh.protocol import Reply, RunDriver, RunSpec, Sent, codec_from_name, limits
from fedhh.protocol.admission import BudgetView, admit_run
from fedhh.protocol.encoding import decode_spec, encode
from fedhh.run.result import result_document
from fedhh.server.store import ACTIVE_STATES, METRIC_HELP, PartyRow, RunRow, Store
from fedhh.wire.rpc import Refused, status_of

log = logging.getLogger("fedhh.coordinator")


def failed_in(driver: RunDriver) -> set[str]:
    """The parties that failed in a run so far, in the round still open too (the driver hands
    a round's failures to the coordinator only once the round is complete)."""
    now = {driver.current[r].party_id for r, ev in driver.events.items() if isinstance(ev, str)}
    return set(driver.coord.failed) | now


class StoredRun:
    """A run's stored messages, as the driver's :class:`~fedhh.protocol.RunRecord`."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id

    def requests(self) -> Mapping[int, bytes]:
        return self.store.requests(self.run_id)

    def replies(self) -> Mapping[int, bytes]:
        return self.store.replies(self.run_id)

    def failures(self) -> Mapping[int, str]:
        return {rid: reason for rid, (_, reason) in self.store.failures(self.run_id).items()}


class CoordinatorState:
    """All runs of one coordinator."""

    def __init__(
        self,
        store: Store,
        default_deadline: float,
        bounds: limits.Limits | None = None,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.default_deadline = default_deadline
        self.limits = bounds or limits.Limits()
        self.heartbeat_seconds = heartbeat_seconds
        self.cond = threading.Condition(threading.RLock())
        self.drivers: dict[str, RunDriver] = {}
        self.last_seen: dict[str, float] = {}  # this process: register, poll, heartbeat
        self._stop = threading.Event()
        self.metrics = ServiceMetrics()  # served with --metrics-listen (fedhh.ops.metrics)
        self.metrics.read_state(store.metric_samples, METRIC_HELP)
        with self.cond:
            self._resume()
            self._launch_waiting()
        self._watcher = threading.Thread(target=self._watch, name="deadlines", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()

    def _resume(self) -> None:
        for row in self.store.runs(("running",)):
            assert row.spec is not None
            try:
                driver, missing = RunDriver.replay(
                    decode_spec(row.spec),
                    row.policy,
                    row.deadline,
                    StoredRun(self.store, row.run_id),
                    time.monotonic(),
                    bounds=self.limits,
                )
            except FedHHError as exc:
                self._end_failed(row.run_id, f"cannot resume: {exc}", "resume-failed")
                continue
            with self.store.transaction() as db:
                self._after_step(db, row.run_id, driver, missing)
                detail = f"at round {driver.coord.round}"
                Store.audit_in(db, "coordinator", "resumed", row.run_id, detail)
            log.info("run %s resumed %s", row.run_id, detail)

    def _end_failed(self, run_id: str, error: str, action: str) -> None:
        with self.store.transaction() as db:
            Store.update_run(db, run_id, state="failed", error=error)
            Store.audit_in(db, "coordinator", action, run_id, error)
        log.warning("run %s: %s", run_id, error)

    # --- runs ----------------------------------------------------------------------------------
    def start_run(
        self,
        actor: str,
        run_id: str,
        params: MechanismParams,
        party_ids: list[str],
        policy: str,
        deadline: float,
        infer_m: bool = False,
    ) -> RunRow:
        """Store a new run (it launches once its parties have registered). ``infer_m``: the
        analyst left m out, so it is the bits of the parties' item codec (known now if one of
        them has registered, else at launch)."""
        with self.cond:
            if self.store.run_exists(run_id):
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"run {run_id!r} already exists")
            bits = self.party_bits(party_ids) if infer_m else None
            if bits is not None:
                params = dataclasses.replace(params, m=bits)
            self.check_run(params, party_ids, run_id, check_m=not infer_m or bits is not None)
            stored = params.to_dict()
            if infer_m and bits is None:
                del stored["m"]  # filled in at launch from the parties' codec
            self.store.insert_run(run_id, stored, party_ids, policy, deadline, actor)
            self._launch_waiting()
            return self.row(run_id)

    def party_bits(self, party_ids: list[str]) -> int | None:
        """The m of the item codec of the listed parties registered so far (None if none has);
        parties of different codecs raise ParameterError."""
        known = self.store.party_rows()
        codecs = sorted({known[p].codec for p in party_ids if p in known})
        if len(codecs) > 1:
            raise ParameterError(f"the parties use different item codecs: {', '.join(codecs)}")
        return codec_from_name(codecs[0]).m if codecs else None

    def check_run(
        self, params: MechanismParams, party_ids: list[str], run_id: str, check_m: bool = True
    ) -> MechanismParams:
        """Admit the run (:func:`~fedhh.protocol.admission.admit_run`) as far as the parties
        registered so far allow (all of them at launch): the limits, feasibility and the
        budgets their agents last reported; raises ParameterError/ParameterLimit/BudgetExceeded
        if it cannot run. ``check_m``: the run's m must be the parties' codec's (off while an
        inferred m is not known yet). Returns the run's parameters with the ε₀ a central
        target chose (once every party has registered; else as given)."""
        known = self.store.party_rows()
        rows = {p: known[p] for p in party_ids if p in known}
        self.party_bits(party_ids)  # one codec
        for pid, r in rows.items():
            bits = codec_from_name(r.codec).m
            if check_m and bits != params.m:
                raise ParameterError(
                    f"the run asks m = {params.m} bits but party {pid}'s items have {bits} "
                    f"({r.codec})"
                )
        admitted = admit_run(
            params,
            party_ids,
            [rows[p].n_users if p in rows else None for p in party_ids],
            self.limits,
            budgets={p: BudgetView.of(r.budget) for p, r in rows.items()},
            pending={p: self._pending(r, exclude=run_id) for p, r in rows.items()},
        )
        return dataclasses.replace(params, epsilon=admitted.epsilon)

    def _pending(self, party: PartyRow, exclude: str = "") -> float:
        """The ε of the active runs with ``party`` that its agent has not admitted yet."""
        admitted = set(party.budget.get("admitted_runs", ()))
        return sum(
            float(r.params.get("epsilon", MechanismParams().epsilon))
            for r in self.store.runs(ACTIVE_STATES)
            if party.party_id in r.party_ids and r.run_id not in admitted and r.run_id != exclude
        )

    def _remaining(self, party: PartyRow) -> float:
        """The ε left for a new run at ``party`` (inf: its agent keeps no ledger)."""
        view = BudgetView.of(party.budget)
        return float("inf") if view is None else view.left(self._pending(party))

    def _launch_waiting(self) -> None:
        parties = self.store.parties()
        for row in self.store.runs(("waiting",)):
            if all(p in parties for p in row.party_ids):
                self._launch(row, parties)

    def _launch(self, row: RunRow, parties: dict[str, tuple[int, str, str]]) -> None:
        try:
            params = MechanismParams.from_dict(row.params)
            if "m" not in row.params:  # inferred: every party has registered now
                bits = codec_from_name(parties[row.party_ids[0]][1]).m
                params = dataclasses.replace(params, m=bits)
            sizes = tuple(parties[p][0] for p in row.party_ids)
            params = self.check_run(params, row.party_ids, row.run_id)  # one codec, its m
            codec = parties[row.party_ids[0]][1]
            spec = RunSpec(row.run_id, params, tuple(row.party_ids), sizes, codec)
            driver = RunDriver(spec, row.policy, row.deadline, bounds=self.limits)
            sent = driver.start(time.monotonic())
        except FedHHError as exc:
            self._end_failed(row.run_id, str(exc), "launch-failed")
            return
        with self.store.transaction() as db:
            Store.update_run(db, row.run_id, state="running", spec=encode(spec))
            Store.audit_in(db, "coordinator", "launched", row.run_id, f"sizes {list(sizes)}")
            self._after_step(db, row.run_id, driver, sent)
        log.info("run %s started with parties %s", row.run_id, ", ".join(row.party_ids))

    def _after_step(self, db: Any, run_id: str, driver: RunDriver, new: list[Sent]) -> None:
        """Persist the requests a step made and the run's progress or end (inside ``db``)."""
        for s in new:
            Store.insert(
                db, "requests", run_id, s.request_id, s.request.round, s.party_id, s.payload
            )
        coord = driver.coord
        failed = sorted(coord.failed)
        progress: dict[str, Any] = {"round": coord.round, "failed": failed}
        if coord.result is not None:
            result = driver.outcome(time.monotonic())  # wall time since launch (or resume)
            doc = result_document(result, codec_from_name(driver.spec.codec))
            Store.update_run(
                db, run_id, state="done", result=doc, phase="done", outstanding=0, **progress
            )
            Store.audit_in(db, "coordinator", "done", run_id, f"{coord.round} rounds")
            self.drivers.pop(run_id, None)
            log.info("run %s done after %d rounds", run_id, coord.round)
        elif coord.error is not None:
            Store.update_run(db, run_id, state="failed", error=coord.error, **progress)
            Store.audit_in(db, "coordinator", "failed", run_id, coord.error)
            self.drivers.pop(run_id, None)
            log.warning("run %s failed: %s", run_id, coord.error)
        else:
            outstanding = len(driver.waiting())
            Store.update_run(
                db, run_id, phase=coord.progress.phase, outstanding=outstanding, **progress
            )
            self.drivers[run_id] = driver
        self.cond.notify_all()

    def cancel(self, actor: str, run_id: str) -> RunRow:
        with self.cond:
            row = self.row(run_id)
            if row.state not in ACTIVE_STATES:
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION, f"run {run_id} is {row.state} already"
                )
            with self.store.transaction() as db:
                Store.update_run(db, run_id, state="cancelled", error=f"cancelled by {actor}")
                Store.audit_in(db, actor, "cancel", run_id)
            self.drivers.pop(run_id, None)
            self.cond.notify_all()
            return self.row(run_id)

    def wait_change(self, timeout: float) -> None:
        """Block until a run moves (a step, a deadline, a cancel, a registration: whatever
        notifies :attr:`cond`) or ``timeout`` seconds pass."""
        with self.cond:
            if not self._stop.is_set():
                self.cond.wait(timeout)

    def row(self, run_id: str) -> RunRow:
        row = self.store.run(run_id)
        if row is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r}")
        return row

    # --- parties -------------------------------------------------------------------------------
    def register(
        self, party_id: str, n_users: int, codec: str, source: str, budget: dict[str, Any]
    ) -> None:
        with self.cond:
            self.store.register_party(party_id, n_users, codec, source, budget)
            self.last_seen[party_id] = time.time()
            self._launch_waiting()

    def heartbeat(self, party_id: str, budget: dict[str, Any]) -> None:
        self.last_seen[party_id] = time.time()
        self.store.heartbeat(party_id, budget)

    def seen(self, party_id: str) -> None:
        self.last_seen[party_id] = time.time()

    def next_request(
        self, party_id: str, wait: float, holding: Collection[tuple[str, int]] = ()
    ) -> tuple[RunSpec, Sent, float] | None:
        """The next request waiting for the party that it does not hold already (``holding``:
        (run id, request id) pairs): its run's spec, the request and the seconds left before its
        deadline."""
        end = time.monotonic() + wait
        with self.cond:
            while True:
                now = time.monotonic()
                for driver in self.drivers.values():
                    for s in driver.waiting():
                        if (
                            s.party_id == party_id
                            and (driver.spec.run_id, s.request_id) not in holding
                        ):
                            left = driver.sent_at[s.request_id] + driver.deadline - now
                            return driver.spec, s, max(left, 1e-3)
                left = end - now
                if left <= 0 or self._stop.is_set():
                    return None
                self.cond.wait(left)

    def finished_for(self, party_id: str, run_ids: list[str]) -> list[str]:
        """Of ``run_ids``, the runs over for this party (ended, unknown, or it failed in them)."""
        out = []
        with self.cond:
            for run_id in run_ids:
                driver = self.drivers.get(run_id)
                if driver is not None:
                    if party_id in failed_in(driver) or party_id not in driver.spec.party_ids:
                        out.append(run_id)
                    continue
                row = self.store.run(run_id)
                if row is None or row.state not in ACTIVE_STATES or party_id not in row.party_ids:
                    out.append(run_id)
        return out

    def party_status(self, party_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Liveness, user counts and remaining budget of the given (default: all) parties."""
        rows = self.store.party_rows()
        now = time.time()
        out = []
        for pid in party_ids if party_ids is not None else sorted(rows):
            r = rows.get(pid)
            if r is None:
                out.append({"party_id": pid, "registered": False})
                continue
            seen = self.last_seen.get(pid, r.last_seen)
            remaining = self._remaining(r)
            out.append(
                {
                    "party_id": pid,
                    "registered": True,
                    "n_users": r.n_users,
                    "source": r.source,
                    "last_seen": seen,
                    "seconds_since_seen": max(0.0, now - seen),
                    "epsilon_budget": float(r.budget.get("budget", 0.0)),
                    "max_epsilon": float(r.budget.get("max_epsilon", 0.0)),
                    "max_central_epsilon": float(r.budget.get("max_central", 0.0)),
                    "epsilon_remaining": remaining if remaining != float("inf") else 0.0,
                }
            )
        return out

    def submit(self, party_id: str, reply: Reply, payload: bytes) -> str:
        """Take a party's reply (its protobuf bytes); refusals change nothing stored."""
        with self.cond:
            driver = self.drivers.get(reply.run_id)
            if driver is None:
                row = self.row(reply.run_id)
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"run {reply.run_id} is {row.state}; it takes no replies",
                )
            rid = reply.request_id
            sent, event = driver.current.get(rid), driver.events.get(rid)
            missed = Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"request {rid} missed its deadline; the run went on without it",
            )
            answered = Refused(grpc.StatusCode.ALREADY_EXISTS, f"request {rid} is already answered")
            if sent is None:
                if not self.store.has_row("requests", reply.run_id, rid):
                    raise Refused(
                        grpc.StatusCode.NOT_FOUND,
                        f"request {rid} of run {reply.run_id} was never sent",
                    )
                failed = self.store.has_row("failures", reply.run_id, rid)
                raise missed if failed else answered
            if sent.party_id != party_id:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"request {rid} was sent to {sent.party_id}, not to {party_id}",
                )
            if event is not None:
                raise missed if isinstance(event, str) else answered
            try:
                driver.check(reply)
            except ImplausibleReply as exc:
                reason = f"reply to request {rid} refused: {exc}"
                self._fail_request(reply.run_id, driver, sent, reason, "implausible")
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{reason}; party {party_id} counts as failed"
                ) from None
            except ProtocolError as exc:  # malformed (or over a size limit): nothing changes
                raise Refused(status_of(exc), f"reply to request {rid}: {exc}") from None
            with self.store.transaction() as db:
                Store.insert(db, "replies", reply.run_id, rid, party_id, payload)
                kind = type(reply.result).__name__
                Store.audit_in(db, party_id, "reply", reply.run_id, f"request {rid}: {kind}")
            new = driver.receive(payload, time.monotonic(), reply=reply, checked=True)
            with self.store.transaction() as db:
                self._after_step(db, reply.run_id, driver, new)
            return self.row(reply.run_id).state

    # --- deadlines -----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self.cond:
                for run_id, driver in list(self.drivers.items()):
                    for s in driver.expired(time.monotonic()):
                        if self.drivers.get(run_id) is not driver or s not in driver.waiting():
                            break  # the run or its round moved on meanwhile
                        try:
                            self._expire(run_id, driver, s)
                        except StorageError as exc:  # nothing stored: the next tick tries again
                            log.error("run %s: cannot record a missed deadline: %s", run_id, exc)
                            break

    def _expire(self, run_id: str, driver: RunDriver, s: Sent) -> None:
        reason = f"no reply to request {s.request_id} within {driver.deadline:g} s"
        self._fail_request(run_id, driver, s, reason, "deadline")

    def _fail_request(
        self, run_id: str, driver: RunDriver, s: Sent, reason: str, what: str
    ) -> None:
        """The party of ``s`` fails (stored first); the policy decides what the run does."""
        with self.store.transaction() as db:
            Store.insert(db, "failures", run_id, s.request_id, s.party_id, reason)
            Store.audit_in(db, "coordinator", what, run_id, reason)
        log.warning("run %s: party %s: %s", run_id, s.party_id, reason)
        new = driver.fail(s.request_id, reason, time.monotonic())
        with self.store.transaction() as db:
            self._after_step(db, run_id, driver, new)
