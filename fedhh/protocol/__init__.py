"""The protocol layer: Coordinator and Party as pure state machines exchanging typed messages.

No I/O, threads or clocks: ``coordinator.step(reply) -> requests`` and
``party.handle(request) -> reply``. Every transport (in-process, gRPC, Flower) drives the very
same objects, so a run gives the same result for the same seed on each.
"""

from fedhh.protocol.coordinator import Coordinator, Progress
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
from fedhh.protocol.serde import decode, encode

__all__ = [
    "PROTOCOL_VERSION",
    "Coordinator",
    "Party",
    "Progress",
    "Reply",
    "Request",
    "RunResult",
    "RunSpec",
    "codec_from_name",
    "codec_name",
    "decode",
    "encode",
]
