"""OpenTelemetry for the supervisor: spans, metrics, trace files, alert rules.

Export (shared with the gateway, like :mod:`.logs`): OTLP over gRPC or HTTP
when an endpoint is configured (``telemetry.otlp_endpoint`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise finished spans are written as JSON
lines to size-rotated files that ``nfctl trace`` renders. Metrics are always
served for Prometheus on ``/metrics`` (the supervisor's on a loopback port,
``telemetry.metrics_listen``), and pushed over OTLP too when configured.

Instrumented code uses the OpenTelemetry API only (proxies until
:func:`setup_export` installs the SDK providers), so unit tests that never
call it record nothing.

Spans of one request: ``neuroflow.v1.Supervisor/InvokeStream`` (SERVER, from
the gateway's ``traceparent`` in ``InvokeCall.metadata``) → ``supervisor queue``
(only when no worker was free) and ``supervisor dispatch`` → the worker's
``worker handle`` and the agent's own spans, which arrive in the request's
``InvokeResult`` and are exported here with their original ids and times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry

from neuroflow.sdk.manifest import ManifestError, parse_duration, parse_size, positive_int
from neuroflow.v1 import worker_pb2 as wpb

from .logs import UNSAMPLED_TRACE

if TYPE_CHECKING:
    from .alerts import Alerts
    from .pool import AgentPool
    from .worker import Worker

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


# -- export (shared with the gateway) -----------------------------------------------------------
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
    alerts: AlertRules = field(default_factory=AlertRules)


_TELEMETRY_KEYS = {"metrics_listen", "otlp_endpoint", "otlp_protocol", "trace_dir", "trace_file_bytes",
                   "trace_files", "sample_ratio", "alerts"}
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


class JsonFileSpanExporter(SpanExporter):
    """Finished spans as JSON lines in ``<dir>/<service>.jsonl``, rotated by size (``.1`` … ``.N``)."""

    def __init__(self, directory: Path, service: str, max_bytes: int = 16 * 1024 * 1024, keep: int = 5) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{service}.jsonl"
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._size = self.path.stat().st_size if self.path.exists() else 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_to_json(s), ensure_ascii=False, default=str) + "\n" for s in spans).encode()
        try:
            with self._lock:
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                    self._size = 0
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self._size += len(data)
        except OSError as exc:
            log.error("cannot write trace file %s: %s", self.path, exc.strerror)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _rotate(self) -> None:
        """``x.jsonl`` becomes ``x.jsonl.1``, ``.1`` becomes ``.2`` …; the oldest (``.keep``) goes."""
        self.path.with_name(f"{self.path.name}.{self.keep}").unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def shutdown(self) -> None:
        pass


def span_to_json(span: ReadableSpan) -> dict[str, Any]:
    ctx, parent = span.get_span_context(), span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else "",
        "span_id": f"{ctx.span_id:016x}" if ctx else "",
        "parent_span_id": f"{parent.span_id:016x}" if parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name", ""),
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description or "",
        "attributes": dict(span.attributes or {}),
    }


class SpanRecorder:
    """Where NeuroFlow's finished spans go: a queue the hot path appends to, and a thread that turns
    them into OpenTelemetry SDK spans and hands them to the exporter every ``interval`` seconds.

    Building SDK span objects costs 35-50 µs each on these machines (measured); a request has
    about ten spans, so the request path records plain :class:`Span` objects (a few µs) and the
    SDK work happens here, in small batches, off the event loop.
    """

    def __init__(self, exporter: SpanExporter, resource: Resource, interval: float = 0.1, batch: int = 16) -> None:
        self.exporter = exporter
        self.resource = resource
        self.worker_resource = resource.merge(Resource({"service.name": "neuroflow-worker"}))
        self.interval = interval
        self.batch = batch
        self.dropped = 0
        self._queue: collections.deque[Any] = collections.deque(maxlen=_MAX_QUEUED_SPANS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neuroflow-spans", daemon=True)
        self._thread.start()

    def finish(self, span: Span) -> None:
        if len(self._queue) == _MAX_QUEUED_SPANS:
            self.dropped += 1
        self._queue.append(span)

    def worker_spans(self, spans: Sequence[wpb.Span], trace_id: str, agent: str, worker_id: str) -> None:
        self._queue.append((list(spans), trace_id, agent, worker_id))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        out: list[ReadableSpan] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, Span):
                out.append(item.readable(self.resource))
            else:
                out += worker_readable_spans(self.worker_resource, *item)
            if len(out) >= self.batch:
                self._export(out)
                out = []
                # Hand the GIL back between small batches: the event loop waiting for it would
                # otherwise wait out Python's 5 ms switch interval (seen in bench/latency's p99).
                time.sleep(0)
        if out:
            self._export(out)

    def _export(self, spans: list[ReadableSpan]) -> None:
        try:
            self.exporter.export(spans)
        except Exception as exc:  # an exporter must never take the process down
            log.error("span export failed: %s", exc)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.exporter.shutdown()


#: Spans waiting for the exporter thread; beyond this the oldest are dropped (and counted).
_MAX_QUEUED_SPANS = 100_000
#: The recorder of this process, once :func:`setup_export` made one.
RECORDER: list[SpanRecorder | None] = [None]


@dataclass
class Export:
    """What :func:`setup_export` installed: flush and close it with :meth:`shutdown`."""

    meter_provider: MeterProvider
    registry: CollectorRegistry
    recorder: SpanRecorder | None
    destination: str

    def shutdown(self) -> None:
        if self.recorder is not None:
            self.recorder.shutdown()
        self.meter_provider.shutdown()


def setup_export(service: str, config: TelemetryConfig, trace_dir: Path | None, *,
                 install: bool = True) -> Export:
    """Build the span recorder and the metrics providers (and make them this process's when ``install``)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    from neuroflow.sdk import __version__

    resource = Resource.create({"service.name": service, "service.version": __version__,
                                "service.namespace": "neuroflow"})
    endpoint = config.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    protocol = config.otlp_protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [PrometheusMetricReader(scope_info_enabled=False, registry=registry)]
    span_exporter: SpanExporter | None = None
    if endpoint:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

            base = endpoint.rstrip("/")
            span_exporter = HttpSpans(endpoint=f"{base}/v1/traces")
            readers.append(PeriodicExportingMetricReader(HttpMetrics(endpoint=f"{base}/v1/metrics")))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            span_exporter = GrpcSpans(endpoint=endpoint)
            readers.append(PeriodicExportingMetricReader(GrpcMetrics(endpoint=endpoint)))
        destination = f"otlp {protocol} {endpoint}"
    elif trace_dir is not None:
        span_exporter = JsonFileSpanExporter(trace_dir, service, config.trace_file_bytes, config.trace_files)
        destination = f"files in {trace_dir}"
    else:
        destination = "none"
    recorder = SpanRecorder(span_exporter, resource) if span_exporter is not None else None
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if install:
        RECORDER[0] = recorder
        metrics.set_meter_provider(meter_provider)
    log.info("telemetry ready", extra={"traces": destination, "service": service})
    return Export(meter_provider, registry, recorder, destination)


async def serve_metrics(registry: CollectorRegistry, listen: str) -> tuple[Any, str]:
    """Serve ``GET /metrics`` on ``listen`` (HOST:PORT); returns the runner and the URL it bound."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry, flush_metrics))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, f"http://{host}:{bound}/metrics"


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


# -- trace files: reading and rendering (nfctl trace) -------------------------------------------
def read_spans(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Every span in the ``*.jsonl*`` trace files of ``dirs`` (unreadable lines are skipped)."""
    spans = []
    for directory in dirs:
        for path in sorted(Path(directory).glob("*.jsonl*")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                with contextlib.suppress(ValueError):
                    span = json.loads(line)
                    if isinstance(span, dict) and "trace_id" in span:
                        spans.append(span)
    return spans


def last_trace_id(spans: Sequence[dict[str, Any]]) -> str | None:
    """The trace whose root (or earliest) span started last."""
    starts: dict[str, int] = {}
    for s in spans:
        starts[s["trace_id"]] = min(starts.get(s["trace_id"], s["start_unix_nano"]), s["start_unix_nano"])
    return max(starts, key=lambda t: starts[t]) if starts else None


def trace_tree(spans: Sequence[dict[str, Any]], trace_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The trace's spans depth-first as (depth, span), children by start time; orphans become roots."""
    mine = {s["span_id"]: s for s in spans if s["trace_id"] == trace_id}
    children: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    roots: list[dict[str, Any]] = []
    for s in mine.values():
        (children[s["parent_span_id"]] if s["parent_span_id"] in mine else roots).append(s)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        out.append((depth, span))
        for child in sorted(children[span["span_id"]], key=lambda c: c["start_unix_nano"]):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r["start_unix_nano"]):
        walk(root, 0)
    return out


def render_trace(spans: Sequence[dict[str, Any]], trace_id: str) -> str:
    """The span tree with each span's start offset from the trace's start and its duration."""
    tree = trace_tree(spans, trace_id)
    if not tree:
        return ""
    t0 = min(s["start_unix_nano"] for _, s in tree)
    lines = [f"trace {trace_id}"]
    for depth, s in tree:
        start = (s["start_unix_nano"] - t0) / 1e6
        took = (s["end_unix_nano"] - s["start_unix_nano"]) / 1e6
        status = f"  [{s['status'].lower()}: {s['status_message']}]" if s["status"] == "ERROR" else ""
        where = s.get("service") or ""
        lines.append(f"{start:9.3f} ms {took:9.3f} ms  {'  ' * depth}{s['name']}  ({where}){status}")
    return "\n".join(lines)


# -- the supervisor's instruments -----------------------------------------------------------------
class Instruments:
    """Every metric the supervisor records, created on ``meter``."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter("neuroflow.agent.requests", "{request}", "Requests per agent")
        self.duration = meter.create_histogram(
            "neuroflow.agent.request.duration", "s", "Time from the supervisor's receipt to its reply",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.errors = meter.create_counter("neuroflow.agent.errors", "{request}", "Failed requests by error code")
        self.tokens = meter.create_counter("neuroflow.agent.tokens", "{token}", "Tokens agents reported")
        self.execution = meter.create_histogram(
            "neuroflow.agent.execution.time", "s", "Time the agent's handle() ran, as the worker measured it",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.spawns = meter.create_counter("neuroflow.worker.spawns", "{worker}", "Workers started")
        self.kills = meter.create_counter("neuroflow.worker.kills", "{worker}", "Workers that died, by reason")
        self.agent_metric = meter.create_counter("neuroflow.agent.metric", "1",
                                                 "Values agents emitted with context.emit_metric, summed")
        self.egress_connect = meter.create_histogram(
            "neuroflow.agent.egress.connect.duration", "s",
            "DNS and connect time of the egress proxy's upstream connections, by agent, destination and outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)


INSTRUMENTS = Instruments(metrics.get_meter("neuroflow.supervisor"))


def watch_pools(pools: Callable[[], Iterable[AgentPool]], meter: metrics.Meter | None = None) -> None:
    """Observable gauges over the live pools: workers by state, cgroup usage per agent."""
    meter = meter or metrics.get_meter("neuroflow.supervisor")

    def workers(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for pool in list(pools()):
            for w in list(pool.workers):
                counts[(pool.name, w.state)] += 1
        for (agent, state), n in counts.items():
            yield metrics.Observation(n, {"agent": agent, "state": state})

    def usage(kind: str) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
        def observe(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
            totals: dict[str, float] = collections.defaultdict(float)
            for pool in list(pools()):
                for w in list(pool.workers):
                    if w.leaf is None or w.state == "dead":
                        continue
                    try:
                        u = w.leaf.usage()
                    except (OSError, ValueError):  # the worker died and its group went meanwhile
                        continue
                    totals[pool.name] += (u.cpu_usec / 1e6 if kind == "cpu" else
                                          u.memory_bytes if kind == "memory" else u.pids)
            for agent, value in totals.items():
                yield metrics.Observation(value, {"agent": agent})
        return observe

    def incidents(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        from .events import BUS

        for (agent, kind), n in list(BUS.counts.items()):
            yield metrics.Observation(n, {"agent": agent, "kind": kind})

    meter.create_observable_gauge("neuroflow.workers", [workers], "{worker}", "Workers by agent and state")
    meter.create_observable_counter("neuroflow.agent.incidents", [incidents], "{event}",
                                    "Sandbox incidents: limit breaches (memory, cpu_time, pids, timeout), seccomp")
    meter.create_observable_gauge("neuroflow.agent.cgroup.cpu.time", [usage("cpu")], "s",
                                  "CPU time used by the agent's live workers (their cgroups)")
    meter.create_observable_gauge("neuroflow.agent.cgroup.memory.usage", [usage("memory")], "By",
                                  "Memory charged to the agent's live workers (their cgroups)")
    meter.create_observable_gauge("neuroflow.agent.cgroup.pids", [usage("pids")], "{process}",
                                  "Processes in the agent's live workers' cgroups")


# -- request spans -------------------------------------------------------------------------------
class Span:
    """One span of a sampled request: a few slots here, an SDK span only in the exporter thread.

    It offers the part of OpenTelemetry's ``Span`` API that NeuroFlow uses; use it through
    :func:`start_span` (current for the ``with`` block) or :meth:`child`.
    """

    __slots__ = ("attributes", "end_time", "kind", "name", "parent_id", "remote_parent", "span_id", "start_time",
                 "status", "status_message", "trace_id")

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

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

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
            name=self.name, context=SpanContext(self.trace_id, self.span_id, is_remote=False, trace_flags=_SAMPLED),
            parent=SpanContext(self.trace_id, self.parent_id, is_remote=self.remote_parent, trace_flags=_SAMPLED)
            if self.parent_id else None,
            resource=resource, attributes=self.attributes, kind=self.kind,
            status=Status(self.status, self.status_message or None) if self.status is StatusCode.ERROR
            else Status(self.status),
            start_time=self.start_time, end_time=max(self.end_time, self.start_time),
            instrumentation_scope=_SCOPE,
        )


class _NoSpan:
    """The span of an unsampled request, or of work outside any request: every call does nothing."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def set_status(self, status: StatusCode, description: str = "") -> None:
        pass

    def end(self) -> None:
        pass


NoSpan = _NoSpan
NO_SPAN = _NoSpan()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("neuroflow")
_CURRENT: contextvars.ContextVar[Span | None] = contextvars.ContextVar("neuroflow_span", default=None)


def current_span() -> Span | None:
    return _CURRENT.get()


@contextlib.contextmanager
def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
               traceparent: str | None = None, sampling: Sampling | None = None) -> Iterator[Span | _NoSpan]:
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


#: Where calls without a ``traceparent`` (nfctl, direct gRPC clients) start their trace.
SAMPLING = Sampling()


def server_span(metadata: Mapping[str, str], agent: str, request_id: str) -> contextlib.AbstractContextManager[
        Span | _NoSpan]:
    """The supervisor's SERVER span for one call, child of the caller's ``traceparent`` if it sent one."""
    return start_span(
        "neuroflow.v1.Supervisor/InvokeStream", kind=SpanKind.SERVER, traceparent=metadata.get("traceparent"),
        sampling=SAMPLING,
        attributes={"rpc.system": "grpc", "rpc.service": "neuroflow.v1.Supervisor", "rpc.method": "InvokeStream",
                    "neuroflow.agent": agent, "neuroflow.request_id": request_id},
    )


def queue_span(agent: str) -> contextlib.AbstractContextManager[Span | _NoSpan]:
    """Time spent waiting for a worker with a free slot."""
    return start_span("supervisor queue", attributes={"neuroflow.agent": agent})


def start_dispatch(agent: str, worker_id: str, request: wpb.InvokeRequest) -> Span | _NoSpan:
    """Start the span of the request on its worker (the caller ends it); its ids go to the
    worker as the parent of ``worker handle``."""
    parent = _CURRENT.get()
    if parent is None:
        if unsampled := UNSAMPLED_TRACE.get():  # the worker logs under it and records no span
            request.trace_id, request.sampled = unsampled, False
        return NO_SPAN
    span = parent.child("supervisor dispatch", attributes={"neuroflow.agent": agent, "neuroflow.worker": worker_id})
    request.trace_id, request.parent_span_id, request.sampled = span.trace_id_hex, f"{span.span_id:016x}", True
    return span


def current_trace_id() -> str:
    """The current request's trace id in hex (sampled or not), or "" outside a request."""
    span = _CURRENT.get()
    return span.trace_id_hex if span is not None else UNSAMPLED_TRACE.get()


def _attribute(value: wpb.AttributeValue) -> str | bool | int | float:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else ""


def worker_readable_spans(resource: Resource, spans: Sequence[wpb.Span], trace_id: str, agent: str,
                          worker_id: str) -> list[ReadableSpan]:
    """A worker's finished spans as SDK spans, under ``resource`` (service ``neuroflow-worker``).

    The worker is untrusted: spans outside the request's own trace, and
    malformed ids, are dropped, and the agent and worker attributes are ours.
    """
    from neuroflow.sdk.tracing import MAX_SPANS

    if not trace_id:
        return []
    tid = int(trace_id, 16)
    out = []
    for s in spans[:MAX_SPANS + 1]:
        try:
            if s.trace_id != trace_id or len(s.span_id) != 16:
                continue
            sid, pid = int(s.span_id, 16), int(s.parent_span_id or "0", 16)
        except ValueError:
            continue
        attributes = {k: _attribute(v) for k, v in s.attributes.items()}
        attributes.update({"neuroflow.agent": agent, "neuroflow.worker": worker_id})
        out.append(ReadableSpan(
            name=s.name[:256] or "unnamed",
            context=SpanContext(tid, sid, is_remote=False, trace_flags=_SAMPLED),
            parent=SpanContext(tid, pid, is_remote=True, trace_flags=_SAMPLED) if pid else None,
            resource=resource, attributes=attributes, kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, s.status_message) if s.error else Status(StatusCode.UNSET),
            start_time=s.start_unix_nano, end_time=max(s.end_unix_nano, s.start_unix_nano),
            instrumentation_scope=_WORKER_SCOPE,
        ))
    return out


