"""The wire layer: generated code of ``protos/fedhh/v1`` (in :mod:`fedhh.wire.v1`; the protocol's
encoding is :mod:`fedhh.protocol.encoding`), transport security shared by the coordinator and the
party agent (:mod:`fedhh.wire.security`) and the Flower record layout (:mod:`fedhh.flower.records`).
"""
