"""Start, stop, restart: draining, cleanup, stale-state recovery, reconnection."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, TEST_AGENTS
from tests.httpc import invoke, request
from tests.stack import Stack, cgroup_dirs, delegated_scope, pid_alive

pytestmark = pytest.mark.root


def test_sigterm_drains_in_flight_requests_and_removes_everything(tmp_path: Path) -> None:
    with Stack(agents=[EXAMPLES / "echo", TEST_AGENTS / "lab"], workdir=tmp_path) as stack:
        workers = stack.worker_pids("lab") + stack.worker_pids("echo")
        assert workers
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(invoke, stack.url, "lab", {"op": "sleep", "s": 1.5})
            time.sleep(0.3)
            assert stack.stop_supervisor(signal.SIGTERM) == 0
            status, body = slow.result(timeout=30)
        assert (status, body["output"]) == (200, "slept")
        assert not any(pid_alive(p) for p in workers)
        assert cgroup_dirs(stack.instance) == []
        assert not stack.socket.exists()
        # With the supervisor gone the gateway answers 503, it does not hang.
        status, body = invoke(stack.url, "echo", 1)
        assert status == 503 and body["error"]["code"] == "supervisor_unavailable"
        assert request(f"{stack.url}/readyz")[0] == 503


def test_gateway_reconnects_when_the_supervisor_restarts(tmp_path: Path) -> None:
    with Stack(agents=[EXAMPLES / "echo"], workdir=tmp_path) as stack:
        assert invoke(stack.url, "echo", 1)[0] == 200
        stack.stop_supervisor()
        stack.start_supervisor()
        stack.wait_ready()
        assert invoke(stack.url, "echo", 2)[0] == 200


def test_crash_leftovers_are_reclaimed_at_start(tmp_path: Path) -> None:
    stack = Stack(agents=[EXAMPLES / "echo"], workdir=tmp_path)
    try:
        stack.start_supervisor()
        workers = stack.worker_pids("echo")
        # A crash: SIGKILL leaves the sandboxes' cgroups and socket behind. The
        # launchers die with it (pdeathsig), and with them every worker.
        stack.stop_supervisor(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in workers), "workers outlived their supervisor"
        if delegated_scope("x"):
            # Under systemd the supervisor ran in a scope of its own, whose
            # cgroups systemd removes once it has seen it die; nothing is left
            # to reclaim.
            deadline = time.monotonic() + 10
            while cgroup_dirs(stack.instance) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert cgroup_dirs(stack.instance) == []
        else:
            assert cgroup_dirs(stack.instance), "expected stale cgroups after SIGKILL"
        stack.start_supervisor()  # same instance name: reclaims, then starts clean
        stack.start_gateway()
        assert invoke(stack.url, "echo", "back")[0] == 200
    finally:
        stack.stop()
    assert cgroup_dirs(stack.instance) == []


def test_bad_config_fails_at_start_naming_file_and_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "supervisor.yaml"
    config.write_text("defaults:\n  memory: plenty\n")
    exe = Path(sys.executable).parent / "neuroflow-supervisor"
    out = subprocess.run([str(exe), "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{config}: defaults.memory: expected a size" in out.stderr
    assert "Traceback" not in out.stderr
