"""Traces and metrics through a real gateway → supervisor → sandboxed worker.

One request with a client ``traceparent`` must come back as one span tree in
the local trace files: the gateway's HTTP server span → ``guard input`` → the
gRPC client span → the supervisor's server span → ``supervisor dispatch`` →
``worker handle`` → the agent's own nested spans, all in the client's trace,
each linked to its parent — and ``nfctl trace`` must render it. Both
``/metrics`` endpoints must expose the request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuroflow.supervisor.traces import read_spans, trace_tree
from tests.httpc import request
from tests.stack import BIN, Stack, cgroup_dirs

pytestmark = [pytest.mark.root, pytest.mark.slow]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

AGENT_YAML = """\
name: traced
version: "1.0"
description: Records child spans and reports tokens, for the telemetry tests.
entry: agent:Traced
skills: [trace things]
limits: {memory: 128MiB, timeout: 10s, concurrency: 4}
pool: {min: 1, max: 2}
"""

AGENT_PY = '''\
from neuroflow.sdk import Agent, Context, Request, Response


class Traced(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        with context.tracer.start_as_current_span("plan", attributes={"steps": 2}) as plan:
            with context.tracer.start_as_current_span("lookup") as lookup:
                lookup.set_attribute("hits", 3)
            plan.set_attribute("done", True)
        context.report_usage(prompt_tokens=7, completion_tokens=5, model="test")
        context.log("handled")
        if request.input == "pii":
            context.log("reached alice@example.com", card="4111 1111 1111 1111")
            print("ssn 536-22-8726 on stdout", flush=True)
        return Response(output={"ok": request.input})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("telemetry")
    agent = workdir / "src" / "traced"
    agent.mkdir(parents=True)
    (agent / "agent.yaml").write_text(AGENT_YAML)
    (agent / "agent.py").write_text(AGENT_PY)
    port = _free_port()
    config = {"telemetry": {"metrics_listen": f"127.0.0.1:{port}", "trace_dir": str(workdir / "traces")}}
    stack = Stack(agents=[agent], workdir=workdir, config=config,
                  gateway_args=("--no-router", "--trace-dir", str(workdir / "gateway-traces")))
    stack.metrics_port = port  # type: ignore[attr-defined]
    with stack:
        yield stack
    assert cgroup_dirs(stack.instance) == [], "the supervisor left cgroups behind"


def _wait_tree(dirs: list[Path], trace_id: str, want: int, timeout: float = 15) -> list[tuple[int, dict]]:
    """The trace's tree once ``want`` spans are on disk (export is batched every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        tree = trace_tree(read_spans(dirs), trace_id)
        if len(tree) >= want or time.monotonic() > deadline:
            return tree
        time.sleep(0.2)


