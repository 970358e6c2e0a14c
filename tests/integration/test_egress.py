"""The egress proxy with a real supervisor: a sandboxed agent reaches an allowed
loopback server through ``context.http`` and nothing else.

The destinations are HTTP servers on the host's 127.0.0.1 (the worker's own
``lo`` is another namespace's: it can reach them only through the proxy).
"""

from __future__ import annotations

import errno
import http.server
import json
import secrets
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from neuroflow.supervisor.traces import read_spans
from tests.httpc import invoke, request
from tests.stack import Stack, cgroup_dirs

pytestmark = pytest.mark.root

AGENTS = Path(__file__).resolve().parent.parent / "agents"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the host: {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    """Two loopback HTTP servers: the first is allowlisted, the second is not."""
    started = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in started]
    for t in threads:
        t.start()
    yield started[0].server_address[1], started[1].server_address[1]
    for s in started:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def net_stack(tmp_path_factory: pytest.TempPathFactory, servers: tuple[int, int]) -> Iterator[Stack]:
    allowed, _ = servers
    src = tmp_path_factory.mktemp("agents")
    netuser = src / "netuser"
    shutil.copytree(AGENTS / "netuser", netuser, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = yaml.safe_load((netuser / "agent.yaml").read_text())
    manifest["network"] = {"allow": [f"127.0.0.1:{allowed}"]}
    (netuser / "agent.yaml").write_text(yaml.safe_dump(manifest))
    # The same code without an allowlist: no proxy, no socket, context.http refuses.
    nonet = src / "nonet"
    shutil.copytree(netuser, nonet)
    manifest.update(name="nonet")
    del manifest["network"]
    (nonet / "agent.yaml").write_text(yaml.safe_dump(manifest))
    workdir = tmp_path_factory.mktemp("egress-stack")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        metrics_port = free.getsockname()[1]
    with Stack(agents=[netuser, nonet], workdir=workdir,
               config={"egress_connect_timeout": "5s", "egress_idle_timeout": "30s",
                       "telemetry": {"metrics_listen": f"127.0.0.1:{metrics_port}"}}) as s:
        s.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield s
    assert cgroup_dirs(s.instance) == [], "the supervisor left cgroups behind"
    assert not list((workdir / "state" / "run" / "egress").glob("*")), "an egress socket folder was left behind"
    shutil.rmtree(workdir / "state", ignore_errors=True)


def _out(stack: Stack, agent: str, value: Any) -> Any:
    status, body = invoke(stack.url, agent, value)
    assert status == 200, body
    return body["output"]


def test_fetch_allowed_and_logged(net_stack: Stack, servers: tuple[int, int]) -> None:
    allowed, _ = servers
    out = _out(net_stack, "netuser", {"op": "fetch", "url": f"http://127.0.0.1:{allowed}/greeting?x=1"})
    assert out == {"status": 200, "body": "hello from the host: /greeting?x=1"}
    log = (net_stack.workdir / "supervisor.log").read_text()
    lines = [json.loads(line) for line in log.splitlines()
             if '"egress connection"' in line and '"netuser"' in line]
    line = next(x for x in lines if x["allowed"])
    assert line["dest"] == f"127.0.0.1:{allowed}" and line["address"] == "127.0.0.1"
    assert line["worker"] and line["worker"].startswith("w"), line  # mapped from SO_PEERCRED
    assert isinstance(line["connect_ms"], float) and line["connect_ms"] >= 0
    assert line["bytes_up"] > 0 and line["bytes_down"] > 0


def test_upstream_connect_is_a_span_of_the_request_and_a_metric(net_stack: Stack, servers: tuple[int, int]) -> None:
    allowed, _ = servers
    dest = f"127.0.0.1:{allowed}"
    trace_id = secrets.token_hex(16)
    status, body, _ = request(f"{net_stack.url}/v1/agents/netuser/invoke", "POST",
                              {"input": {"op": "fetch", "url": f"http://{dest}/traced"}},
                              headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert status == 200 and body["output"]["status"] == 200, body
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = {s["name"]: s for s in read_spans([net_stack.state_dir / "traces"]) if s["trace_id"] == trace_id}
        if {"supervisor dispatch", f"egress CONNECT {dest}"} <= set(spans):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no egress span in the request's trace: {sorted(spans)}")
    egress, dispatch = spans[f"egress CONNECT {dest}"], spans["supervisor dispatch"]
    assert egress["parent_span_id"] == dispatch["span_id"] and egress["kind"] == "CLIENT", egress
    assert egress["status"] == "UNSET" and egress["service"] == "neuroflow-supervisor"
    assert egress["attributes"] == {"server.address": "127.0.0.1", "server.port": allowed,
                                    "network.peer.address": "127.0.0.1", "neuroflow.agent": "netuser",
                                    "neuroflow.egress.method": "CONNECT"}
    assert (dispatch["start_unix_nano"] <= egress["start_unix_nano"] < egress["end_unix_nano"]
            <= dispatch["end_unix_nano"])
    with urllib.request.urlopen(f"http://127.0.0.1:{net_stack.metrics_port}/metrics", timeout=10) as resp:  # type: ignore[attr-defined]
        text = resp.read().decode()
    assert (f'neuroflow_agent_egress_connect_duration_seconds_count{{agent="netuser",destination="{dest}",'
            'outcome="ok"}') in text, text


def test_not_allowlisted_is_refused(net_stack: Stack, servers: tuple[int, int]) -> None:
    _, other = servers
    out = _out(net_stack, "netuser", {"op": "fetch_error", "url": f"http://127.0.0.1:{other}/"})
    assert out["type"] == "ConnectError"
    assert out["error"] == f"egress_denied: 127.0.0.1:{other} is not in agent netuser's network allowlist"
    out = _out(net_stack, "netuser", {"op": "fetch_error", "url": "https://example.com/"})
    assert out["error"].startswith("egress_denied: example.com:443 is not in agent netuser's")


def test_no_dns_and_no_inet_sockets_inside(net_stack: Stack) -> None:
    dns = _out(net_stack, "netuser", {"op": "dns"})
    assert dns["ok"] is False and dns["type"] == "gaierror", dns
    for op in ("inet", "inet6"):
        out = _out(net_stack, "netuser", {"op": op})
        assert out["ok"] is False and out["errno"] == errno.EAFNOSUPPORT, out


def test_socket_is_the_agents_on_a_read_only_mount(net_stack: Stack) -> None:
    out = _out(net_stack, "netuser", {"op": "socket"})
    assert out["sock"] is True and out["mode"] == "0o600" and out["owner"] is True
    assert out["write"]["ok"] is False and out["write"]["errno"] in (errno.EROFS, errno.EACCES), out


def test_agent_without_allowlist(net_stack: Stack, servers: tuple[int, int]) -> None:
    allowed, _ = servers
    status, body = invoke(net_stack.url, "nonet", {"op": "fetch", "url": f"http://127.0.0.1:{allowed}/"})
    assert status == 422, body
    assert body["error"]["code"] == "egress_disabled"
    assert body["error"]["message"] == "egress_disabled: agent nonet has no network allowlist in agent.yaml"
    folders = [p.name for p in (net_stack.state_dir / "run" / "egress").iterdir()]
    assert folders and all(name.startswith("netuser.") for name in folders), folders
