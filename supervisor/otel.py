"""OpenTelemetry plumbing shared by the supervisor and the gateway.

Head sampling and W3C ``traceparent``; light request spans (:class:`Span`, a
few slots on the request path) that a recorder thread turns into SDK spans
for the exporters (:mod:`.otel_export`: OTLP over gRPC or HTTP when an
endpoint is configured, otherwise size-rotated JSON-lines files that ``nfctl
trace`` renders, :mod:`.traces`); the telemetry config, the Prometheus
``/metrics`` handler and batched metric updates.

Instrumented code uses the OpenTelemetry API only (proxies until
:func:`setup_export` installs the SDK providers), so unit tests that never
call it record nothing. The process-specific parts are the supervisor's
:mod:`.telemetry` and the gateway's ``neuroflow.gateway.telemetry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry

from neuroflow.sdk.manifest import ManifestError, parse_duration, parse_size, positive_int

from .logs import UNSAMPLED_TRACE

if TYPE_CHECKING:
    from .otel_export import SpanRecorder
    pass

log = logging.getLogger("neuroflow.telemetry")

#: Histogram buckets for durations in seconds (OpenTelemetry's defaults are for milliseconds).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0, 300.0)


# -- head sampling ---------------------------------------------------------------------------------
def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` of a W3C ``traceparent``, or None if it is malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    trace_id, span_id, flags = parts[1:4]
    if len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2:
        return None
    try:
        if not int(trace_id, 16) or not int(span_id, 16):
            return None
        return trace_id.lower(), span_id.lower(), bool(int(flags, 16) & 1)
    except ValueError:
        return None


class Sampling:
    """The head-sampling decision, made once where a trace starts (the gateway for HTTP calls, the
    supervisor for direct gRPC calls) and carried by the ``traceparent`` flags after that.

    An unsampled request records no span anywhere (the OpenTelemetry SDK is not
    touched on its path), but still gets a trace id: in its response, its
    ``traceparent`` and every log line, so it can be found — and re-sent with a
    sampled ``traceparent`` to trace it.
    """

    def __init__(self, ratio: float = 1.0) -> None:
        self.ratio = ratio

    def decide(self, traceparent: str | None) -> tuple[bool, str, str]:
        """``(sampled, trace_id, parent_span_id)``: the parent's ids when a valid ``traceparent`` came;
        else a root, with a new trace id when unsampled ("" when sampled: the root span makes one)."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is not None:
            return parent[2], parent[0], parent[1]
        if self.ratio >= 1.0 or (self.ratio > 0.0 and random.random() < self.ratio):
            return True, "", ""
        return False, f"{random.getrandbits(128) or 1:032x}", ""


def unsampled_traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-00"


# -- configuration ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlertRules:
    """Thresholds checked over a sliding ``window``; each (rule, agent) alerts at most once per window."""

    window: float = 60.0
    #: Share of failed requests (0-1) over the window; None disables the rule.
    error_rate: float | None = None
    #: Fewest requests in the window before the error-rate and p99 rules apply.
    min_requests: int = 10
    #: p99 request duration in seconds over the window.
    p99: float | None = None
    #: Limit breaches (OOM, CPU time) per agent in the window that raise an alert.
    limit_breaches: int | None = 1


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """The ``telemetry:`` block of the supervisor's configuration."""

    #: HOST:PORT of the Prometheus ``/metrics`` endpoint; None disables it (port 0 picks a free one).
    metrics_listen: str | None = "127.0.0.1:9465"
    #: OTLP collector; None falls back to $OTEL_EXPORTER_OTLP_ENDPOINT, then to local trace files.
    otlp_endpoint: str | None = None
    #: "grpc" or "http/protobuf"; None falls back to $OTEL_EXPORTER_OTLP_PROTOCOL, then "grpc".
    otlp_protocol: str | None = None
    #: Where trace files go; None means ``<state_dir>/traces``.
    trace_dir: Path | None = None
    trace_file_bytes: int = 16 * 1024 * 1024
    trace_files: int = 5
    #: Share of the traces that start here (calls without a ``traceparent``) that are recorded.
    sample_ratio: float = 1.0
    #: A request whose worker made at least this many syscalls for it gets a
    #: "syscall burst" event on its dispatch span (with neuroflow-ebpf running).
    syscall_burst: int = 10_000
    alerts: AlertRules = field(default_factory=AlertRules)


_TELEMETRY_KEYS = {"metrics_listen", "otlp_endpoint", "otlp_protocol", "trace_dir", "trace_file_bytes",
                   "trace_files", "sample_ratio", "syscall_burst", "alerts"}
_ALERT_KEYS = {"window", "error_rate", "min_requests", "p99", "limit_breaches"}