_WORKER_SCOPE = InstrumentationScope("neuroflow.sdk")


# -- the supervisor's telemetry, wired at start --------------------------------------------------
#: Kill reasons, from the words of Worker.kill() callers; the first match names the reason.
_KILL_REASONS = (("health check", "health_check"), ("invalid frame", "bad_frame"), ("deadline", "deadline"),
                 ("shutting down", "shutdown"), ("failed to start", "spawn_failed"),
                 ("channel closed", "channel_closed"), ("drain", "drained"))


def exit_reason(worker: Worker) -> str:
    """A short, stable label for why ``worker`` ended (memory, cpu_time, health_check, crashed, ...)."""
    if worker.breach is not None:  # found when it died
        return worker.breach[0]  # memory | cpu_time
    if worker.kill_reason is not None:
        text = worker.kill_reason
        return next((label for words, label in _KILL_REASONS if words in text), "killed")
    status = worker.exit_status.result() if worker.exit_status.done() else None
    if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "exited"
    return "crashed"


class SupervisorTelemetry:
    """Owns the export, the ``/metrics`` server and the alert rules of one supervisor process."""

    def __init__(self, config: TelemetryConfig, state_dir: Path, alerts: Alerts | None) -> None:
        self.config = config
        self.trace_dir = config.trace_dir or state_dir / "traces"
        self.alerts = alerts
        self.export: Export | None = None
        self.metrics_url = ""
        self._runner: Any = None
        self._incidents: asyncio.Task[None] | None = None
        self._window: dict[str, collections.deque[tuple[float, bool, float]]] = collections.defaultdict(
            collections.deque)
        self._breaches: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._fired: dict[tuple[str, str], float] = {}
        self._errors: collections.Counter[str] = collections.Counter()  # failures in each agent's window
        self._p99_checked: dict[str, float] = {}

    async def start(self, pools: Callable[[], Iterable[AgentPool]]) -> None:
        SAMPLING.ratio = self.config.sample_ratio
        self.export = setup_export("neuroflow-supervisor", self.config, self.trace_dir)
        watch_pools(pools)
        _ACTIVE[0] = self
        self._incidents = asyncio.create_task(self._watch_incidents())
        if self.config.metrics_listen:
            try:
                self._runner, self.metrics_url = await serve_metrics(self.export.registry, self.config.metrics_listen)
            except OSError as exc:  # metrics are not worth refusing to run agents for
                log.error("metrics endpoint disabled: cannot listen on %s: %s", self.config.metrics_listen,
                          exc.strerror, extra={"code": "metrics_unavailable"})
            else:
                log.info("metrics listening", extra={"url": self.metrics_url})

    async def close(self) -> None:
        _ACTIVE[0] = None
        if self._incidents is not None:
            self._incidents.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._incidents
        if self._runner is not None:
            await self._runner.cleanup()
        if self.export is not None:
            await asyncio.to_thread(self.export.shutdown)

    async def _watch_incidents(self) -> None:
        from .events import BUS

        async for event in BUS.watch_incidents(limit=1, follow=True):
            if event.kind in LIMIT_KINDS:
                self.limit_breach(event.agent, event.release, event.detail or event.kind)

    # -- events ------------------------------------------------------------------------------
    def spans(self, worker: Worker, spans: Sequence[wpb.Span], trace_id: str) -> None:
        if self.export is not None and self.export.recorder is not None:
            self.export.recorder.worker_spans(spans, trace_id, worker.pool.name, worker.id)

    def request_done(self, agent: str, ok: bool, seconds: float, release: str) -> None:
        now = time.monotonic()
        window = self._window[agent]
        window.append((now, ok, seconds))
        self._errors[agent] += not ok
        while window and window[0][0] < now - self.config.alerts.window:
            self._errors[agent] -= not window.popleft()[1]
        rules = self.config.alerts
        if len(window) < rules.min_requests:
            return
        if rules.error_rate is not None:  # O(1) per request: failures are counted as they come and go
            rate = self._errors[agent] / len(window)
            if rate > rules.error_rate:
                self._fire("error_rate", agent, release, f"{rate:.0%} of the last {len(window)} requests failed "
                           f"(threshold {rules.error_rate:.0%} over {rules.window:g} s)")
        if rules.p99 is not None and now - self._p99_checked.get(agent, 0.0) >= 1.0:  # a sort: once a second
            self._p99_checked[agent] = now
            durations = sorted(d for _, _, d in window)
            p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
            if p99 > rules.p99:
                self._fire("latency_p99", agent, release, f"p99 {p99 * 1000:.0f} ms over the last {len(window)} "
                           f"requests (threshold {rules.p99 * 1000:.0f} ms over {rules.window:g} s)")

    def recent_p99(self, agent: str, seconds: float) -> float | None:
        """p99 duration (s) of the agent's requests that ended in the last ``seconds`` (None: none did).

        Read from the alert window, so it looks back at most ``alerts.window``.
        """
        since = time.monotonic() - seconds
        durations = sorted(d for _, _, d in itertools.takewhile(lambda e: e[0] >= since,
                                                                reversed(self._window.get(agent, ()))))
        return durations[min(len(durations) - 1, int(len(durations) * 0.99))] if durations else None

    def limit_breach(self, agent: str, release: str, reason: str) -> None:
        rules = self.config.alerts
        if rules.limit_breaches is None:
            return
        now = time.monotonic()
        events = self._breaches[agent]
        events.append(now)
        while events and events[0] < now - rules.window:
            events.popleft()
        if len(events) >= rules.limit_breaches:
            self._fire("limit_breach", agent, release, f"{len(events)} workers stopped by a resource limit "
                       f"in {rules.window:g} s (last: {reason})")

    def _fire(self, rule: str, agent: str, release: str, reason: str) -> None:
        """Alert once per (rule, agent) per window."""
        now = time.monotonic()
        last = self._fired.get((rule, agent))
        if last is not None and now - last < self.config.alerts.window:
            return
        self._fired[(rule, agent)] = now
        if self.alerts is not None:
            self.alerts.alert(rule, agent, release, reason)


