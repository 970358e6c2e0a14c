from neuroflow.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToWorker(_message.Message):
    __slots__ = ("start", "invoke", "cancel", "health", "shutdown")
    START_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    start: Start
    invoke: InvokeRequest
    cancel: Cancel
    health: HealthCheck
    shutdown: Shutdown
    def __init__(self, start: _Optional[_Union[Start, _Mapping]] = ..., invoke: _Optional[_Union[InvokeRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., health: _Optional[_Union[HealthCheck, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class FromWorker(_message.Message):
    __slots__ = ("ready", "result", "log", "metric", "health")
    READY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ready: Ready
    result: InvokeResult
    log: LogRecord
    metric: Metric
    health: HealthResult
    def __init__(self, ready: _Optional[_Union[Ready, _Mapping]] = ..., result: _Optional[_Union[InvokeResult, _Mapping]] = ..., log: _Optional[_Union[LogRecord, _Mapping]] = ..., metric: _Optional[_Union[Metric, _Mapping]] = ..., health: _Optional[_Union[HealthResult, _Mapping]] = ...) -> None: ...

class Start(_message.Message):
    __slots__ = ("agent", "version", "worker_id", "release", "config_json", "max_concurrency", "max_frame_bytes")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent: str
    version: str
    worker_id: str
    release: str
    config_json: bytes
    max_concurrency: int
    max_frame_bytes: int
    def __init__(self, agent: _Optional[str] = ..., version: _Optional[str] = ..., worker_id: _Optional[str] = ..., release: _Optional[str] = ..., config_json: _Optional[bytes] = ..., max_concurrency: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("id", "request_id", "input_json", "session", "timeout_ms", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: int
    request_id: str
    input_json: bytes
    session: str
    timeout_ms: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., request_id: _Optional[str] = ..., input_json: _Optional[bytes] = ..., session: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ready(_message.Message):
    __slots__ = ("pid", "sdk_version")
    PID_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    pid: int
    sdk_version: str
    def __init__(self, pid: _Optional[int] = ..., sdk_version: _Optional[str] = ...) -> None: ...

class InvokeResult(_message.Message):
    __slots__ = ("id", "output_json", "usage", "error", "duration_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    output_json: bytes
    usage: _common_pb2.Usage
    error: _common_pb2.Error
    duration_ms: float
    def __init__(self, id: _Optional[int] = ..., output_json: _Optional[bytes] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("id", "level", "message", "fields", "time_unix", "stream")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    id: int
    level: str
    message: str
    fields: _containers.ScalarMap[str, str]
    time_unix: float
    stream: str
    def __init__(self, id: _Optional[int] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., time_unix: _Optional[float] = ..., stream: _Optional[str] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("id", "name", "value", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    value: float
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., value: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HealthResult(_message.Message):
    __slots__ = ("id", "healthy", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: int
    healthy: bool
    detail: str
    def __init__(self, id: _Optional[int] = ..., healthy: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...
