"""Telemetry without a sandbox: the worker-side tracer, span import, trace files, rules, the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from neuroflow.gateway import telemetry as gateway_telemetry
from neuroflow.sdk import tracing
from neuroflow.sdk.manifest import ManifestError
from neuroflow.supervisor import otel, otel_export, telemetry, traces
from neuroflow.supervisor.alerts import Alerts
from neuroflow.supervisor.sandbox.cgroup_common import Usage
from neuroflow.v1 import worker_pb2 as wpb

ROOT = Path(__file__).resolve().parents[2]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


# -- the worker's tracer (no OpenTelemetry inside the sandbox) -----------------------------------
def test_tracer_nests_spans_and_keeps_types() -> None:
    tracer = tracing.Tracer(TRACE, PARENT)
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child", attributes={"n": 3, "ok": True, "x": 0.5, "s": "v"}) as child:
            assert tracer.current_span() is child
            child.set_attribute("obj", ["not", "scalar"])
        assert tracer.current_span() is root
    child_msg, root_msg = tracer.spans  # in the order they ended
    assert (root_msg.trace_id, root_msg.parent_span_id) == (TRACE, PARENT)
    assert child_msg.parent_span_id == root_msg.span_id and len(child_msg.span_id) == 16
    attrs = child_msg.attributes
    assert (attrs["n"].int_value, attrs["ok"].bool_value, attrs["x"].double_value, attrs["s"].string_value) == \
        (3, True, 0.5, "v")
    assert attrs["obj"].string_value == "['not', 'scalar']"
    assert root_msg.start_unix_nano <= child_msg.start_unix_nano <= child_msg.end_unix_nano <= root_msg.end_unix_nano


def test_tracer_fails_span_on_exception_and_reraises() -> None:
    tracer = tracing.Tracer(TRACE, PARENT)
    with pytest.raises(KeyError), tracer.start_as_current_span("boom"):
        raise KeyError("k")
    (span,) = tracer.spans
    assert span.error and span.status_message.startswith("KeyError")


def test_untraced_or_unsampled_request_records_nothing() -> None:
    for tracer in (tracing.Tracer("", ""), tracing.Tracer(TRACE, PARENT, sampled=False)):
        with tracer.start_as_current_span("x") as span:
            span.set_attribute("a", 1)
            span.set_status(False, "no")
            assert tracer.current_span() is None
        assert tracer.spans == []


def test_span_cap_keeps_the_request_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "MAX_SPANS", 2)
    tracer = tracing.Tracer(TRACE, PARENT)
    with tracer.start_as_current_span("worker handle"):
        for n in range(5):
            with tracer.start_as_current_span(f"s{n}"):
                pass
    assert [s.name for s in tracer.spans] == ["s0", "s1", "worker handle"]
    assert tracer.dropped == 3


# -- the supervisor imports a worker's spans -----------------------------------------------------
def _span(name: str, span_id: str, parent: str, trace_id: str = TRACE, **attrs: int) -> wpb.Span:
    msg = wpb.Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
                   start_unix_nano=1_000, end_unix_nano=2_000)
    for k, v in attrs.items():
        msg.attributes[k].int_value = v
    return msg


def test_worker_spans_become_real_spans_and_foreign_ones_are_dropped() -> None:
    spans = [
        _span("worker handle", "1111111111111111", PARENT, hits=2),
        _span("forged", "2222222222222222", PARENT, trace_id="f" * 32),
        _span("bad id", "xyz", PARENT),
    ]
    spans[0].attributes["neuroflow.agent"].string_value = "someone-else"
    worker = Resource.create({"service.name": "neuroflow-worker"})
    (span,) = otel_export.worker_readable_spans(worker, spans, TRACE, "calc", "w1")
    assert span.name == "worker handle"
    assert (span.context.trace_id, span.context.span_id, span.parent.span_id) == \
        (int(TRACE, 16), 0x1111111111111111, int(PARENT, 16))
    assert (span.start_time, span.end_time) == (1_000, 2_000)
    assert span.attributes["hits"] == 2 and span.attributes["neuroflow.agent"] == "calc"
    assert span.resource.attributes["service.name"] == "neuroflow-worker"
    assert span.status.status_code is StatusCode.UNSET


# -- trace files ---------------------------------------------------------------------------------
def _spans_through(exporter: otel_export.JsonFileSpanExporter, count: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(count):
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
            pass
    provider.shutdown()


def test_trace_files_rotate_and_render(tmp_path: Path) -> None:
    exporter = otel_export.JsonFileSpanExporter(tmp_path, "svc", max_bytes=2000, keep=2)
    _spans_through(exporter, 20)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["svc.jsonl", "svc.jsonl.1", "svc.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    spans = traces.read_spans([tmp_path])
    last = traces.last_trace_id(spans)
    assert last is not None
    tree = traces.trace_tree(spans, last)
    assert [(d, s["name"]) for d, s in tree] == [(0, "outer"), (1, "inner")]
    text = traces.render_trace(spans, last).splitlines()
    assert text[0] == f"trace {last}" and "outer" in text[1] and "    inner" in text[2] and " ms " in text[2]


def test_orphan_spans_still_render(tmp_path: Path) -> None:
    span = {"trace_id": TRACE, "span_id": "1" * 16, "parent_span_id": "9" * 16, "name": "lost", "kind": "INTERNAL",
            "service": "x", "start_unix_nano": 1, "end_unix_nano": 2_000_001, "status": "ERROR",
            "status_message": "bad", "attributes": {}}
    (tmp_path / "x.jsonl").write_text(json.dumps(span) + "\nnot json\n")
    out = traces.render_trace(traces.read_spans([tmp_path]), TRACE)
    assert "lost  (x)  [error: bad]" in out and "2.000 ms" in out


def test_light_span_events_reach_the_files_and_the_rendering(tmp_path: Path) -> None:
    span = otel.Span("supervisor dispatch", int(TRACE, 16))
    span.set_attribute("neuroflow.syscalls", 30009)
    span.add_event("syscall burst", {"neuroflow.syscalls": 30009, "neuroflow.syscalls_per_second": 1263135})
    span.end()
    exporter = otel_export.JsonFileSpanExporter(tmp_path, "svc", max_bytes=100_000, keep=1)
    exporter.export([span.readable(Resource.create({"service.name": "svc"}))])
    (record,) = traces.read_spans([tmp_path])
    assert record["events"] == [{"name": "syscall burst", "time_unix_nano": span.events[0].timestamp,  # type: ignore[index]
                                 "attributes": {"neuroflow.syscalls": 30009, "neuroflow.syscalls_per_second": 1263135}}]
    lines = traces.render_trace([record], TRACE).splitlines()
    assert lines[1].endswith("supervisor dispatch  (svc)  [30009 syscalls]")
    assert lines[2].endswith("* syscall burst (syscalls=30009, syscalls_per_second=1263135)")
    otel.NO_SPAN.add_event("ignored")  # an unsampled request's span takes events too, and drops them


# -- configuration and alert rules ---------------------------------------------------------------
@pytest.mark.parametrize(("raw", "message"), [
    ({"metrics_listen": "nohost"}, "telemetry.metrics_listen: expected HOST:PORT or 0"),
    ({"otlp_endpoint": "collector:4317"}, "telemetry.otlp_endpoint: expected an http(s) URL"),
    ({"otlp_protocol": "udp"}, "telemetry.otlp_protocol: expected grpc or http/protobuf"),
    ({"syscall_burst": 0}, "telemetry.syscall_burst: expected an integer >= 1"),
    ({"alerts": {"error_rate": 2}}, "telemetry.alerts.error_rate: expected a number from 0 to 1"),
    ({"alerts": {"bogus": 1}}, "telemetry.alerts.bogus: unknown key"),
    ({"tracing": True}, "telemetry.tracing: unknown key"),
    ({"sample_ratio": 1.5}, "telemetry.sample_ratio: expected a number from 0 to 1"),
    ({"sample_ratio": "all"}, "telemetry.sample_ratio: expected a number from 0 to 1"),
])
def test_bad_telemetry_config_names_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(f"f.yaml: {message}")):
        otel.parse_telemetry(raw, "f.yaml: telemetry")


def test_telemetry_config_defaults_and_off() -> None:
    assert otel.parse_telemetry({}, "x").metrics_listen == "127.0.0.1:9465"
    cfg = otel.parse_telemetry({"metrics_listen": 0, "alerts": {"p99": "2s", "window": "30s"}}, "x")
    assert cfg.metrics_listen is None and cfg.alerts.p99 == 2.0 and cfg.alerts.window == 30.0
    assert otel.parse_telemetry({}, "x").sample_ratio == 1.0
    assert otel.parse_telemetry({"sample_ratio": 0.01}, "x").sample_ratio == 0.01


def test_alert_rules_fire_once_per_window(tmp_path: Path) -> None:
    rules = otel.AlertRules(window=60, error_rate=0.5, min_requests=4, p99=1.0, limit_breaches=2)
    alerts = Alerts(None)
    tel = telemetry.SupervisorTelemetry(otel.TelemetryConfig(alerts=rules), tmp_path, alerts)
    for _ in range(3):
        tel.request_done("calc", False, 0.01, "r1")
    assert alerts.sent == []  # fewer than min_requests
    for _ in range(10):
        tel.request_done("calc", False, 2.0, "r1")
    assert sorted(a["event"] for a in alerts.sent) == ["error_rate", "latency_p99"]  # deduplicated
    tel.request_done("echo", False, 0.01, "r2")
    tel.limit_breach("echo", "r2", "memory")
    assert len(alerts.sent) == 2
    tel.limit_breach("echo", "r2", "memory")
    assert alerts.sent[-1]["event"] == "limit_breach" and alerts.sent[-1]["agent"] == "echo"
    assert "2 workers stopped by a resource limit" in alerts.sent[-1]["reason"]


def test_recent_p99_looks_back_only_as_far_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tel = telemetry.SupervisorTelemetry(otel.TelemetryConfig(), tmp_path, None)
    clock = [1000.0]
    monkeypatch.setattr(telemetry.time, "monotonic", lambda: clock[0])
    assert tel.recent_p99("calc", 10) is None
    tel.request_done("calc", True, 5.0, "r1")  # 20 s ago: outside the last 10 s
    clock[0] += 20
    for ms in range(1, 51):  # 1..50 ms: the p99 of 50 is the slowest (index 49)
        tel.request_done("calc", True, ms / 1000, "r1")
    assert tel.recent_p99("calc", 10) == 0.050 and tel.recent_p99("calc", 30) == 5.0
    assert tel.recent_p99("echo", 10) is None


# -- metrics and the dashboard -------------------------------------------------------------------
def _exported_names() -> set[str]:
    """Every sample name the supervisor's and gateway's instruments produce, each recorded once."""
    registry = CollectorRegistry()
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    provider = MeterProvider(metric_readers=[PrometheusMetricReader(scope_info_enabled=False, registry=registry)])
    meter = provider.get_meter("test")
    sup, gw = telemetry.Instruments(meter), gateway_telemetry.Instruments(meter)
    attrs = {"agent": "a"}
    for counter in (sup.requests, sup.errors, sup.tokens, sup.spawns, sup.kills, sup.agent_metric,
                    gw.guard_blocks, gw.route_fallbacks):
        counter.add(1, attrs)
    for hist in (sup.duration, sup.execution, sup.egress_connect, gw.duration):
        hist.record(0.01, attrs)
    leaf = SimpleNamespace(usage=lambda: Usage(memory_bytes=1, cpu_usec=1, pids=1))
    pool = SimpleNamespace(name="a", workers=[SimpleNamespace(state="ready", leaf=leaf)])
    telemetry.watch_pools(lambda: [pool], meter)
    from neuroflow.supervisor.events import BUS

    BUS.counts[("a", "memory")] += 0
    text = generate_latest(registry).decode()
    provider.shutdown()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


#: Metrics of neuroflow-ebpf, another process (ebpf/metrics.py).
EBPF_METRICS = {"neuroflow_agent_syscalls_total", "neuroflow_agent_tcp_connect_seconds_bucket"}


def test_dashboard_imports_and_uses_only_exported_metrics() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "neuroflow.json").read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    exported = _exported_names() | EBPF_METRICS
    assert "neuroflow_workers" in exported and "neuroflow_agent_cgroup_memory_usage_bytes" in exported
    ids = set()
    for panel in dash["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"]
        for target in panel["targets"]:
            # Metric names only: drop label lists (by (...), {...}) first.
            expr = re.sub(r"\{[^}]*\}|\b(?:by|without)\s*\([^)]*\)", "", target["expr"])
            names = re.findall(r"\b((?:neuroflow|http)_[a-z0-9_]+)\b", expr)
            assert names, target["expr"]
            for name in names:
                assert name in exported, f"panel {panel['title']!r}: {name} is not exported"
    text = (ROOT / "deploy" / "prometheus.yml").read_text()
    for target in ("127.0.0.1:8080", "127.0.0.1:9465", "127.0.0.1:9466"):
        assert target in text


# -- head sampling ---------------------------------------------------------------------------------
def test_traceparent_parsing() -> None:
    assert otel.parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (TRACE, PARENT, True)
    assert otel.parse_traceparent(f"00-{TRACE.upper()}-{PARENT}-00") == (TRACE, PARENT, False)
    for bad in ("", "00-xyz", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE[:-1]}g-{PARENT}-01"):
        assert otel.parse_traceparent(bad) is None, bad
    # A later version may append fields.
    assert otel.parse_traceparent(f"01-{TRACE}-{PARENT}-01-future") == (TRACE, PARENT, True)


def test_sampling_follows_the_parent_and_the_ratio_at_the_root() -> None:
    sampling = otel.Sampling(0.0)
    assert sampling.decide(f"00-{TRACE}-{PARENT}-01") == (True, TRACE, PARENT)  # the parent decided
    assert sampling.decide(f"00-{TRACE}-{PARENT}-00") == (False, TRACE, PARENT)
    sampled, trace_id, parent = sampling.decide(None)
    assert not sampled and len(trace_id) == 32 and int(trace_id, 16) and parent == ""
    assert otel.Sampling(1.0).decide(None) == (True, "", "")  # the root span makes its own trace id
    half = otel.Sampling(0.5)
    share = sum(half.decide("garbage")[0] for _ in range(4000)) / 4000
    assert 0.45 < share < 0.55
    tp = otel.unsampled_traceparent(TRACE)
    assert otel.parse_traceparent(tp)[:1] == (TRACE,) and tp.endswith("-00")


# -- NeuroFlow's own spans and their recorder ------------------------------------------------------
def test_spans_nest_follow_the_remote_parent_and_reach_the_exporter() -> None:
    exporter = InMemorySpanExporter()
    recorder = otel_export.SpanRecorder(exporter, Resource.create({"service.name": "neuroflow-gateway"}),
                                      interval=3600)
    otel.RECORDER[0] = recorder
    try:
        with otel.start_span("root", kind=SpanKind.SERVER, traceparent=f"00-{TRACE}-{PARENT}-01",
                                  sampling=otel.Sampling(0.0)) as root:
            assert otel.current_span() is root and otel.current_trace_id() == TRACE
            with pytest.raises(ValueError), otel.start_span("child", attributes={"n": 1}):
                raise ValueError("no")
        assert otel.current_span() is None and otel.current_trace_id() == ""
        with otel.start_span("outside any request") as nothing:
            assert nothing is otel.NO_SPAN
        recorder.flush()
        child, parent = exporter.get_finished_spans()
    finally:
        otel.RECORDER[0] = None
        recorder.shutdown()
    assert (parent.context.trace_id, parent.parent.span_id, parent.parent.is_remote) == \
        (int(TRACE, 16), int(PARENT, 16), True)
    assert parent.kind is SpanKind.SERVER and parent.resource.attributes["service.name"] == "neuroflow-gateway"
    assert child.parent.span_id == parent.context.span_id and child.attributes["n"] == 1
    assert child.status.status_code is StatusCode.ERROR and child.status.description == "ValueError: no"
    assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time


def test_unsampled_request_has_a_trace_id_but_no_span() -> None:
    with otel.start_span("root", traceparent=f"00-{TRACE}-{PARENT}-00", sampling=otel.Sampling()) as root:
        assert root is otel.NO_SPAN and otel.current_trace_id() == TRACE
        request = wpb.InvokeRequest()
        assert telemetry.start_dispatch("a", "w1", request) is otel.NO_SPAN
        assert (request.trace_id, request.sampled, request.parent_span_id) == (TRACE, False, "")
    assert otel.current_trace_id() == ""


def test_batched_metrics_wait_then_go_a_few_per_loop_turn_and_all_on_flush() -> None:
    import asyncio

    seen: list[int] = []
    batched = otel.Batched(seen.append, delay=0.01, chunk=2)
    batched.add(0)  # no event loop: recorded at once
    assert seen == [0]

    async def run() -> None:
        for n in range(1, 6):
            batched.add(n)
        assert seen == [0]  # nothing on the caller's path
        await asyncio.sleep(0.05)  # after the delay, chunk by chunk
        assert seen == list(range(6))
        for n in range(6, 9):
            batched.add(n)
        batched.flush(2)  # one chunk
        assert seen == list(range(8))
        batched.flush()  # a scrape records the rest
        assert seen == list(range(9))

    asyncio.run(run())