#: Incident kinds that count as limit breaches for the alert rule.
LIMIT_KINDS = frozenset({"memory", "cpu_time", "pids", "timeout"})

#: The running supervisor's telemetry (None in unit tests and before start).
_ACTIVE: list[SupervisorTelemetry | None] = [None]


def active() -> SupervisorTelemetry | None:
    return _ACTIVE[0]


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


def _record_reply(agent: str, version: str, error_code: str, seconds: float, prompt_tokens: int,
                  completion_tokens: int) -> None:
    attrs = {"agent": agent, "version": version}
    INSTRUMENTS.requests.add(1, attrs)
    INSTRUMENTS.duration.record(seconds, attrs)
    if error_code:
        INSTRUMENTS.errors.add(1, {**attrs, "code": error_code})
    if prompt_tokens:
        INSTRUMENTS.tokens.add(prompt_tokens, {**attrs, "kind": "prompt"})
    if completion_tokens:
        INSTRUMENTS.tokens.add(completion_tokens, {**attrs, "kind": "completion"})


_REPLIES = Batched(_record_reply)
_EXECUTIONS = Batched(lambda agent, version, seconds: INSTRUMENTS.execution.record(
    seconds, {"agent": agent, "version": version}))


def record_reply(agent: str, version: str, release: str, error_code: str, seconds: float,
                 prompt_tokens: int, completion_tokens: int) -> None:
    """Metrics (batched) and alert windows for one finished call."""
    _REPLIES.add(agent, version, error_code, seconds, prompt_tokens, completion_tokens)
    tel = _ACTIVE[0]
    if tel is not None and agent:
        tel.request_done(agent, not error_code, seconds, release)


