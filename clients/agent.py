"""The party agent (``fedhh party serve``): connects out to the coordinator, answers its requests
for one party and keeps its state in its own SQLite file.

Sources of the party's reports:

* ``data``: a file of the party's items (one per line); the agent perturbs them itself with the
  protocol's :class:`~fedhh.protocol.Party` (simulation-style deployments; the same result as
  ``fedhh simulate`` for the same data and seed).
* ``devices``: real user devices submit reports through the agent's report endpoint
  (:mod:`fedhh.clients.devices`).

Robustness: every answered request is stored (run spec, request, reply) before the reply is sent.
A re-delivered request gets the stored reply; after a restart the agent rebuilds a run's party
state by replaying its stored requests (the party is deterministic given them), so no user
reports twice. Lost connections are retried with exponential backoff (and jitter); the agent
re-registers after every reconnect.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from pathlib import Path
from typing import Any, Protocol

import grpc
from fedhh.clients.store import AgentStore

from fedhh.errors import FedHHError, ParameterError
from fedhh.mechanisms.tasks import Codes, ErrorResult
from fedhh.protocol import Party, Reply, Request, RunSpec
from fedhh.protocol.serde import decode, encode
from fedhh.wire import convert
from fedhh.wire.security import open_channel
from fedhh.wire.v1 import party_pb2, party_pb2_grpc

log = logging.getLogger("fedhh.party")
AGENT = "fedhh-party/1"
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class Source(Protocol):
    def handle(self, spec: RunSpec, req: Request) -> Reply | None: ...

    def wait(self, timeout: float) -> None: ...


class DataSource:
    """The party's users are the items of a data file, perturbed here by the protocol's Party."""

    def __init__(self, party_id: str, codes: Codes, store: AgentStore) -> None:
        self.party_id = party_id
        self.codes = codes
        self.store = store
        self.parties: dict[str, tuple[bytes, Party]] = {}

    def wait(self, timeout: float) -> None:  # replies are immediate
        return None

    def handle(self, spec: RunSpec, req: Request) -> Reply:
        stored = self.store.reply_for(req.run_id, req.request_id)
        if stored is not None:
            reply: Reply = decode(stored)
            return reply
        spec_bytes = encode(spec)
        try:
            party = self._party(spec, spec_bytes)
            reply = party.handle(req)
        except FedHHError as exc:
            reply = Reply(
                req.run_id, req.request_id, self.party_id, ErrorResult("failed", str(exc))
            )
        self.store.save_handled(req.run_id, req.request_id, spec_bytes, encode(req), encode(reply))
        return reply

    def _party(self, spec: RunSpec, spec_bytes: bytes) -> Party:
        known = self.parties.get(spec.run_id)
        if known is not None:
            if known[0] != spec_bytes:
                raise ParameterError(f"the spec of run {spec.run_id} changed during the run")
            return known[1]
        party = Party(spec, self.party_id, self.codes)
        history = self.store.handled(spec.run_id)
        for old_spec, old_req, old_reply in history:
            if old_spec != spec_bytes:
                raise ParameterError(f"the spec of run {spec.run_id} differs from the stored one")
            again = party.handle(decode(old_req))
            if encode(again) != old_reply:
                log.warning("run %s: replayed reply differs from the stored one", spec.run_id)
        if history:
            log.info(
                "run %s: party state rebuilt from %d stored requests", spec.run_id, len(history)
            )
        self.parties[spec.run_id] = (spec_bytes, party)
        return party


class PartyAgent:
    """The connection loop of one party agent."""

    def __init__(
        self,
        party_id: str,
        coordinator: str,
        *,
        token: str,
        source: Source,
        source_kind: str,
        n_users: int,
        codec: str,
        ca_cert: Path | None = None,
        insecure: bool = False,
        poll_seconds: float = 5.0,
        stop_after: int | None = None,
    ) -> None:
        self.party_id = party_id
        self.coordinator = coordinator
        self.token = token
        self.source = source
        self.source_kind = source_kind
        self.n_users = n_users
        self.codec = codec
        self.ca_cert = ca_cert
        self.insecure = insecure
        self.poll_seconds = poll_seconds
        self.stop_after = stop_after
        self.answered = 0
        self.stop = threading.Event()

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
                spec = convert.spec_from_pb(resp.spec)
                req = convert.request_from_pb(resp.request)
            except FedHHError as exc:
                log.error("undecodable request from the coordinator: %s", exc)
                self.stop.wait(1.0)
                continue
            reply = self.source.handle(spec, req)
            if reply is None:  # a device task is still collecting reports
                self.source.wait(0.5)
                continue
            self._send(stub, reply)

    def _send(self, stub: Any, reply: Reply) -> None:
        try:
            stub.SubmitReply(convert.reply_to_pb(reply), timeout=60)
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
