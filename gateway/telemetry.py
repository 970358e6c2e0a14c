"""OpenTelemetry for the gateway: the HTTP server span, child spans, metrics.

A request's spans: ``{method} {http.route}`` (SERVER; a child of the client's
W3C ``traceparent`` when it sent one) → ``guard input`` → ``route`` (on
``/v1/invoke`` and ``/v1/route``) → ``neuroflow.v1.Supervisor/InvokeStream``
(CLIENT; its context travels in ``InvokeCall.metadata["traceparent"]``) →
``guard output``. Every response carries the trace: a ``traceparent`` header
and ``trace_id`` in its JSON body.

Export is the supervisor's (OTLP when configured, else trace files); the
metrics are served on the gateway's own ``GET /metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry import metrics
from opentelemetry.trace import SpanKind, StatusCode

from neuroflow.supervisor.logs import UNSAMPLED_TRACE
from neuroflow.supervisor.otel import (
    DURATION_BUCKETS,
    Batched,
    Sampling,
    Span,
    TelemetryConfig,
    current_span,
    metrics_handler,
    start_span,
    unsampled_traceparent,
)
from neuroflow.supervisor.otel_export import Export, setup_export

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Instruments:
    """Every metric the gateway records, created on ``meter``."""

    def __init__(self, meter: metrics.Meter) -> None:
        # OpenTelemetry's HTTP semantic conventions: name, unit and attribute names.
        self.duration = meter.create_histogram(
            "http.server.request.duration", "s", "Duration of HTTP server requests",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.guard_blocks = meter.create_counter("neuroflow.guard.blocks", "{request}",
                                                 "Inputs and outputs the guard blocked, by rule")
        self.route_fallbacks = meter.create_counter("neuroflow.router.fallbacks", "{request}",
                                                    "Queries no agent fitted confidently enough")


INSTRUMENTS = Instruments(metrics.get_meter("neuroflow.gateway"))
#: Most traces start here: the share of HTTP requests without a sampled parent that are recorded.
SAMPLING = Sampling()


def setup(trace_dir: Path | None, otlp_endpoint: str | None = None, otlp_protocol: str | None = None,
          sample_ratio: float = 1.0) -> Export:
    """Install the SDK providers for the gateway process."""
    SAMPLING.ratio = sample_ratio
    config = TelemetryConfig(otlp_endpoint=otlp_endpoint, otlp_protocol=otlp_protocol)
    return setup_export("neuroflow-gateway", config, trace_dir)


def add_metrics_route(app: web.Application, export: Export) -> None:
    app.router.add_get("/metrics", metrics_handler(export.registry, flush_metrics))


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The HTTP server span and ``http.server.request.duration`` of every request but the scrapes."""
    if request.path == "/metrics":  # a scrape every few seconds would bury the requests' traces
        return await handler(request)
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    attributes = {"http.request.method": request.method, "url.path": request.path, "url.scheme": request.scheme,
                  "network.protocol.version": f"{request.version.major}.{request.version.minor}"}
    if route:
        attributes["http.route"] = route
    with start_span(f"{request.method} {route}" if route else request.method, kind=SpanKind.SERVER,
                    attributes=attributes, traceparent=request.headers.get("traceparent"),
                    sampling=SAMPLING) as span:
        response = await handler(request)
        status = response.status
        if isinstance(span, Span):
            span.set_attribute("http.response.status_code", status)
            if "X-Request-Id" in response.headers:
                span.set_attribute("neuroflow.request_id", response.headers["X-Request-Id"])
            if status >= 500:
                span.set_status(StatusCode.ERROR)
                span.set_attribute("error.type", str(status))
            response.headers["traceparent"] = span.traceparent
            _add_trace_id(response, span.trace_id_hex)
        else:  # not sampled: no span, but the trace id still names the request
            trace_id = UNSAMPLED_TRACE.get()
            response.headers["traceparent"] = unsampled_traceparent(trace_id)
            _add_trace_id(response, trace_id)
    _record_duration(request.method, route, status, started)
    return response


def _record_duration_now(method: str, route: str, status: int, seconds: float) -> None:
    attrs: dict[str, str | int] = {"http.request.method": method, "http.response.status_code": status}
    if route:
        attrs["http.route"] = route
    INSTRUMENTS.duration.record(seconds, attrs)


#: Like the supervisor, the gateway records its histogram off the request's path.
_DURATIONS = Batched(_record_duration_now)
flush_metrics = _DURATIONS.flush


def _record_duration(method: str, route: str, status: int, started: float) -> None:
    _DURATIONS.add(method, route, status, time.perf_counter() - started)


def _add_trace_id(response: web.StreamResponse, trace_id: str) -> None:
    """``"trace_id"`` as the last field of a JSON object body (spliced, not re-encoded)."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    body = response.body
    if not isinstance(body, bytes) or not body.startswith(b"{") or not body.endswith(b"}"):
        return
    field = f'"trace_id":"{trace_id}"}}'.encode()
    response.body = body[:-1] + (b"," if body != b"{}" else b"") + field


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[object]:
    """A child span of the current request (guard, route)."""
    return start_span(name, attributes=attributes)


@contextmanager
def supervisor_call(target: str, agent: str, metadata: MutableMapping[str, str]) -> Iterator[object]:
    """The CLIENT span of one call on the supervisor stream; puts its ``traceparent`` in ``metadata``."""
    if (unsampled := UNSAMPLED_TRACE.get()) or current_span() is None:  # the supervisor records nothing either
        if unsampled:
            metadata["traceparent"] = unsampled_traceparent(unsampled)
        yield None
        return
    with start_span("neuroflow.v1.Supervisor/InvokeStream", kind=SpanKind.CLIENT,
                    attributes={"rpc.system": "grpc", "rpc.service": "neuroflow.v1.Supervisor",
                                "rpc.method": "InvokeStream", "server.address": target,
                                "neuroflow.agent": agent}) as s:
        assert isinstance(s, Span)
        metadata["traceparent"] = s.traceparent
        yield s


def guard_blocked(current: Any, rule: str, direction: str) -> None:
    current.set_attribute("neuroflow.guard.rule", rule)
    current.set_attribute("neuroflow.guard.action", "block")
    INSTRUMENTS.guard_blocks.add(1, {"rule": rule, "direction": direction})


def route_fallback(agent: str | None) -> None:
    INSTRUMENTS.route_fallbacks.add(1, {"agent": agent or ""})
