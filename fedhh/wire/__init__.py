"""The wire layer: generated gRPC code of ``protos/fedhh/v1`` (in :mod:`fedhh.wire.v1`), the
converters between protocol dataclasses and proto messages (:mod:`fedhh.wire.convert`) and the
transport security shared by the coordinator and the party agent (:mod:`fedhh.wire.security`).
"""
