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
by replaying them, so no user reports twice. Lost connections are retried with exponential
backoff (and jitter); the agent re-registers after every reconnect.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from fedhh.errors import FedHHError
from fedhh.protocol.host import PartyHost
from fedhh.wire.security import open_channel
from fedhh.wire.v1 import party_pb2, party_pb2_grpc, protocol_pb2

log = logging.getLogger("fedhh.party")
AGENT = "fedhh-party/1"
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _no_wait(seconds: float) -> None:
    return None


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
    ca_cert: Path | None = None
    insecure: bool = False
    poll_seconds: float = 5.0
    stop_after: int | None = None  # fault drill: exit abruptly after this many replies
    wait: Callable[[float], None] = _no_wait  # while the party's reports come in
    answered: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        backoff = 0.2
        while not self.stop.is_set():
            channel = open_channel(
                self.coordinator, token=self.token, ca_cert=self.ca_cert, insecure=self.insecure
            )
            try:
                stub = party_pb2_grpc.PartyServiceStub(channel)
                stub.Register(
                    party_pb2.RegisterRequest(
                        party_id=self.party_id,
                        n_users=self.n_users,
                        codec=self.codec,
                        agent=AGENT,
                        source=self.source_kind,
                    ),
                    timeout=10,
                )
                log.info("registered with %s as %s", self.coordinator, self.party_id)
                backoff = 0.2
                self._loop(stub)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in FATAL:
                    log.error("coordinator refused this party: %s %s", code.name, exc.details())
                    return 2
                delay = backoff * (1 + random.random() / 2)
                log.warning(
                    "connection to %s lost (%s: %s); retrying in %.1f s",
                    self.coordinator,
                    code.name,
                    exc.details(),
                    delay,
                )
                self.stop.wait(delay)
                backoff = min(backoff * 2, 10.0)
            finally:
                channel.close()
        return 0

    def _loop(self, stub: Any) -> None:
        beat = threading.Thread(target=self._heartbeat, args=(stub,), daemon=True)
        beat.start()
        while not self.stop.is_set():
            resp = stub.Poll(
                party_pb2.PollRequest(party_id=self.party_id, wait_seconds=self.poll_seconds),
                timeout=self.poll_seconds + 30,
            )
            if not resp.HasField("request"):
                continue
            try:
                data = self.host.answer(
                    resp.spec.SerializeToString(deterministic=True),
                    resp.request.SerializeToString(deterministic=True),
                )
            except FedHHError as exc:
                log.error("undecodable request from the coordinator: %s", exc)
                self.stop.wait(1.0)
                continue
            if data is None:  # a device task is still collecting reports
                self.wait(0.5)
                continue
            self._send(stub, protocol_pb2.Reply.FromString(data))

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

    def _heartbeat(self, stub: Any) -> None:
        while not self.stop.wait(10.0):
            try:
                stub.Heartbeat(party_pb2.HeartbeatRequest(party_id=self.party_id), timeout=10)
            except grpc.RpcError:
                return
