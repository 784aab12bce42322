"""Serving the gRPC services of fedhh: one way to register a servicer and to map errors to
statuses, shared by the coordinator (``fedhh.server``) and the party agent (``fedhh.clients``).

* Requests reach a servicer already parsed, but by us, not by grpcio: a request that does not
  decode gets INVALID_ARGUMENT (grpcio's own deserializer would answer INTERNAL).
* A servicer refuses an input by raising :class:`Refused` (a status and a message) or a
  :class:`~fedhh.errors.FedHHError`, mapped by :func:`status_of`: a
  :class:`~fedhh.errors.LimitError` is RESOURCE_EXHAUSTED, :class:`~fedhh.errors.RunFailed`
  FAILED_PRECONDITION, any other INVALID_ARGUMENT. Anything else is a bug: logged with its
  traceback and answered INTERNAL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from fedhh.errors import FedHHError, LimitError, RunFailed, StorageError

log = logging.getLogger("fedhh.rpc")

# Server options of every fedhh service: no SO_REUSEPORT (a second server on a port in use must
# fail to start instead of sharing it).
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class Refused(Exception):
    """An input refused with a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_of(exc: FedHHError) -> grpc.StatusCode:
    if isinstance(exc, StorageError):  # the disk, not the request: retry later
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, LimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, RunFailed):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INVALID_ARGUMENT


def refused(exc: BaseException) -> Refused | None:
    """The refusal an exception of a servicer stands for (None: a bug, not a refusal)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, FedHHError):
        return Refused(status_of(exc), str(exc))
    return None


def add_servicer(server: grpc.Server, pb2: Any, service: str, servicer: Any) -> None:
    """Serve ``servicer``'s methods as the methods of ``service`` (declared in the generated
    module ``pb2``; unary requests, unary or server-streamed replies), parsing each request
    ourselves."""
    desc = pb2.DESCRIPTOR.services_by_name[service]
    handlers = {
        m.name: _handler(getattr(servicer, m.name), m, desc.full_name) for m in desc.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(desc.full_name, handlers),)
    )


def _handler(method: Callable[[Any, Any], Any], desc: Any, service: str) -> Any:
    request_cls = message_factory.GetMessageClass(desc.input_type)
    name = f"/{service}/{desc.name}"

    def call(data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = request_cls.FromString(data)
        except (DecodeError, ValueError, RecursionError) as exc:
            log.info("refused %s from %s: undecodable request (%s)", name, context.peer(), exc)
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"undecodable {desc.input_type.name}: {exc}"
            )
        return method(request, context)

    if desc.client_streaming:  # pragma: no cover - no fedhh service has one
        raise TypeError(f"{name}: client-streaming methods are not served")
    make = (
        grpc.unary_stream_rpc_method_handler
        if desc.server_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(call, request_deserializer=None, response_serializer=_serialize)


def _serialize(msg: Any) -> bytes:
    return bytes(msg.SerializeToString())


def health_follows(store: Any, servicer: Any, names: Sequence[str], what: str) -> None:
    """Keep ``servicer`` (a gRPC health servicer) at NOT_SERVING for ``names`` while ``store``
    (a :class:`~fedhh.ops.storage.Database`) refuses writes, SERVING again once one commits;
    each change logged once. (grpc_health, the ``server`` extra, is imported here, not at the
    module's import: the device SDK imports this module.)"""
    from grpc_health.v1 import health_pb2

    def on_health(ok: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for name in names:
            servicer.set(name, status.SERVING if ok else status.NOT_SERVING)
        if ok:
            log.info("%s: the state file takes writes again: SERVING", what)
        else:
            log.error("%s: the state file refuses writes: NOT_SERVING until one succeeds", what)

    store.on_health = on_health

