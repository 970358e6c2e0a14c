"""The semantic router behind the real gateway: /v1/route, /v1/invoke, the bad-case log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.httpc import request
from tests.stack import Stack

pytestmark = [pytest.mark.root, pytest.mark.model]
NFCTL = Path(sys.executable).parent / "nfctl"


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("routed")
    args = ("--default-agent", "echo", "--route-log", str(workdir / "route-log.jsonl"))
    with Stack(agents=[EXAMPLES / "echo", EXAMPLES / "calc"], workdir=workdir, gateway_args=args) as s:
        deadline = time.monotonic() + 120  # the model loads, then the index is built
        while request(f"{s.url}/v1/route", "POST", {"query": "hello"})[0] != 200:
            assert time.monotonic() < deadline, s.log_text("gateway")
            time.sleep(0.2)
        yield s


def route(stack: Stack, query: str) -> dict:
    status, body, _ = request(f"{stack.url}/v1/route", "POST", {"query": query})
    assert status == 200, body
    return body


def test_routes_english_and_chinese(routed: Stack) -> None:
    for query in ("what is 17 times 23", "计算一下 45 除以 9 等于多少"):
        decision = route(routed, query)
        assert decision["agent"] == "calc" and not decision["fallback"], decision
        assert decision["candidates"][0]["agent"] == "calc"


def test_off_topic_falls_back_to_the_default_and_is_logged(routed: Stack) -> None:
    decision = route(routed, "who painted the Mona Lisa")
    assert decision["agent"] == "echo" and decision["fallback"] is True
    status, body, _ = request(f"{routed.url}/v1/route/log?limit=5")
    assert status == 200 and any(c["query"] == "who painted the Mona Lisa" for c in body["cases"])


def test_route_then_invoke(routed: Stack) -> None:
    status, body, _ = request(f"{routed.url}/v1/invoke", "POST",
                              {"query": "please calculate this for me", "input": "6 * 7"})
    assert status == 200, body
    assert body["agent"] == "calc" and body["output"]["result"] == 42
    assert body["route"]["agent"] == "calc"


def test_bad_route_requests(routed: Stack) -> None:
    status, body, _ = request(f"{routed.url}/v1/route", "POST", {"query": "  "})
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_nfctl_route(routed: Stack) -> None:
    out = subprocess.run([str(NFCTL), "--gateway", routed.url, "--json", "route", "what is 2 plus 2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["agent"] == "calc"
    out = subprocess.run([str(NFCTL), "--gateway", routed.url, "route-log"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_no_default_agent_answers_422(tmp_path: Path) -> None:
    with Stack(agents=[EXAMPLES / "calc"], workdir=tmp_path, gateway_args=()) as s:
        deadline = time.monotonic() + 120
        while (r := request(f"{s.url}/v1/invoke", "POST", {"query": "who painted the Mona Lisa"}))[0] == 503:
            assert time.monotonic() < deadline, s.log_text("gateway")
            time.sleep(0.2)
        status, body, _ = r
        assert status == 422 and body["error"]["code"] == "no_agent_fits"
        assert body["route"]["fallback"] is True
