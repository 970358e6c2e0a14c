"""The HTTP layer against a fake supervisor client (the real hop is in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from neuroflow.gateway.app import GatewayConfig, make_app
from neuroflow.gateway.client import SupervisorUnavailable
from neuroflow.v1 import common_pb2, supervisor_pb2 as pb


class FakeClient:
    target = "fake"

    def __init__(self, reply: pb.InvokeReply | Exception) -> None:
        self.reply = reply
        self.calls: list[pb.InvokeCall] = []
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.connected.set()

    async def close(self) -> None:
        pass

    async def invoke(self, call: pb.InvokeCall, timeout: float) -> pb.InvokeReply:
        self.calls.append(call)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def run(reply: pb.InvokeReply | Exception, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any, FakeClient]:
    fake = FakeClient(reply)

    async def go() -> tuple[int, Any, Any]:
        app = make_app(GatewayConfig(max_body=1000), fake)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, **kwargs)
            return resp.status, await resp.json(), resp.headers

    status, body, headers = asyncio.run(go())
    return status, body, headers, fake


OK = pb.InvokeReply(agent="echo", version="1", output_json=b'{"a": [1, 2]}', worker_id="w1")


def test_success_splices_output_and_passes_fields() -> None:
    status, body, headers, fake = run(OK, "POST", "/v1/agents/echo/invoke",
                                      json={"input": "hi", "session": "s", "timeout_ms": 1500},
                                      headers={"X-Request-Id": "abc"})
    assert status == 200 and body["output"] == {"a": [1, 2]} and body["request_id"] == "abc"
    assert headers["X-Request-Id"] == "abc"
    call = fake.calls[0]
    assert (call.agent, call.input_json, call.session, call.request_id, call.timeout_ms) == (
        "echo", b'"hi"', "s", "abc", 1500)


def test_error_codes_map_to_statuses() -> None:
    for code, want in [("deadline_exceeded", 504), ("worker_crashed", 502), ("overloaded", 503),
                       ("agent_not_found", 404), ("custom_refusal", 422)]:
        reply = pb.InvokeReply(error=common_pb2.Error(code=code, message="why"))
        status, body, _, _ = run(reply, "POST", "/v1/agents/echo/invoke", json={"input": 1})
        assert status == want and body["error"] == {"code": code, "message": "why"}


def test_supervisor_unavailable_is_503() -> None:
    status, body, _, _ = run(SupervisorUnavailable("down"), "POST", "/v1/agents/echo/invoke", json={"input": 1})
    assert status == 503 and body["error"]["code"] == "supervisor_unavailable"


def test_body_limits_and_validation() -> None:
    status, body, _, fake = run(OK, "POST", "/v1/agents/echo/invoke", data=b'{"input": "' + b"x" * 2000 + b'"}')
    assert status == 413 and body["error"]["code"] == "payload_too_large" and not fake.calls
    status, body, _, _ = run(OK, "POST", "/v1/agents/echo/invoke", json={"input": 1, "session": 5})
    assert status == 400 and "session" in body["error"]["message"]
    status, body, headers, _ = run(OK, "POST", "/v1/agents/echo/invoke", json=[1],
                                   headers={"X-Request-Id": "bad id with spaces"})
    assert status == 400 and headers["X-Request-Id"] != "bad id with spaces"
