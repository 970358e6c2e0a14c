"""Where finished spans go, and the metrics providers: :func:`setup_export`.

OTLP over gRPC or HTTP when an endpoint is configured (``telemetry.otlp_endpoint``
or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise JSON lines in
size-rotated files. Spans are turned into SDK spans off the request path, in
the :class:`SpanRecorder`'s thread, together with the spans a worker recorded
and sent back in its frames. Metrics are always served for Prometheus, and
pushed over OTLP too when configured.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from neuroflow.v1 import worker_pb2 as wpb

from .otel import RECORDER, SAMPLED, Span, TelemetryConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger("neuroflow.telemetry")


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
        **({"events": [{"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})}
                       for e in span.events]} if span.events else {}),
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


# -- spans recorded in a worker (carried back in its frames) -----------------------------------
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
            context=SpanContext(tid, sid, is_remote=False, trace_flags=SAMPLED),
            parent=SpanContext(tid, pid, is_remote=True, trace_flags=SAMPLED) if pid else None,
            resource=resource, attributes=attributes, kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, s.status_message) if s.error else Status(StatusCode.UNSET),
            start_time=s.start_unix_nano, end_time=max(s.end_unix_nano, s.start_unix_nano),
            instrumentation_scope=_WORKER_SCOPE,
        ))
    return out


_WORKER_SCOPE = InstrumentationScope("neuroflow.sdk")