def parse_telemetry(raw: Any, where: str) -> TelemetryConfig:
    """Validate the ``telemetry:`` mapping; errors are :class:`ManifestError` naming ``where`` and the key."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - _TELEMETRY_KEYS)
    if unknown:
        raise ManifestError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_TELEMETRY_KEYS))})")
    values: dict[str, Any] = {}
    if "metrics_listen" in raw:
        listen = raw["metrics_listen"]
        if listen in (0, "0", False, None, ""):
            values["metrics_listen"] = None
        else:
            host, _, port = str(listen).rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ManifestError(f"{where}.metrics_listen: expected HOST:PORT or 0 (off), got {listen!r}")
            values["metrics_listen"] = str(listen)
    if raw.get("otlp_endpoint") is not None:
        url = raw["otlp_endpoint"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ManifestError(f"{where}.otlp_endpoint: expected an http(s) URL, got {url!r}")
        values["otlp_endpoint"] = url
    if raw.get("otlp_protocol") is not None:
        if raw["otlp_protocol"] not in ("grpc", "http/protobuf"):
            raise ManifestError(f"{where}.otlp_protocol: expected grpc or http/protobuf, got {raw['otlp_protocol']!r}")
        values["otlp_protocol"] = raw["otlp_protocol"]
    if "sample_ratio" in raw:
        ratio = raw["sample_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ManifestError(f"{where}.sample_ratio: expected a number from 0 to 1, got {ratio!r}")
        values["sample_ratio"] = float(ratio)
    if raw.get("trace_dir") is not None:
        if not isinstance(raw["trace_dir"], str) or not raw["trace_dir"]:
            raise ManifestError(f"{where}.trace_dir: expected a folder path, got {raw['trace_dir']!r}")
        values["trace_dir"] = Path(raw["trace_dir"])
    if "trace_file_bytes" in raw:
        values["trace_file_bytes"] = parse_size(raw["trace_file_bytes"], f"{where}.trace_file_bytes")
    if "trace_files" in raw:
        values["trace_files"] = positive_int(raw["trace_files"], f"{where}.trace_files")
    if "syscall_burst" in raw:
        values["syscall_burst"] = positive_int(raw["syscall_burst"], f"{where}.syscall_burst")
    if "alerts" in raw:
        values["alerts"] = _parse_alerts(raw["alerts"], f"{where}.alerts")
    return TelemetryConfig(**values)


def _parse_alerts(raw: Any, where: str) -> AlertRules:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - _ALERT_KEYS)
    if unknown:
        raise ManifestError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_ALERT_KEYS))})")
    values: dict[str, Any] = {}
    if "window" in raw:
        values["window"] = parse_duration(raw["window"], f"{where}.window")
    if raw.get("error_rate") is not None:
        rate = raw["error_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ManifestError(f"{where}.error_rate: expected a number from 0 to 1, got {rate!r}")
        values["error_rate"] = float(rate)
    if raw.get("p99") is not None:
        values["p99"] = parse_duration(raw["p99"], f"{where}.p99")
    if "min_requests" in raw:
        values["min_requests"] = positive_int(raw["min_requests"], f"{where}.min_requests")
    if "limit_breaches" in raw:
        values["limit_breaches"] = (None if raw["limit_breaches"] is None
                                    else positive_int(raw["limit_breaches"], f"{where}.limit_breaches"))
    return AlertRules(**values)


def metrics_handler(registry: CollectorRegistry, before: Callable[[], None] = lambda: None) -> Callable[[Any], Any]:
    """An aiohttp handler rendering ``registry`` in the Prometheus text format (after ``before()``)."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def handler(request: web.Request) -> web.Response:
        before()
        # Collection runs the observable callbacks (cgroup file reads): off the event loop.
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


#: The running process's span recorder (set by :func:`.otel_export.setup_export`).
RECORDER: list[SpanRecorder | None] = [None]