def test_one_request_is_one_span_tree(tstack: Stack) -> None:
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    status, body, headers = request(f"{tstack.url}/v1/agents/traced/invoke", "POST", {"input": "hi"},
                                    headers={"traceparent": traceparent})
    assert status == 200, body
    assert body["output"] == {"ok": "hi"}
    assert body["trace_id"] == TRACE_ID
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-")

    dirs = [tstack.workdir / "traces", tstack.workdir / "gateway-traces"]
    tree = _wait_tree(dirs, TRACE_ID, want=9)
    spans = [s for _, s in tree]
    assert {s["trace_id"] for s in spans} == {TRACE_ID}
    names = [(depth, s["name"]) for depth, s in tree]
    assert names == [
        (0, "POST /v1/agents/{name}/invoke"),
        (1, "guard input"),
        (1, "neuroflow.v1.Supervisor/InvokeStream"),
        (2, "neuroflow.v1.Supervisor/InvokeStream"),
        (3, "supervisor dispatch"),
        (4, "worker handle"),
        (5, "plan"),
        (6, "lookup"),
        (1, "guard output"),
    ], names
    server, guard_in, client, sup, dispatch, handle, plan, lookup, guard_out = spans
    assert server["parent_span_id"] == CLIENT_SPAN, "the gateway's span must be a child of the client's"
    assert server["kind"] == "SERVER" and server["service"] == "neuroflow-gateway"
    assert server["attributes"]["http.route"] == "/v1/agents/{name}/invoke"
    assert server["attributes"]["http.request.method"] == "POST"
    assert server["attributes"]["http.response.status_code"] == 200
    assert (client["kind"], client["service"], client["attributes"]["rpc.system"]) == \
        ("CLIENT", "neuroflow-gateway", "grpc")
    assert (sup["kind"], sup["service"]) == ("SERVER", "neuroflow-supervisor")
    parents = [(server, guard_in), (server, client), (client, sup), (sup, dispatch), (dispatch, handle),
               (handle, plan), (plan, lookup), (server, guard_out)]
    for parent, child in parents:
        assert child["parent_span_id"] == parent["span_id"], (parent["name"], child["name"])
        # Children lie within their parents' time (one host clock for gateway, supervisor and worker).
        assert parent["start_unix_nano"] <= child["start_unix_nano"] <= child["end_unix_nano"] \
            <= parent["end_unix_nano"], (parent["name"], child["name"])
    assert (handle["service"], handle["attributes"]["neuroflow.agent"]) == ("neuroflow-worker", "traced")
    assert (dispatch["service"], lookup["service"]) == ("neuroflow-supervisor", "neuroflow-worker")
    assert lookup["attributes"]["hits"] == 3
    assert plan["attributes"]["steps"] == 2 and plan["attributes"]["done"] is True

    out = subprocess.run([str(BIN / "nfctl"), "--socket", str(tstack.socket), "trace", TRACE_ID,
                          "--dir", str(dirs[0]), "--dir", str(dirs[1])],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"trace {TRACE_ID}"
    assert [line.split("  ")[-2].strip() if "(" in line else "" for line in lines[1:]] == \
        [name for _, name in names]
    assert all(" ms " in line for line in lines[1:])
    last = subprocess.run([str(BIN / "nfctl"), "--socket", str(tstack.socket), "--json", "trace", "--last",
                           "--dir", str(dirs[0]), "--dir", str(dirs[1])],
                          capture_output=True, text=True, timeout=30)
    assert last.returncode == 0, last.stderr
    assert {s["trace_id"] for s in json.loads(last.stdout)} == {TRACE_ID}


def test_trace_id_in_error_bodies_and_logs(tstack: Stack) -> None:
    status, body, headers = request(f"{tstack.url}/v1/agents/nosuch/invoke", "POST", {"input": 1})
    assert status == 404
    trace_id = body["trace_id"]
    assert len(trace_id) == 32 and headers["traceparent"].split("-")[1] == trace_id
    status, body, _ = request(f"{tstack.url}/healthz")
    assert status == 200 and len(body["trace_id"]) == 32
    # The worker's log line of the traced request carries its trace id.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in tstack.log_text("supervisor").splitlines() if x.startswith("{")]
        handled = [x for x in lines if x.get("msg") == "handled"]
        if handled:
            break
        time.sleep(0.2)
    assert handled and handled[0]["trace_id"] == TRACE_ID and handled[0]["agent"] == "traced"
    failed = [x for x in lines if x.get("msg") == "request failed" and x.get("code") == "agent_not_found"]
    assert failed and failed[0]["trace_id"] == trace_id


def test_agent_log_lines_are_logged_without_pii(tstack: Stack) -> None:
    status, body, _ = request(f"{tstack.url}/v1/agents/traced/invoke", "POST", {"input": "pii"})
    assert status == 200, body
    want = {"reached <EMAIL>", "ssn ***-**-8726 on stdout"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = tstack.log_text("supervisor")
        lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
        if want <= {x.get("msg") for x in lines if x.get("agent") == "traced"}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the agent's redacted lines were not logged:\n{text[-3000:]}")
    reached = next(x for x in lines if x.get("msg") == "reached <EMAIL>")
    assert reached["card"] == "**** **** **** 1111" and reached["trace_id"] == body["trace_id"]
    for raw in ("alice@example.com", "4111 1111 1111 1111", "536-22-8726"):
        assert raw not in text


def test_unsampled_request_records_no_span_but_keeps_its_trace_id(tstack: Stack) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    status, body, headers = request(f"{tstack.url}/v1/agents/traced/invoke", "POST", {"input": "quiet"},
                                    headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"})
    assert status == 200 and body["trace_id"] == trace_id, body
    assert headers["traceparent"].startswith(f"00-{trace_id}-") and headers["traceparent"].endswith("-00")
    # Its log lines (the worker's "handled" among them) name the trace ...
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in tstack.log_text("supervisor").splitlines() if x.startswith("{")]
        if any(x.get("msg") == "handled" and x.get("trace_id") == trace_id for x in lines):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the unsampled request's worker log line has no trace id")
    # ... but no process recorded a span of it (a sampled request sent after it is on disk first).
    probe = "1" * 32
    request(f"{tstack.url}/v1/agents/traced/invoke", "POST", {"input": "probe"},
            headers={"traceparent": f"00-{probe}-{CLIENT_SPAN}-01"})
    dirs = [tstack.workdir / "traces", tstack.workdir / "gateway-traces"]
    assert len(_wait_tree(dirs, probe, want=9)) == 9
    assert [s for s in read_spans(dirs) if s["trace_id"] == trace_id] == []


def _scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return str(resp.read().decode())


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def test_metrics_on_both_endpoints(tstack: Stack) -> None:
    for _ in range(3):
        assert request(f"{tstack.url}/v1/agents/traced/invoke", "POST", {"input": 2})[0] == 200
    sup = _scrape(f"http://127.0.0.1:{tstack.metrics_port}/metrics")  # type: ignore[attr-defined]
    (tstack.workdir / "metrics-supervisor.txt").write_text(sup)  # for a failing run's reader
    assert _value(sup, "neuroflow_agent_requests_total", agent="traced") >= 3
    assert _value(sup, "neuroflow_agent_request_duration_seconds_count", agent="traced") >= 3
    assert _value(sup, "neuroflow_agent_execution_time_seconds_count", agent="traced") >= 3
    assert _value(sup, "neuroflow_agent_tokens_total", agent="traced", kind="prompt") >= 21
    assert _value(sup, "neuroflow_agent_errors_total", code="agent_not_found") >= 1
    assert _value(sup, "neuroflow_worker_spawns_total", agent="traced") >= 1
    assert _value(sup, "neuroflow_workers", agent="traced", state="ready") >= 1
    assert _value(sup, "neuroflow_agent_cgroup_memory_usage_bytes", agent="traced") > 0
    assert _value(sup, "neuroflow_agent_cgroup_pids", agent="traced") >= 1
    gw = _scrape(f"{tstack.url}/metrics")
    assert _value(gw, "http_server_request_duration_seconds_count", http_request_method="POST",
                  http_response_status_code="200", http_route="/v1/agents/{name}/invoke") >= 3


def test_worker_kill_is_counted_by_reason(tstack: Stack, tmp_path: Path) -> None:
    pids = tstack.worker_pids("traced")
    assert pids
    os.kill(pids[0], 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sup = _scrape(f"http://127.0.0.1:{tstack.metrics_port}/metrics")  # type: ignore[attr-defined]
        if _value(sup, "neuroflow_worker_kills_total", agent="traced", reason="crashed") >= 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"no kill counted:\n{sup}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
