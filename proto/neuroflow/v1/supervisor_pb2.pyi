from neuroflow.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvokeCall(_message.Message):
    __slots__ = ("call_id", "agent", "input_json", "session", "request_id", "timeout_ms", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    agent: str
    input_json: bytes
    session: str
    request_id: str
    timeout_ms: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[int] = ..., agent: _Optional[str] = ..., input_json: _Optional[bytes] = ..., session: _Optional[str] = ..., request_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InvokeReply(_message.Message):
    __slots__ = ("call_id", "agent", "version", "request_id", "output_json", "usage", "error", "worker_id", "duration_ms", "release")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    agent: str
    version: str
    request_id: str
    output_json: bytes
    usage: _common_pb2.Usage
    error: _common_pb2.Error
    worker_id: str
    duration_ms: float
    release: str
    def __init__(self, call_id: _Optional[int] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., output_json: _Optional[bytes] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., worker_id: _Optional[str] = ..., duration_ms: _Optional[float] = ..., release: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("memory_bytes", "cpu", "pids", "timeout_ms", "cpu_seconds")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu: float
    pids: int
    timeout_ms: int
    cpu_seconds: int
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu: _Optional[float] = ..., pids: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., cpu_seconds: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "version", "description", "skills", "examples", "release", "state", "detail", "workers", "busy", "queued", "limits", "requests", "failures", "restarts", "seccomp", "events", "p99_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SKILLS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    skills: _containers.RepeatedScalarFieldContainer[str]
    examples: _containers.RepeatedScalarFieldContainer[str]
    release: str
    state: str
    detail: str
    workers: int
    busy: int
    queued: int
    limits: Limits
    requests: int
    failures: int
    restarts: int
    seccomp: str
    events: int
    p99_ms: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., skills: _Optional[_Iterable[str]] = ..., examples: _Optional[_Iterable[str]] = ..., release: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ..., workers: _Optional[int] = ..., busy: _Optional[int] = ..., queued: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., restarts: _Optional[int] = ..., seccomp: _Optional[str] = ..., events: _Optional[int] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class ListAgentsReply(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CgroupStatus(_message.Message):
    __slots__ = ("backend", "controllers", "reason", "root")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CONTROLLERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    backend: str
    controllers: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    root: str
    def __init__(self, backend: _Optional[str] = ..., controllers: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., root: _Optional[str] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("version", "uptime_s", "pid", "cgroup", "agents", "requests", "failures", "state_dir")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_s: float
    pid: int
    cgroup: CgroupStatus
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    requests: int
    failures: int
    state_dir: str
    def __init__(self, version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., pid: _Optional[int] = ..., cgroup: _Optional[_Union[CgroupStatus, _Mapping]] = ..., agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., state_dir: _Optional[str] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("agent", "path")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    agent: str
    path: str
    def __init__(self, agent: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("agent", "release")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    release: str
    def __init__(self, agent: _Optional[str] = ..., release: _Optional[str] = ...) -> None: ...

class DeployReply(_message.Message):
    __slots__ = ("agent", "release", "outcome", "detail")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    agent: str
    release: str
    outcome: str
    detail: str
    def __init__(self, agent: _Optional[str] = ..., release: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class ReleaseInfo(_message.Message):
    __slots__ = ("id", "created_unix", "current", "standby")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    STANDBY_FIELD_NUMBER: _ClassVar[int]
    id: str
    created_unix: float
    current: bool
    standby: bool
    def __init__(self, id: _Optional[str] = ..., created_unix: _Optional[float] = ..., current: _Optional[bool] = ..., standby: _Optional[bool] = ...) -> None: ...

class ListReleasesReply(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseInfo]
    def __init__(self, releases: _Optional[_Iterable[_Union[ReleaseInfo, _Mapping]]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("agent", "limit")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    limit: int
    def __init__(self, agent: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("ts_unix", "agent", "event", "release", "detail")
    TS_UNIX_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ts_unix: float
    agent: str
    event: str
    release: str
    detail: str
    def __init__(self, ts_unix: _Optional[float] = ..., agent: _Optional[str] = ..., event: _Optional[str] = ..., release: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("agent", "limit", "follow")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    agent: str
    limit: int
    follow: bool
    def __init__(self, agent: _Optional[str] = ..., limit: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("ts_unix", "kind", "agent", "release", "worker_id", "value", "detail", "request_id")
    TS_UNIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ts_unix: float
    kind: str
    agent: str
    release: str
    worker_id: str
    value: str
    detail: str
    request_id: str
    def __init__(self, ts_unix: _Optional[float] = ..., kind: _Optional[str] = ..., agent: _Optional[str] = ..., release: _Optional[str] = ..., worker_id: _Optional[str] = ..., value: _Optional[str] = ..., detail: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class WatchWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerEvent(_message.Message):
    __slots__ = ("kind", "agent", "version", "release", "worker_id", "pid", "cgroup_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CGROUP_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    agent: str
    version: str
    release: str
    worker_id: str
    pid: int
    cgroup_id: int
    def __init__(self, kind: _Optional[str] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., release: _Optional[str] = ..., worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., cgroup_id: _Optional[int] = ...) -> None: ...
