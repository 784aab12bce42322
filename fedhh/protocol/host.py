"""The party side of every deployed transport: a :class:`PartyHost` answers a party's requests
from their wire bytes and logs each answer, so a restarted host (a party agent after a crash, a
Flower ClientApp in a fresh process) rebuilds the party by replaying its log.

The party is deterministic given its requests (its random state derives from the run seed), so
the replay reproduces its user ledger: a re-delivered request gets the reply it got before, and
no user ever reports twice. The log is an interface (:class:`PartyLog`): the agent keeps it in
SQLite, the Flower ClientApp in the node's run state.

A transport may pass a ``checkpoint`` (its clock) with a request: the party calls it before each
level, and when it raises :class:`~fedhh.errors.DeadlinePassed` the host drops the run's
half-updated party (a later request rebuilds it from the log) and lets the error through; nothing
is logged. Given a :class:`~fedhh.protocol.admission.PartyAdmission`, the host admits each run
at its first request (the party's limits and privacy ledger) and checks each request against the
limits; a refused one is answered with an error before any work (:meth:`PartyHost.refuse`),
logged like any answer. A transport may refuse a request itself the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from fedhh.errors import DeadlinePassed, FedHHError, LimitError, ParameterError, StorageError
from fedhh.mechanisms.tasks import ErrorResult
from fedhh.protocol.admission import PartyAdmission, refusal_code
from fedhh.protocol.encoding import decode_request, decode_spec, encode
from fedhh.protocol.messages import Reply, Request, RunSpec
from fedhh.protocol.party import Party

log = logging.getLogger("fedhh.party")


class PartyLog(Protocol):
    """The answers a party host gave, as (spec, request, reply) bytes."""

    def reply_for(self, run_id: str, request_id: int) -> bytes | None: ...

    def handled(self, run_id: str) -> list[tuple[bytes, bytes, bytes]]:
        """Every answer of the run, in request order."""
        ...

    def save_handled(
        self, run_id: str, request_id: int, spec: bytes, request: bytes, reply: bytes
    ) -> None: ...


PartyFactory = Callable[[RunSpec], Party]


def error_reply(request: Request, message: str) -> Reply:
    """The reply of a party that cannot answer ``request``."""
    return Reply(
        request.run_id, request.request_id, request.party_id, ErrorResult("failed", message)
    )


class PartyHost:
    """One party's answers for any number of runs."""

    def __init__(
        self,
        party_id: str,
        make_party: PartyFactory,
        log: PartyLog,
        admission: PartyAdmission | None = None,
    ) -> None:
        self.party_id = party_id
        self.make_party = make_party
        self.log = log
        self.admission = admission
        self.parties: dict[str, tuple[bytes, Party]] = {}
        self.admitted: set[str] = set()  # runs admitted since this host started
        # told of every new answer and the seconds it took (a transport's metrics)
        self.observe: Callable[[Reply, float], None] | None = None

    def answer(
        self,
        spec_bytes: bytes,
        request_bytes: bytes,
        checkpoint: Callable[[], None] | None = None,
        decoded: tuple[RunSpec, Request] | None = None,
    ) -> bytes | None:
        """The reply's bytes (an error reply if the party cannot answer), or None while the
        party waits for its users' reports. Undecodable input raises ProtocolError; a
        ``checkpoint`` that raises DeadlinePassed stops the work (nothing logged). ``decoded``:
        the spec and request of these bytes, for a transport that decoded them already (a
        request it holds while its users report is decoded once)."""
        spec, request = decoded or (decode_spec(spec_bytes), decode_request(request_bytes))
        stored = self.log.reply_for(request.run_id, request.request_id)
        if stored is not None:
            return stored
        refused = self._refusal(spec, request)
        if refused is not None:
            return self.refuse(spec_bytes, request_bytes, *refused)
        started = time.perf_counter()
        try:
            party = self.party(spec, spec_bytes)
            party.checkpoint = checkpoint
            try:
                reply = party.handle(request)
            finally:
                party.checkpoint = None
        except DeadlinePassed:
            self.parties.pop(spec.run_id, None)
            raise
        except StorageError:  # the party's own disk: not the run's fault; the caller retries
            raise
        except FedHHError as exc:
            reply = error_reply(request, str(exc))
        if reply is None:
            return None
        return self._save(spec_bytes, request_bytes, reply, time.perf_counter() - started)

    def _refusal(self, spec: RunSpec, request: Request) -> tuple[str, str] | None:
        """(code, message) if the run or the request is not admitted here, else None."""
        if self.admission is None:
            return None
        try:
            if spec.run_id not in self.admitted:
                self.admission.admit(spec, self.party_id)
                self.admitted.add(spec.run_id)
            self.admission.check_request(request)
        except (LimitError, ParameterError) as exc:
            log.warning("run %s: request %d refused: %s", spec.run_id, request.request_id, exc)
            return refusal_code(exc), str(exc)
        return None

    def refuse(self, spec_bytes: bytes, request_bytes: bytes, code: str, message: str) -> bytes:
        """Answer a request with an error before any work (logged: a re-delivery gets it too)."""
        request = decode_request(request_bytes)
        stored = self.log.reply_for(request.run_id, request.request_id)
        if stored is not None:
            return stored
        reply = Reply(
            request.run_id, request.request_id, request.party_id, ErrorResult(code, message)
        )
        return self._save(spec_bytes, request_bytes, reply)

    def close(self, run_id: str) -> None:
        """Forget the run's party (the run is over for this party); its log stays."""
        self.parties.pop(run_id, None)
        self.admitted.discard(run_id)

    def _save(
        self, spec_bytes: bytes, request_bytes: bytes, reply: Reply, seconds: float = 0.0
    ) -> bytes:
        data = encode(reply)
        self.log.save_handled(reply.run_id, reply.request_id, spec_bytes, request_bytes, data)
        if self.observe is not None:
            self.observe(reply, seconds)
        return data

    def error(self, request: Request, message: str) -> Reply:
        return Reply(
            request.run_id, request.request_id, self.party_id, ErrorResult("failed", message)
        )

    def party(self, spec: RunSpec, spec_bytes: bytes) -> Party:
        """The run's party, rebuilt from the log when this host has not seen the run yet."""
        known = self.parties.get(spec.run_id)
        if known is not None:
            if known[0] != spec_bytes:
                raise ParameterError(f"the spec of run {spec.run_id} changed during the run")
            return known[1]
        party = self.make_party(spec)
        history = self.log.handled(spec.run_id)
        for old_spec, old_request, old_reply in history:
            if old_spec != spec_bytes:
                raise ParameterError(f"the spec of run {spec.run_id} differs from the stored one")
            again = party.handle(decode_request(old_request))
            if again is None or encode(again) != old_reply:
                log.warning("run %s: replayed reply differs from the stored one", spec.run_id)
        if history:
            log.info("run %s: party rebuilt from %d stored requests", spec.run_id, len(history))
        self.parties[spec.run_id] = (spec_bytes, party)
        return party
