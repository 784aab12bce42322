from fedhh.wire.v1 import protocol_pb2 as _protocol_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTaskRequest(_message.Message):
    __slots__ = ("user_id", "wire_version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    wire_version: int
    def __init__(self, user_id: _Optional[str] = ..., wire_version: _Optional[int] = ...) -> None: ...

class ReportTask(_message.Message):
    __slots__ = ("run_id", "task_id", "m", "length", "codec", "oracle", "epsilon", "g", "pool_size", "pool_seed", "candidates", "candidate_keys")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ORACLE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    G_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    POOL_SEED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: int
    m: int
    length: int
    codec: str
    oracle: str
    epsilon: float
    g: int
    pool_size: int
    pool_seed: int
    candidates: _protocol_pb2.NDArray
    candidate_keys: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[int] = ..., m: _Optional[int] = ..., length: _Optional[int] = ..., codec: _Optional[str] = ..., oracle: _Optional[str] = ..., epsilon: _Optional[float] = ..., g: _Optional[int] = ..., pool_size: _Optional[int] = ..., pool_seed: _Optional[int] = ..., candidates: _Optional[_Union[_protocol_pb2.NDArray, _Mapping]] = ..., candidate_keys: _Optional[_Iterable[int]] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("grr", "oue", "olh", "olh_pool", "olh_affine")
    GRR_FIELD_NUMBER: _ClassVar[int]
    OUE_FIELD_NUMBER: _ClassVar[int]
    OLH_FIELD_NUMBER: _ClassVar[int]
    OLH_POOL_FIELD_NUMBER: _ClassVar[int]
    OLH_AFFINE_FIELD_NUMBER: _ClassVar[int]
    grr: GrrReport
    oue: OueReport
    olh: OlhReport
    olh_pool: OlhPoolReport
    olh_affine: OlhAffineReport
    def __init__(self, grr: _Optional[_Union[GrrReport, _Mapping]] = ..., oue: _Optional[_Union[OueReport, _Mapping]] = ..., olh: _Optional[_Union[OlhReport, _Mapping]] = ..., olh_pool: _Optional[_Union[OlhPoolReport, _Mapping]] = ..., olh_affine: _Optional[_Union[OlhAffineReport, _Mapping]] = ...) -> None: ...

class GrrReport(_message.Message):
    __slots__ = ("symbol",)
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    symbol: int
    def __init__(self, symbol: _Optional[int] = ...) -> None: ...

class OueReport(_message.Message):
    __slots__ = ("bits",)
    BITS_FIELD_NUMBER: _ClassVar[int]
    bits: bytes
    def __init__(self, bits: _Optional[bytes] = ...) -> None: ...

class OlhReport(_message.Message):
    __slots__ = ("seed", "bucket")
    SEED_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    seed: int
    bucket: int
    def __init__(self, seed: _Optional[int] = ..., bucket: _Optional[int] = ...) -> None: ...

class OlhPoolReport(_message.Message):
    __slots__ = ("seed_index", "bucket")
    SEED_INDEX_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    seed_index: int
    bucket: int
    def __init__(self, seed_index: _Optional[int] = ..., bucket: _Optional[int] = ...) -> None: ...

class OlhAffineReport(_message.Message):
    __slots__ = ("seed", "bucket")
    SEED_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    seed: int
    bucket: int
    def __init__(self, seed: _Optional[int] = ..., bucket: _Optional[int] = ...) -> None: ...

class SubmitReportRequest(_message.Message):
    __slots__ = ("user_id", "run_id", "task_id", "report", "ldp_report")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    LDP_REPORT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    run_id: str
    task_id: int
    report: bytes
    ldp_report: Report
    def __init__(self, user_id: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[int] = ..., report: _Optional[bytes] = ..., ldp_report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class SubmitReportResponse(_message.Message):
    __slots__ = ("accepted", "reports_in_task")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REPORTS_IN_TASK_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reports_in_task: int
    def __init__(self, accepted: _Optional[bool] = ..., reports_in_task: _Optional[int] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ReportStatus(_message.Message):
    __slots__ = ("accepted", "open_task_id", "open_run_id", "reports_in_open_task")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    OPEN_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_IN_OPEN_TASK_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    open_task_id: int
    open_run_id: str
    reports_in_open_task: int
    def __init__(self, accepted: _Optional[int] = ..., open_task_id: _Optional[int] = ..., open_run_id: _Optional[str] = ..., reports_in_open_task: _Optional[int] = ...) -> None: ...

class UserReport(_message.Message):
    __slots__ = ("credential", "report", "ldp_report")
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    LDP_REPORT_FIELD_NUMBER: _ClassVar[int]
    credential: str
    report: bytes
    ldp_report: Report
    def __init__(self, credential: _Optional[str] = ..., report: _Optional[bytes] = ..., ldp_report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class ReportBatch(_message.Message):
    __slots__ = ("run_id", "task_id", "reports")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: int
    reports: _containers.RepeatedCompositeFieldContainer[UserReport]
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[int] = ..., reports: _Optional[_Iterable[_Union[UserReport, _Mapping]]] = ...) -> None: ...

class ReportRefusal(_message.Message):
    __slots__ = ("index", "code", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    code: str
    message: str
    def __init__(self, index: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReportBatchResult(_message.Message):
    __slots__ = ("accepted", "refused", "reports_in_task")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REPORTS_IN_TASK_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    refused: _containers.RepeatedCompositeFieldContainer[ReportRefusal]
    reports_in_task: int
    def __init__(self, accepted: _Optional[int] = ..., refused: _Optional[_Iterable[_Union[ReportRefusal, _Mapping]]] = ..., reports_in_task: _Optional[int] = ...) -> None: ...
