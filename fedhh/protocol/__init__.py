"""The protocol layer: Coordinator and Party as pure state machines exchanging typed messages,
the one wire encoding of those messages and the one run driver every transport uses.

No I/O, threads or clocks: ``coordinator.step(reply) -> requests`` and
``party.handle(request) -> reply``; :class:`RunDriver` buffers a round's replies, applies
deadlines and failures and replays stored runs. Every transport (in-process, gRPC, Flower) moves
the bytes of :mod:`fedhh.protocol.encoding` between the very same objects, so a run gives the
same result for the same seed on each (docs/architecture.md).
"""

from fedhh.protocol.coordinator import Coordinator, Progress
from fedhh.protocol.driver import RunDriver, RunRecord, Sent
from fedhh.protocol.messages import (
    PROTOCOL_VERSION,
    Reply,
    Request,
    RunResult,
    RunSpec,
    codec_from_name,
    codec_name,
)
from fedhh.protocol.party import Party

__all__ = [
    "PROTOCOL_VERSION",
    "Coordinator",
    "Party",
    "Progress",
    "Reply",
    "Request",
    "RunDriver",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "Sent",
    "codec_from_name",
    "codec_name",
]