def recent_p99(agent: str, seconds: float = 10.0) -> float | None:
    """p99 request duration (s) of ``agent`` over the last ``seconds`` (``nfctl top``)."""
    tel = _ACTIVE[0]
    return tel.recent_p99(agent, seconds) if tel is not None else None


def record_execution(agent: str, version: str, duration_ms: float) -> None:
    _EXECUTIONS.add(agent, version, duration_ms / 1000)


def flush_metrics() -> None:
    """Record every batched call (before a scrape)."""
    _REPLIES.flush()
    _EXECUTIONS.flush()


def worker_spawned(agent: str) -> None:
    INSTRUMENTS.spawns.add(1, {"agent": agent})


def worker_exited(pool: AgentPool, worker: Worker) -> None:
    INSTRUMENTS.kills.add(1, {"agent": pool.name, "reason": exit_reason(worker)})


def worker_spans(worker: Worker, spans: Sequence[wpb.Span], trace_id: str) -> None:
    tel = _ACTIVE[0]
    if tel is not None:
        tel.spans(worker, spans, trace_id)


def egress_connected(agent: str, parent: Span | _NoSpan | None, method: str, dest: str, address: str,
                     started_ns: int, code: str) -> None:
    """One upstream connection attempt of an agent's egress proxy (DNS + connect), ending now."""
    ended_ns = time.time_ns()
    INSTRUMENTS.egress_connect.record((ended_ns - started_ns) / 1e9,
                                      {"agent": agent, "destination": dest, "outcome": code or "ok"})
    if not isinstance(parent, Span):
        return
    host, _, port = dest.rpartition(":")
    attributes: dict[str, Any] = {"server.address": host.strip("[]"), "server.port": int(port),
                                  "neuroflow.agent": agent, "neuroflow.egress.method": method}
    if address:
        attributes["network.peer.address"] = address
    span = parent.child(f"egress {method} {dest}", SpanKind.CLIENT, attributes)
    span.start_time = started_ns
    if code:
        span.set_status(StatusCode.ERROR, code)
    span.end()


def agent_metric(agent: str, metric: wpb.Metric) -> None:
    if metric.value >= 0:  # a counter only adds up: negative values have no place in it
        INSTRUMENTS.agent_metric.add(metric.value, {"agent": agent, "name": metric.name})
