"""The servers under test: each starts, yields its invoke URL, and is stopped after.

- ``plain``: :mod:`bench.latency.plain_server` as a subprocess.
- ``bwrap``: :mod:`bench.latency.bwrap_server` as a subprocess.
- ``neuroflow``: the full stack (gateway, supervisor, sandboxed workers) from
  ``tests/stack.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.latency.echo_call import ECHO_DIR, REPO

INVOKE_PATH = "/v1/agents/echo/invoke"
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


class TargetError(RuntimeError):
    """A target could not start, or answered the check request wrongly."""


@dataclass(frozen=True, slots=True)
class Target:
    """How to start one server and how long to load it."""

    name: str
    start: Callable[[], AbstractContextManager[str]]  # yields the base URL
    short: bool  # True: use the short (bwrap) durations


@contextlib.contextmanager
def server_process(module: str) -> Iterator[str]:
    """Run ``python -m module``; yield its URL once it prints ``PORT <n>``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        yield f"http://127.0.0.1:{_read_port(proc, module)}"
    finally:
        _stop(proc)


def _read_port(proc: subprocess.Popen[str], module: str) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([proc.stdout], [], [], left)
        if not readable:
            break
        line = proc.stdout.readline()
        if not line:
            raise TargetError(f"{module} exited ({proc.wait()}) before printing its port")
        if line.startswith("PORT "):
            return int(line.split()[1])
    raise TargetError(f"{module} printed no port within {STARTUP_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def neuroflow_stack() -> Iterator[str]:
    """The whole NeuroFlow stack serving only the echo agent, in a temporary state folder."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from tests.stack import Stack
    except ImportError as exc:
        raise TargetError(
            f"cannot import tests.stack ({exc}); run with --targets plain,bwrap until it exists"
        ) from exc
    # The gateway as deployed (guard on, every request traced to local trace files), unless
    # NEUROFLOW_BENCH_GATEWAY_ARGS says otherwise, e.g. "--no-router --no-guard" to measure the
    # path without the guard, or "--no-router --trace-sample 0.01" to record 1 % of the traces.
    args = tuple(os.environ.get("NEUROFLOW_BENCH_GATEWAY_ARGS", "--no-router").split())
    with tempfile.TemporaryDirectory(prefix="nf-bench-") as tmp:
        if "--trace-dir" not in args:
            args += ("--trace-dir", str(Path(tmp) / "gateway-traces"))
        ratio = args[args.index("--trace-sample") + 1] if "--trace-sample" in args else "1"
        config = {"telemetry": {"sample_ratio": float(ratio), "metrics_listen": "127.0.0.1:0"}}
        with Stack(agents=[ECHO_DIR], workdir=Path(tmp), gateway_args=args, config=config) as stack:
            yield str(stack.url)


TARGETS: dict[str, Target] = {
    "plain": Target("plain", lambda: server_process("bench.latency.plain_server"), short=False),
    "bwrap": Target("bwrap", lambda: server_process("bench.latency.bwrap_server"), short=True),
    "neuroflow": Target("neuroflow", neuroflow_stack, short=False),
}


def check_reply(url: str, text: str = "hello") -> None:
    """POST one request; raise :class:`TargetError` unless it is a 200 echoing ``text``."""
    body = json.dumps({"input": text}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT_S) as reply:
            status, payload = reply.status, reply.read()
    except OSError as exc:  # urllib.error.HTTPError and URLError are OSErrors
        raise TargetError(f"POST {url} failed: {exc}") from exc
    try:
        output = json.loads(payload).get("output")
    except (ValueError, AttributeError) as exc:
        raise TargetError(f"POST {url}: reply is not a JSON object: {payload[:200]!r}") from exc
    if status != 200 or output != text:
        raise TargetError(
            f"POST {url}: expected 200 with output {text!r}, got {status} {payload!r}"
        )
