from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NDArray(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Prefixes(_message.Message):
    __slots__ = ("bits", "data")
    BITS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    bits: int
    data: bytes
    def __init__(self, bits: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class MechanismParams(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("run_id", "params", "party_ids", "party_sizes", "codec", "version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARTY_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTY_SIZES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    params: MechanismParams
    party_ids: _containers.RepeatedScalarFieldContainer[str]
    party_sizes: _containers.RepeatedScalarFieldContainer[int]
    codec: str
    version: int
    def __init__(self, run_id: _Optional[str] = ..., params: _Optional[_Union[MechanismParams, _Mapping]] = ..., party_ids: _Optional[_Iterable[str]] = ..., party_sizes: _Optional[_Iterable[int]] = ..., codec: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class EstimateTask(_message.Message):
    __slots__ = ("level", "length", "group", "candidates")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    level: int
    length: int
    group: str
    candidates: Prefixes
    def __init__(self, level: _Optional[int] = ..., length: _Optional[int] = ..., group: _Optional[str] = ..., candidates: _Optional[_Union[Prefixes, _Mapping]] = ...) -> None: ...

class SearchTask(_message.Message):
    __slots__ = ("mode", "start_length", "prior_estimates", "prior_stderrs", "start_prefixes", "prior_items", "item_bits", "horizon")
    MODE_FIELD_NUMBER: _ClassVar[int]
    START_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STDERRS_FIELD_NUMBER: _ClassVar[int]
    START_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ITEM_BITS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    mode: str
    start_length: int
    prior_estimates: NDArray
    prior_stderrs: NDArray
    start_prefixes: Prefixes
    prior_items: Prefixes
    item_bits: int
    horizon: int
    def __init__(self, mode: _Optional[str] = ..., start_length: _Optional[int] = ..., prior_estimates: _Optional[_Union[NDArray, _Mapping]] = ..., prior_stderrs: _Optional[_Union[NDArray, _Mapping]] = ..., start_prefixes: _Optional[_Union[Prefixes, _Mapping]] = ..., prior_items: _Optional[_Union[Prefixes, _Mapping]] = ..., item_bits: _Optional[int] = ..., horizon: _Optional[int] = ...) -> None: ...

class LevelCost(_message.Message):
    __slots__ = ("length", "step", "candidates", "reports", "oracle", "hash_evaluations", "report_bytes")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    ORACLE_FIELD_NUMBER: _ClassVar[int]
    HASH_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    REPORT_BYTES_FIELD_NUMBER: _ClassVar[int]
    length: int
    step: int
    candidates: int
    reports: int
    oracle: str
    hash_evaluations: int
    report_bytes: int
    def __init__(self, length: _Optional[int] = ..., step: _Optional[int] = ..., candidates: _Optional[int] = ..., reports: _Optional[int] = ..., oracle: _Optional[str] = ..., hash_evaluations: _Optional[int] = ..., report_bytes: _Optional[int] = ...) -> None: ...

class EstimateResult(_message.Message):
    __slots__ = ("estimates", "stderrs", "cost", "pre_levels", "length_counts", "length_stderrs")
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    STDERRS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    PRE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_STDERRS_FIELD_NUMBER: _ClassVar[int]
    estimates: NDArray
    stderrs: NDArray
    cost: LevelCost
    pre_levels: _containers.RepeatedCompositeFieldContainer[LevelCost]
    length_counts: NDArray
    length_stderrs: NDArray
    def __init__(self, estimates: _Optional[_Union[NDArray, _Mapping]] = ..., stderrs: _Optional[_Union[NDArray, _Mapping]] = ..., cost: _Optional[_Union[LevelCost, _Mapping]] = ..., pre_levels: _Optional[_Iterable[_Union[LevelCost, _Mapping]]] = ..., length_counts: _Optional[_Union[NDArray, _Mapping]] = ..., length_stderrs: _Optional[_Union[NDArray, _Mapping]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("estimates", "stderrs", "levels", "items", "item_bits")
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    STDERRS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ITEM_BITS_FIELD_NUMBER: _ClassVar[int]
    estimates: NDArray
    stderrs: NDArray
    levels: _containers.RepeatedCompositeFieldContainer[LevelCost]
    items: Prefixes
    item_bits: int
    def __init__(self, estimates: _Optional[_Union[NDArray, _Mapping]] = ..., stderrs: _Optional[_Union[NDArray, _Mapping]] = ..., levels: _Optional[_Iterable[_Union[LevelCost, _Mapping]]] = ..., items: _Optional[_Union[Prefixes, _Mapping]] = ..., item_bits: _Optional[int] = ...) -> None: ...

class ErrorResult(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("run_id", "request_id", "round", "party_id", "version", "estimate", "search")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_id: int
    round: int
    party_id: str
    version: int
    estimate: EstimateTask
    search: SearchTask
    def __init__(self, run_id: _Optional[str] = ..., request_id: _Optional[int] = ..., round: _Optional[int] = ..., party_id: _Optional[str] = ..., version: _Optional[int] = ..., estimate: _Optional[_Union[EstimateTask, _Mapping]] = ..., search: _Optional[_Union[SearchTask, _Mapping]] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("run_id", "request_id", "party_id", "version", "estimate", "search", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_id: int
    party_id: str
    version: int
    estimate: EstimateResult
    search: SearchResult
    error: ErrorResult
    def __init__(self, run_id: _Optional[str] = ..., request_id: _Optional[int] = ..., party_id: _Optional[str] = ..., version: _Optional[int] = ..., estimate: _Optional[_Union[EstimateResult, _Mapping]] = ..., search: _Optional[_Union[SearchResult, _Mapping]] = ..., error: _Optional[_Union[ErrorResult, _Mapping]] = ...) -> None: ...

class PartyInfo(_message.Message):
    __slots__ = ("party_id", "users", "codec", "order", "data", "budget")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    users: int
    codec: str
    order: int
    data: str
    budget: PrivacyBudget
    def __init__(self, party_id: _Optional[str] = ..., users: _Optional[int] = ..., codec: _Optional[str] = ..., order: _Optional[int] = ..., data: _Optional[str] = ..., budget: _Optional[_Union[PrivacyBudget, _Mapping]] = ...) -> None: ...

class PrivacyBudget(_message.Message):
    __slots__ = ("budget", "max_epsilon", "committed", "admitted_runs", "max_central")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_RUNS_FIELD_NUMBER: _ClassVar[int]
    MAX_CENTRAL_FIELD_NUMBER: _ClassVar[int]
    budget: float
    max_epsilon: float
    committed: float
    admitted_runs: _containers.RepeatedScalarFieldContainer[str]
    max_central: float
    def __init__(self, budget: _Optional[float] = ..., max_epsilon: _Optional[float] = ..., committed: _Optional[float] = ..., admitted_runs: _Optional[_Iterable[str]] = ..., max_central: _Optional[float] = ...) -> None: ...