# -- request spans -------------------------------------------------------------------------------
class Span:
    """One span of a sampled request: a few slots here, an SDK span only in the exporter thread.

    It offers the part of OpenTelemetry's ``Span`` API that NeuroFlow uses; use it through
    :func:`start_span` (current for the ``with`` block) or :meth:`child`.
    """

    __slots__ = ("attributes", "end_time", "events", "kind", "name", "parent_id", "remote_parent", "span_id",
                 "start_time", "status", "status_message", "trace_id")

    def __init__(self, name: str, trace_id: int, parent_id: int = 0, kind: SpanKind = SpanKind.INTERNAL,
                 attributes: Mapping[str, Any] | None = None, remote_parent: bool = False) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = random.getrandbits(64) or 1
        self.parent_id = parent_id
        self.remote_parent = remote_parent
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.status, self.status_message = StatusCode.UNSET, ""
        self.start_time, self.end_time = time.time_ns(), 0
        self.events: list[Event] | None = None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        if self.events is None:
            self.events = []
        self.events.append(Event(name, dict(attributes) if attributes else None, time.time_ns()))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: StatusCode, description: str = "") -> None:
        self.status, self.status_message = status, description

    def child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
              ) -> Span:
        return Span(name, self.trace_id, self.span_id, kind, attributes)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    def end(self) -> None:
        if not self.end_time:
            self.end_time = time.time_ns()
            recorder = RECORDER[0]
            if recorder is not None:
                recorder.finish(self)

    def readable(self, resource: Resource) -> ReadableSpan:
        """The OpenTelemetry SDK's span for the exporters (built in the recorder's thread)."""
        return ReadableSpan(
            name=self.name, context=SpanContext(self.trace_id, self.span_id, is_remote=False, trace_flags=SAMPLED),
            parent=SpanContext(self.trace_id, self.parent_id, is_remote=self.remote_parent, trace_flags=SAMPLED)
            if self.parent_id else None,
            resource=resource, attributes=self.attributes, kind=self.kind,
            status=Status(self.status, self.status_message or None) if self.status is StatusCode.ERROR
            else Status(self.status),
            start_time=self.start_time, end_time=max(self.end_time, self.start_time),
            events=self.events or (), instrumentation_scope=_SCOPE,
        )


class NoSpan:
    """The span of an unsampled request, or of work outside any request: every call does nothing."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def set_status(self, status: StatusCode, description: str = "") -> None:
        pass

    def end(self) -> None:
        pass


NO_SPAN = NoSpan()
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("neuroflow")
_CURRENT: contextvars.ContextVar[Span | None] = contextvars.ContextVar("neuroflow_span", default=None)


def current_span() -> Span | None:
    return _CURRENT.get()


@contextlib.contextmanager
def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
               traceparent: str | None = None, sampling: Sampling | None = None) -> Iterator[Span | NoSpan]:
    """A span current for the ``with`` block: a child of the current span; or, with ``sampling``,
    the root of this process's part of a trace (a child of ``traceparent`` when one came).

    Unsampled requests get :data:`NO_SPAN` and their trace id in :data:`UNSAMPLED_TRACE` (for
    their logs); nothing else is spent on them.
    """
    parent = _CURRENT.get()
    if sampling is not None:
        sampled, trace_id, parent_id = sampling.decide(traceparent)
        if not sampled:
            token = UNSAMPLED_TRACE.set(trace_id)
            try:
                yield NO_SPAN
            finally:
                UNSAMPLED_TRACE.reset(token)
            return
        span = Span(name, int(trace_id, 16) if trace_id else random.getrandbits(128) or 1,
                    int(parent_id, 16) if parent_id else 0, kind, attributes, remote_parent=bool(parent_id))
    elif parent is None:
        yield NO_SPAN
        return
    else:
        span = parent.child(name, kind, attributes)
    token = _CURRENT.set(span)
    try:
        yield span
    except BaseException as exc:
        if span.status is not StatusCode.ERROR:
            span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _CURRENT.reset(token)
        span.end()


def current_trace_id() -> str:
    """The current request's trace id in hex (sampled or not), or "" outside a request."""
    span = _CURRENT.get()
    return span.trace_id_hex if span is not None else UNSAMPLED_TRACE.get()


class Batched:
    """Metric updates recorded off the request's path.

    An OpenTelemetry instrument update costs 12-14 µs here (measured), several per
    call. Items wait ``delay`` seconds, then are recorded ``chunk`` per turn of the
    event loop (a whole batch at once stalled the loop for several ms: bench/latency's
    p99), and all at once before a scrape (:meth:`flush`). Without an event loop (a
    script, a test) an item is recorded at once.
    """

    def __init__(self, record: Callable[..., None], delay: float = 0.25, chunk: int = 8) -> None:
        self.record = record
        self.delay = delay
        self.chunk = chunk
        self._items: list[tuple[Any, ...]] = []

    def add(self, *item: Any) -> None:
        if not self._items:
            try:
                asyncio.get_running_loop().call_later(self.delay, self._flush_some)
            except RuntimeError:
                self.record(*item)
                return
        self._items.append(item)

    def _flush_some(self) -> None:
        self.flush(self.chunk)
        if self._items:
            asyncio.get_running_loop().call_soon(self._flush_some)

    def flush(self, limit: int | None = None) -> None:
        items = self._items[:limit]
        del self._items[:len(items)]
        for item in items:
            self.record(*item)


