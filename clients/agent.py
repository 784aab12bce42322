"""The party agent (``fedhh party serve``): connects out to the coordinator, answers its requests
for one party and keeps its state in its own SQLite file.

Sources of the party's reports:

* ``data``: a file of the party's items (one per line); the protocol's
  :class:`~fedhh.protocol.Party` perturbs them (the same result as ``fedhh simulate`` for the
  same data and seed).
* ``devices``: the same party, with its users' reports from their devices
  (:mod:`fedhh.clients.devices`).

Robustness: the agent answers through a :class:`~fedhh.protocol.host.PartyHost` that stores
every answer (run spec, request, reply) in :class:`~fedhh.clients.store.AgentStore` before it is
sent: a re-delivered request gets the stored reply, and after a restart the party is rebuilt
by replaying them, so no user reports twice.

Connection lifecycle: each connection is one channel, one registration and one
:class:`Heartbeat` bound to that channel; the heartbeat is stopped (its call in flight
cancelled, its thread joined) before the channel is closed, so no thread ever calls a closed
channel. A lost connection is retried with exponential backoff and jitter, whatever went wrong;
only a coordinator that refuses this party's token ends the agent.

Before any work on a run (its first request) the agent checks it against its
:class:`~fedhh.protocol.limits.Limits` and admits it to its privacy ledger
(:mod:`fedhh.clients.budget`); a run over either is refused with an error reply. A request whose
deadline (sent with it) passes is stopped between levels. Runs the coordinator reports as over
for this party close their device tasks and settle their ε.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from fedhh.clients.budget import PrivacyLedger
from fedhh.clients.devices import DeviceSource
from fedhh.errors import (
    DeadlinePassed,
    FedHHError,
    ProtocolError,
    StorageError,
)
from fedhh.protocol import limits
from fedhh.protocol.admission import PartyAdmission
from fedhh.protocol.encoding import decode_request, decode_spec
from fedhh.protocol.host import PartyHost
from fedhh.wire.security import connection_problem, open_channel
from fedhh.wire.v1 import party_pb2, party_pb2_grpc, protocol_pb2

log = logging.getLogger("fedhh.party")
AGENT = "fedhh-party/2"
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
MAX_BACKOFF = 10.0
STORAGE_RETRY = 2.0  # seconds between tries of a request whose answer the state file refused


def _no_wait(seconds: float) -> None:
    return None


class Heartbeat:
    """Liveness calls on one connection's channel, every ``interval`` seconds, until stopped.
    :meth:`stop` cancels a call in flight and joins the thread: call it before closing the
    channel."""

    def __init__(self, stub: Any, request: Callable[[], Any], interval: float) -> None:
        self.stub, self.request, self.interval = stub, request, max(0.05, interval)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self.beats = 0
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                call = self._call = self.stub.Heartbeat.future(
                    self.request(), timeout=min(10.0, 2 * self.interval + 1)
                )
            try:
                call.result()
                self.beats += 1
            except grpc.FutureCancelledError:
                return
            except grpc.RpcError as exc:  # the poll loop notices a lost connection
                log.debug("heartbeat failed: %s", exc.code().name)
            finally:
                with self._lock:
                    self._call = None

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self._call is not None:
                self._call.cancel()
        if self.thread.is_alive():
            self.thread.join()


@dataclass
class Held:
    """A request the agent holds while its device group collects: its bytes as they came, its
    deadline (monotonic clock) and, once decoded, its spec and request."""

    spec: bytes
    request: bytes
    deadline: float | None
    decoded: Any = None


@dataclass(kw_only=True)
class PartyAgent:
    """The connection loop of one party agent."""

    party_id: str
    coordinator: str
    token: str
    host: PartyHost
    source_kind: str  # "data" or "devices"
    n_users: int
    codec: str
    ledger: PrivacyLedger
    limits: limits.Limits = field(default_factory=limits.Limits)
    devices: DeviceSource | None = None
    ca_cert: Path | None = None
    insecure: bool = False
    poll_seconds: float = 5.0
    stop_after: int | None = None  # fault drill: exit abruptly after this many replies
    wait: Callable[[float], None] = _no_wait  # while the party's reports come in
    answered: int = 0
    connections: int = 0
    heartbeat: Heartbeat | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    held: dict[tuple[str, int], Held] = field(default_factory=dict)  # waiting for reports
    _storage_said: str = ""  # the last refused write, as logged (said once, until it passes)

    def __post_init__(self) -> None:
        if self.host.admission is None:  # the agent's limits and ledger admit its runs
            self.host.admission = PartyAdmission(self.limits, self.ledger, self.ledger.max_central)

    def run(self) -> int:
        """Serve until stopped (0), or until a failure no retry can fix (1: the coordinator
        refused this party's token, or its certificate is not trusted)."""
        backoff = 0.2
        said = ""  # the last reason a connection was lost, as logged
        while not self.stop.is_set():
            channel = open_channel(
                self.coordinator, token=self.token, ca_cert=self.ca_cert, insecure=self.insecure
            )
            try:
                stub = party_pb2_grpc.PartyServiceStub(channel)
                resp = stub.Register(self._registration(), timeout=10)
                self.connections += 1
                log.info("registered with %s as %s", self.coordinator, self.party_id)
                said = ""
                backoff = 0.2
                self.heartbeat = Heartbeat(stub, self._beat, resp.heartbeat_seconds or 10.0)
                self.heartbeat.start()
                self._loop(stub)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in FATAL:
                    log.error("coordinator refused this party: %s %s", code.name, exc.details())
                    return 1
                problem = code == grpc.StatusCode.UNAVAILABLE and connection_problem(
                    self.coordinator,
                    exc.details() or "",
                    ca_cert=self.ca_cert,
                    insecure=self.insecure,
                )
                if problem:  # a certificate, or TLS on one side only: no retry can fix it
                    log.error("cannot connect to %s: %s", self.coordinator, problem)
                    return 1
                why = f"{code.name}: {exc.details()}"
            except Exception as exc:  # never let a reconnect loop die
                log.exception("agent loop failed")
                why = f"{type(exc).__name__}: {exc}"
            else:
                why = ""
            finally:
                if self.heartbeat is not None:
                    self.heartbeat.stop()  # before the channel it uses closes
                    self.heartbeat = None
                channel.close()
            if self.stop.is_set():
                break
            delay = backoff * (1 + random.random() / 2)
            level = logging.DEBUG if why == said else logging.WARNING  # a new reason: say it once
            log.log(
                level,
                "connection to %s lost (%s); retrying (every ≤ %.0f s)",
                self.coordinator,
                why,
                MAX_BACKOFF * 1.5,
            )
            said = why
            self.stop.wait(delay)
            backoff = min(backoff * 2, MAX_BACKOFF)
        return 0

    def _budget(self) -> Any:
        return protocol_pb2.PrivacyBudget(**self.ledger.state())

    def _registration(self) -> Any:
        return party_pb2.RegisterRequest(
            party_id=self.party_id,
            n_users=self.n_users,
            codec=self.codec,
            agent=AGENT,
            source=self.source_kind,
            budget=self._budget(),
        )

    def _beat(self) -> Any:
        return party_pb2.HeartbeatRequest(party_id=self.party_id, budget=self._budget())

    def _open_runs(self) -> list[str]:
        runs = set(self.ledger.open_runs()) | set(self.host.parties) | self.host.admitted
        if self.devices is not None:
            runs |= set(self.devices.open_runs())
        return sorted(runs)

    def _loop(self, stub: Any) -> None:
        while not self.stop.is_set():
            self._retry_held(stub)
            resp = stub.Poll(
                party_pb2.PollRequest(
                    party_id=self.party_id,
                    wait_seconds=0.0 if self.held else self.poll_seconds,
                    open_runs=self._open_runs(),
                    holding=[party_pb2.RequestRef(run_id=r, request_id=i) for r, i in self.held],
                ),
                timeout=self.poll_seconds + 30,
            )
            for run_id in resp.finished_runs:
                self.finish(run_id)
            key = (resp.request.run_id, resp.request.request_id)
            if not resp.HasField("request") or key in self.held:  # (an older coordinator
                if self.held:  # sends a held request again) wait for the devices' reports
                    self.wait(0.5)
                continue
            left = resp.deadline_seconds
            held = Held(
                resp.spec.SerializeToString(deterministic=True),
                resp.request.SerializeToString(deterministic=True),
                time.monotonic() + left if left > 0 else None,
            )
            try:
                held.decoded = decode_spec(held.spec), decode_request(held.request)
            except ProtocolError as exc:
                log.error("undecodable request from the coordinator: %s", exc)
                self.stop.wait(1.0)
                continue
            data = self.answer(held.spec, held.request, held.deadline, held.decoded)
            if data is None:  # a device group is still collecting reports (or too late)
                self.held[key] = held
                continue
            self._send(stub, protocol_pb2.Reply.FromString(data))

    def _retry_held(self, stub: Any) -> None:
        """Answer the held requests whose users have reported (each decoded once, when it came).
        One past its deadline is let go: a coordinator that restarted sends it again with a
        fresh deadline, one that did not has failed this party in the run."""
        for key, held in list(self.held.items()):
            if held.deadline is not None and time.monotonic() > held.deadline:
                del self.held[key]
                continue
            data = self.answer(held.spec, held.request, held.deadline, held.decoded)
            if data is not None:
                del self.held[key]
                self._send(stub, protocol_pb2.Reply.FromString(data))

    def answer(
        self,
        spec_bytes: bytes,
        request_bytes: bytes,
        deadline: float | None,
        decoded: Any = None,
    ) -> bytes | None:
        """The reply to a request (None: not yet, or its deadline passed). The host admits the
        run at its first request and answers a re-delivered request from its log."""

        def checkpoint() -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed("the deadline of a request passed")

        try:
            reply = self.host.answer(spec_bytes, request_bytes, checkpoint, decoded)
        except DeadlinePassed as exc:
            log.warning("%s: stopped working on it", exc)
            return None
        except StorageError as exc:  # not answered: nothing half-stored, the request is retried
            if str(exc) != self._storage_said:
                log.error("%s; the request is retried every %.0f s", exc, STORAGE_RETRY)
                self._storage_said = str(exc)
            self.stop.wait(STORAGE_RETRY)
            return None
        if self._storage_said:
            log.info("the state file takes writes again")
            self._storage_said = ""
        return reply

    def finish(self, run_id: str) -> None:
        """The run is over for this party: close its report task, settle its ε, drop it."""
        for key in [k for k in self.held if k[0] == run_id]:
            del self.held[key]
        users = None
        if self.devices is not None:
            users = self.devices.close_run(run_id)
        try:
            self.ledger.settle(run_id, users)
        except FedHHError as exc:  # pragma: no cover - a storage failure; retried next poll
            log.error("run %s: cannot settle its privacy budget: %s", run_id, exc)
            return
        self.host.close(run_id)
        log.info("run %s is over for this party", run_id)

    def _send(self, stub: Any, reply: Any) -> None:
        try:
            stub.SubmitReply(reply, timeout=60)
            log.info("run %s: answered request %d", reply.run_id, reply.request_id)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.ALREADY_EXISTS:
                log.info("run %s: request %d was already answered", reply.run_id, reply.request_id)
            elif code in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):
                log.error(
                    "run %s: reply to request %d refused: %s %s",
                    reply.run_id,
                    reply.request_id,
                    code.name,
                    exc.details(),
                )
                self.stop.wait(1.0)
            else:
                raise
        self.answered += 1
        if self.stop_after is not None and self.answered >= self.stop_after:
            log.warning("fault drill: exiting abruptly after %d answered requests", self.answered)
            logging.shutdown()
            os._exit(3)
