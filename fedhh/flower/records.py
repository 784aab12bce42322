"""The protocol in Flower messages: the protobuf bytes of :mod:`fedhh.protocol.encoding` in a
``ConfigRecord``, one message per protocol step (docs/flower.md).

* ``query.discover``: the ServerApp asks a node which party it serves; the reply's ``fedhh``
  record holds ``party-info``, a ``fedhh.v1.PartyInfo``.
* ``query.estimate`` / ``query.search``: ``spec`` (a ``fedhh.v1.RunSpec``, on every request, so a
  ClientApp needs no set-up message) and ``request`` (a ``fedhh.v1.Request``); the reply holds
  ``reply`` (a ``fedhh.v1.Reply``).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from fedhh.errors import ProtocolError
from fedhh.mechanisms.tasks import EstimateTask
from fedhh.protocol.messages import Request

DISCOVER = "query.discover"
ESTIMATE = "query.estimate"
SEARCH = "query.search"
RECORD = "fedhh"


def message_type(request: Request) -> str:
    """The Flower message type (query action) of a request."""
    return ESTIMATE if isinstance(request.task, EstimateTask) else SEARCH


def content(**entries: bytes) -> RecordDict:
    """A message's content: the given protobuf bytes in the ``fedhh`` record."""
    return RecordDict({RECORD: ConfigRecord(dict(entries))})


def entry(message_content: RecordDict, name: str) -> bytes:
    """The bytes ``name`` of a message's ``fedhh`` record (ProtocolError if missing)."""
    rec = message_content.config_records.get(RECORD)
    value = rec.get(name) if rec is not None else None
    if not isinstance(value, bytes):
        raise ProtocolError(f"Flower message has no {name!r} bytes in its {RECORD!r} record")
    return value
