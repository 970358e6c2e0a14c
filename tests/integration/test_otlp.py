"""OTLP export to a collector, for real: the gateway and the supervisor send one
request's spans and their metrics to a receiver speaking OTLP over gRPC, then
over HTTP (protobuf), on loopback.

The receivers are OpenTelemetry's own generated services and messages
(``opentelemetry-proto``), so what arrives is decoded exactly as a collector
would decode it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb, metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb, trace_service_pb2_grpc as tgrpc

from tests.conftest import EXAMPLES
from tests.httpc import request
from tests.stack import Stack

pytestmark = pytest.mark.root

TRACE_ID = "5b8efff798038103d269b633813fc60c"
PARENT = "eee19b7ec3c1b174"


class Received:
    """What a receiver decoded: (service.name, span name, hex trace id) and (service.name, metric name)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: set[tuple[str, str, str]] = set()
        self.metrics: set[tuple[str, str]] = set()

    @staticmethod
    def _service(resource: object) -> str:
        return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")  # type: ignore[attr-defined]

    def traces(self, req: tpb.ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in req.resource_spans:
                service = self._service(rs.resource)
                for ss in rs.scope_spans:
                    self.spans.update((service, s.name, s.trace_id.hex()) for s in ss.spans)

    def metric(self, req: mpb.ExportMetricsServiceRequest) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                service = self._service(rm.resource)
                for sm in rm.scope_metrics:
                    self.metrics.update((service, m.name) for m in sm.metrics)

    def wait(self, check: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check(self):  # type: ignore[operator]
                    return
            time.sleep(0.1)
        raise AssertionError(f"not received in {timeout} s: spans {sorted(self.spans)}, metrics {sorted(self.metrics)}")


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    got = Received()

    class Traces(tgrpc.TraceServiceServicer):
        def Export(self, req, context):
            got.traces(req)
            return tpb.ExportTraceServiceResponse()

    class Metrics(mgrpc.MetricsServiceServicer):
        def Export(self, req, context):
            got.metric(req)
            return mpb.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(4))
    tgrpc.add_TraceServiceServicer_to_server(Traces(), server)
    mgrpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        server.stop(0).wait()


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    got = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Type") != "application/x-protobuf" or \
                    self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_error(400)
                return
            if self.path == "/v1/traces":
                got.traces(tpb.ExportTraceServiceRequest.FromString(body))
                reply = tpb.ExportTraceServiceResponse().SerializeToString()
            else:
                got.metric(mpb.ExportMetricsServiceRequest.FromString(body))
                reply = mpb.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _one_traced_request(endpoint: str, protocol: str, got: Received, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The periodic metric export runs every 60 s by default; the SDK reads this (ms).
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    config = {"telemetry": {"otlp_endpoint": endpoint, "otlp_protocol": protocol, "metrics_listen": 0}}
    with Stack(agents=[EXAMPLES / "echo"], workdir=tmp_path, config=config,
               gateway_args=("--no-router", "--otlp-endpoint", endpoint, "--otlp-protocol", protocol)) as stack:
        status, body, _ = request(f"{stack.url}/v1/agents/echo/invoke", "POST", {"input": "otlp"},
                                  headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"})
        assert status == 200 and body["trace_id"] == TRACE_ID, body
        want = {("neuroflow-gateway", "POST /v1/agents/{name}/invoke"),
                ("neuroflow-gateway", "neuroflow.v1.Supervisor/InvokeStream"),
                ("neuroflow-supervisor", "supervisor dispatch"), ("neuroflow-worker", "worker handle")}
        got.wait(lambda r: want <= {(svc, name) for svc, name, tid in r.spans if tid == TRACE_ID})
        got.wait(lambda r: {("neuroflow-supervisor", "neuroflow.agent.requests"),
                            ("neuroflow-gateway", "http.server.request.duration")} <= r.metrics)
    # Nothing was written to local trace files: with an endpoint, spans go there only.
    assert not list((tmp_path / "state" / "traces").glob("*.jsonl"))


def test_otlp_grpc(grpc_receiver: tuple[str, Received], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _one_traced_request(grpc_receiver[0], "grpc", grpc_receiver[1], tmp_path, monkeypatch)


def test_otlp_http_protobuf(http_receiver: tuple[str, Received], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    _one_traced_request(http_receiver[0], "http/protobuf", http_receiver[1], tmp_path, monkeypatch)
