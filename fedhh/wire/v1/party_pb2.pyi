from fedhh.wire.v1 import protocol_pb2 as _protocol_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("party_id", "n_users", "codec", "agent", "source", "budget")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    N_USERS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    n_users: int
    codec: str
    agent: str
    source: str
    budget: _protocol_pb2.PrivacyBudget
    def __init__(self, party_id: _Optional[str] = ..., n_users: _Optional[int] = ..., codec: _Optional[str] = ..., agent: _Optional[str] = ..., source: _Optional[str] = ..., budget: _Optional[_Union[_protocol_pb2.PrivacyBudget, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("party_id", "poll_seconds", "heartbeat_seconds")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    POLL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    poll_seconds: float
    heartbeat_seconds: float
    def __init__(self, party_id: _Optional[str] = ..., poll_seconds: _Optional[float] = ..., heartbeat_seconds: _Optional[float] = ...) -> None: ...

class PollRequest(_message.Message):
    __slots__ = ("party_id", "wait_seconds", "open_runs", "holding")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OPEN_RUNS_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    wait_seconds: float
    open_runs: _containers.RepeatedScalarFieldContainer[str]
    holding: _containers.RepeatedCompositeFieldContainer[RequestRef]
    def __init__(self, party_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ..., open_runs: _Optional[_Iterable[str]] = ..., holding: _Optional[_Iterable[_Union[RequestRef, _Mapping]]] = ...) -> None: ...

class RequestRef(_message.Message):
    __slots__ = ("run_id", "request_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_id: int
    def __init__(self, run_id: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class PollResponse(_message.Message):
    __slots__ = ("spec", "request", "finished_runs", "deadline_seconds")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    FINISHED_RUNS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    spec: _protocol_pb2.RunSpec
    request: _protocol_pb2.Request
    finished_runs: _containers.RepeatedScalarFieldContainer[str]
    deadline_seconds: float
    def __init__(self, spec: _Optional[_Union[_protocol_pb2.RunSpec, _Mapping]] = ..., request: _Optional[_Union[_protocol_pb2.Request, _Mapping]] = ..., finished_runs: _Optional[_Iterable[str]] = ..., deadline_seconds: _Optional[float] = ...) -> None: ...

class SubmitReplyResponse(_message.Message):
    __slots__ = ("accepted", "run_state")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RUN_STATE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    run_state: str
    def __init__(self, accepted: _Optional[bool] = ..., run_state: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("party_id", "budget")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    budget: _protocol_pb2.PrivacyBudget
    def __init__(self, party_id: _Optional[str] = ..., budget: _Optional[_Union[_protocol_pb2.PrivacyBudget, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("server_time",)
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    server_time: float
    def __init__(self, server_time: _Optional[float] = ...) -> None: ...
