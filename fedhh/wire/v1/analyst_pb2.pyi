from fedhh.wire.v1 import protocol_pb2 as _protocol_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRunRequest(_message.Message):
    __slots__ = ("run_id", "params", "party_ids", "policy", "deadline_seconds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARTY_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    params: _protocol_pb2.MechanismParams
    party_ids: _containers.RepeatedScalarFieldContainer[str]
    policy: str
    deadline_seconds: float
    def __init__(self, run_id: _Optional[str] = ..., params: _Optional[_Union[_protocol_pb2.MechanismParams, _Mapping]] = ..., party_ids: _Optional[_Iterable[str]] = ..., policy: _Optional[str] = ..., deadline_seconds: _Optional[float] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunRef(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "state", "mechanism", "party_ids", "round", "phase", "outstanding", "failed_parties", "error", "created", "updated", "policy", "deadline_seconds", "owner", "parties")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    PARTY_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    FAILED_PARTIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: str
    mechanism: str
    party_ids: _containers.RepeatedScalarFieldContainer[str]
    round: int
    phase: str
    outstanding: int
    failed_parties: _containers.RepeatedScalarFieldContainer[str]
    error: str
    created: float
    updated: float
    policy: str
    deadline_seconds: float
    owner: str
    parties: _containers.RepeatedCompositeFieldContainer[PartyStatus]
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[str] = ..., mechanism: _Optional[str] = ..., party_ids: _Optional[_Iterable[str]] = ..., round: _Optional[int] = ..., phase: _Optional[str] = ..., outstanding: _Optional[int] = ..., failed_parties: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., created: _Optional[float] = ..., updated: _Optional[float] = ..., policy: _Optional[str] = ..., deadline_seconds: _Optional[float] = ..., owner: _Optional[str] = ..., parties: _Optional[_Iterable[_Union[PartyStatus, _Mapping]]] = ...) -> None: ...

class PartyStatus(_message.Message):
    __slots__ = ("party_id", "registered", "n_users", "source", "last_seen", "seconds_since_seen", "epsilon_budget", "max_epsilon", "epsilon_remaining", "outstanding", "failed", "budget_hidden", "max_central_epsilon")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    N_USERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_FIELD_NUMBER: _ClassVar[int]
    EPSILON_REMAINING_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    MAX_CENTRAL_EPSILON_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    registered: bool
    n_users: int
    source: str
    last_seen: float
    seconds_since_seen: float
    epsilon_budget: float
    max_epsilon: float
    epsilon_remaining: float
    outstanding: bool
    failed: bool
    budget_hidden: bool
    max_central_epsilon: float
    def __init__(self, party_id: _Optional[str] = ..., registered: _Optional[bool] = ..., n_users: _Optional[int] = ..., source: _Optional[str] = ..., last_seen: _Optional[float] = ..., seconds_since_seen: _Optional[float] = ..., epsilon_budget: _Optional[float] = ..., max_epsilon: _Optional[float] = ..., epsilon_remaining: _Optional[float] = ..., outstanding: _Optional[bool] = ..., failed: _Optional[bool] = ..., budget_hidden: _Optional[bool] = ..., max_central_epsilon: _Optional[float] = ...) -> None: ...

class ListPartiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartiesResponse(_message.Message):
    __slots__ = ("parties",)
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    parties: _containers.RepeatedCompositeFieldContainer[PartyStatus]
    def __init__(self, parties: _Optional[_Iterable[_Union[PartyStatus, _Mapping]]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class TopRequest(_message.Message):
    __slots__ = ("run_id", "k")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    k: int
    def __init__(self, run_id: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class TopRow(_message.Message):
    __slots__ = ("rank", "item", "code", "estimate", "stderr", "parties", "code_hex", "item_bytes")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    CODE_HEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    item: str
    code: int
    estimate: float
    stderr: float
    parties: int
    code_hex: str
    item_bytes: bytes
    def __init__(self, rank: _Optional[int] = ..., item: _Optional[str] = ..., code: _Optional[int] = ..., estimate: _Optional[float] = ..., stderr: _Optional[float] = ..., parties: _Optional[int] = ..., code_hex: _Optional[str] = ..., item_bytes: _Optional[bytes] = ...) -> None: ...

class TopResponse(_message.Message):
    __slots__ = ("run_id", "rows", "document_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    rows: _containers.RepeatedCompositeFieldContainer[TopRow]
    document_json: str
    def __init__(self, run_id: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[TopRow, _Mapping]]] = ..., document_json: _Optional[str] = ...) -> None: ...

class FrequencyRequest(_message.Message):
    __slots__ = ("run_id", "items", "item_bytes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ITEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    items: _containers.RepeatedScalarFieldContainer[str]
    item_bytes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, run_id: _Optional[str] = ..., items: _Optional[_Iterable[str]] = ..., item_bytes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FrequencyRow(_message.Message):
    __slots__ = ("item", "code", "code_hex", "item_bytes", "found", "estimate", "stderr", "rank")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_HEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    item: str
    code: int
    code_hex: str
    item_bytes: bytes
    found: bool
    estimate: float
    stderr: float
    rank: int
    def __init__(self, item: _Optional[str] = ..., code: _Optional[int] = ..., code_hex: _Optional[str] = ..., item_bytes: _Optional[bytes] = ..., found: _Optional[bool] = ..., estimate: _Optional[float] = ..., stderr: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class FrequencyResponse(_message.Message):
    __slots__ = ("run_id", "rows")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    rows: _containers.RepeatedCompositeFieldContainer[FrequencyRow]
    def __init__(self, run_id: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[FrequencyRow, _Mapping]]] = ...) -> None: ...

class CostResponse(_message.Message):
    __slots__ = ("run_id", "cost_json", "privacy_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COST_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    cost_json: str
    privacy_json: str
    def __init__(self, run_id: _Optional[str] = ..., cost_json: _Optional[str] = ..., privacy_json: _Optional[str] = ...) -> None: ...
