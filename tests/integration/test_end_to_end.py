"""curl → gateway → gRPC → supervisor → sandboxed Python → response, for real."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.httpc import invoke, request
from tests.stack import Stack

pytestmark = pytest.mark.root

NFCTL = Path(sys.executable).parent / "nfctl"


def test_echo_round_trip(stack: Stack) -> None:
    status, body, headers = request(f"{stack.url}/v1/agents/echo/invoke", "POST",
                                    {"input": {"text": "hello", "n": [1, 2]}, "session": "s1"},
                                    headers={"X-Request-Id": "req-123"})
    assert status == 200, body
    assert body["output"] == {"text": "hello", "n": [1, 2]}
    assert body["agent"] == "echo" and body["version"] == "1.0"
    assert body["request_id"] == "req-123" == headers["x-request-id"]
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_calc_and_agent_errors(stack: Stack) -> None:
    status, body = invoke(stack.url, "calc", "(2 + 3) * 7")
    assert status == 200 and body["output"] == {"expression": "(2 + 3) * 7", "result": 35}
    status, body = invoke(stack.url, "calc", {"expression": "2 ** 10"})
    assert status == 200 and body["output"]["result"] == 1024
    status, body = invoke(stack.url, "calc", "1 / 0")
    assert status == 422 and body["error"]["code"] == "division_by_zero"


def test_usage_logs_and_config_reach_the_supervisor(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "usage"})
    assert status == 200, body
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    status, body = invoke(stack.url, "lab", {"op": "whoami"})
    assert body["output"]["config"] == {"greeting": "hi"}
    log = stack.log_text("supervisor")
    line = next(json.loads(line) for line in log.splitlines() if '"used tokens"' in line)
    assert line["agent"] == "lab" and line["n"] == "42" and line["request_id"]


def test_prints_go_to_the_log_not_the_channel(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "print"})
    assert (status, body["output"]) == (200, "printed")
    log = stack.log_text("supervisor")
    assert "garbage" in log and "and on stderr" in log and "raw bytes on fd 1" in log


def test_http_errors_are_json_with_stable_codes(stack: Stack) -> None:
    url = f"{stack.url}/v1/agents/echo/invoke"
    cases = [
        (request(url, "POST", raw=b"{not json"), 400, "bad_request"),
        (request(url, "POST", body={"no_input": 1}), 400, "bad_request"),
        (request(url, "POST", body={"input": 1, "timeout_ms": -5}), 400, "bad_request"),
        (request(f"{stack.url}/v1/agents/nope/invoke", "POST", body={"input": 1}), 404, "agent_not_found"),
        (request(f"{stack.url}/v1/agents/Bad..Name/invoke", "POST", body={"input": 1}), 404, "agent_not_found"),
        (request(url, "POST", raw=b'{"input": "' + b"x" * (2 * 1024 * 1024) + b'"}'), 413, "payload_too_large"),
        (request(f"{stack.url}/v1/nothing"), 404, "not_found"),
        (request(url, "GET"), 405, "method_not_allowed"),
    ]
    for (status, body, headers), want_status, want_code in cases:
        assert status == want_status, body
        assert body["error"]["code"] == want_code
        assert body["error"]["message"]
        assert headers["x-request-id"] == body["request_id"]


def test_agent_exception_is_500_and_worker_survives(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "raise"})
    assert status == 500 and body["error"]["code"] == "agent_error"
    assert "ValueError: the agent failed on purpose" in body["error"]["message"]
    status, body = invoke(stack.url, "lab", {"op": "refuse"})
    assert status == 422 and body["error"] == {"code": "not_today", "message": "the agent refuses this request"}
    status, body = invoke(stack.url, "lab", {"op": "echo", "value": 5})
    assert (status, body["output"]) == (200, 5)


def test_broken_and_invalid_agents_fail_alone(stack: Stack) -> None:
    status, body = invoke(stack.url, "broken", 1)
    assert status == 503 and body["error"]["code"] == "agent_unavailable"
    assert "RuntimeError: this agent fails at import time" in body["error"]["message"]
    status, body = invoke(stack.url, "badmanifest", 1)
    assert status == 503 and body["error"]["code"] == "agent_unavailable"
    assert "agent.yaml: limits.memory: expected a size" in body["error"]["message"]
    agents = {a["name"]: a for a in request(f"{stack.url}/v1/agents")[1]["agents"]}
    assert agents["echo"]["state"] == "ready" and agents["calc"]["state"] == "ready"
    assert agents["broken"]["state"] == "failed"
    bad = agents["badmanifest"]
    assert bad["state"] == "failed" and "agent.yaml: limits.memory" in bad["detail"]


def test_hundred_concurrent_requests_all_answered(stack: Stack) -> None:
    async def run() -> list[tuple[int, object]]:
        async with aiohttp.ClientSession() as session:
            async def one(i: int) -> tuple[int, object]:
                agent, value = ("echo", i) if i % 2 else ("lab", {"op": "echo", "value": i})
                async with session.post(f"{stack.url}/v1/agents/{agent}/invoke", json={"input": value}) as r:
                    return r.status, (await r.json())["output"]
            return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(run())
    assert results == [(200, i) for i in range(100)]


def test_readyz_healthz_and_agents(stack: Stack) -> None:
    assert request(f"{stack.url}/healthz")[0] == 200
    status, body, _ = request(f"{stack.url}/readyz")
    assert status == 200 and {"echo", "calc", "lab"} <= set(body["agents_ready"])


def test_nfctl(stack: Stack) -> None:
    def nfctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(NFCTL), "--socket", str(stack.socket), *args],
                              capture_output=True, text=True, timeout=60)

    out = nfctl("status")
    assert out.returncode == 0 and "cgroups" in out.stdout and "echo" in out.stdout
    out = nfctl("--json", "status")
    assert json.loads(out.stdout)["cgroup"]["backend"] in ("v1", "v2", "hybrid")
    out = nfctl("agents")
    assert out.returncode == 0 and "calc" in out.stdout
    out = nfctl("--json", "invoke", "calc", '"6*7"')
    assert out.returncode == 0 and json.loads(out.stdout)["output"]["result"] == 42
    out = nfctl("invoke", "calc", '"6*"')
    assert out.returncode == 1 and "syntax_error" in out.stderr
    out = subprocess.run([str(NFCTL), "--socket", "/nonexistent.sock", "status"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "cannot reach the supervisor" in out.stderr
