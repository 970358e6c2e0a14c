"""Sandbox events: limit breaches and seccomp violations, and the live worker feed.

Each breach must reach three places: the request's error, ``nfctl events`` (the
``Events`` RPC) and the supervisor's log. ``WatchWorkers`` is what
neuroflow-ebpf filters its probes by, so its cgroup ids must be the real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from neuroflow.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc
from tests.conftest import EXAMPLES, TEST_AGENTS
from tests.httpc import invoke
from tests.stack import Stack

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The lab agent once more, under the strict (allow-list) seccomp profile.
    strict = tmp_path_factory.mktemp("strict") / "lab-strict"
    shutil.copytree(TEST_AGENTS / "lab", strict, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = (strict / "agent.yaml").read_text().replace("name: lab\n", "name: lab-strict\n")
    (strict / "agent.yaml").write_text(manifest + "seccomp: strict\n")
    with Stack(agents=[EXAMPLES / "echo", TEST_AGENTS / "lab", strict], workdir=tmp_path_factory.mktemp("events"),
               config={"limits_poll": 0.2}) as s:
        yield s


def _events(stack: Stack, agent: str = "") -> list[pb.Event]:
    with grpc.insecure_channel(f"unix:{stack.socket}") as channel:
        return list(pb_grpc.SupervisorStub(channel).Events(pb.EventsRequest(agent=agent), timeout=5))


def _wait_event(stack: Stack, kind: str, since: float, timeout: float = 10, agent: str = "lab") -> pb.Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(stack, agent) if e.kind == kind and e.ts_unix >= since]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event; have {[(e.kind, e.value) for e in _events(stack)]}")


def test_seccomp_refusal_is_an_event_naming_the_syscall(stack: Stack) -> None:
    since = time.time()
    status, body = invoke(stack.url, "lab", {"op": "inet"})
    assert status == 200 and body["output"] == "EAFNOSUPPORT", body
    event = _wait_event(stack, "seccomp", since)
    assert event.value == "socket" and event.worker_id.startswith("w")
    assert "seccomp profile 'default' refuses" in event.detail and "EAFNOSUPPORT" in event.detail
    assert event.request_id == body["request_id"]
    # A repeat within the quiet window is counted, not reported again.
    invoke(stack.url, "lab", {"op": "inet"})
    time.sleep(0.3)
    same = [e for e in _events(stack, "lab") if e.kind == "seccomp" and e.worker_id == event.worker_id
            and e.value == "socket"]
    assert len(same) == 1
    assert '"event": "seccomp"' in stack.log_text("supervisor")


def test_strict_profile_allows_compute_and_refuses_the_rest(stack: Stack) -> None:
    # Under the default profile exec is allowed (and finds nothing); under strict it is refused.
    assert invoke(stack.url, "lab", {"op": "exec"})[1]["output"] == "ENOENT"
    assert invoke(stack.url, "lab-strict", {"op": "echo", "value": [1, "二"]})[1]["output"] == [1, "二"]
    assert invoke(stack.url, "lab-strict", {"op": "usage"})[0] == 200
    since = time.time()
    status, body = invoke(stack.url, "lab-strict", {"op": "exec"})
    assert status == 200 and body["output"] == "EPERM", body
    event = _wait_event(stack, "seccomp", since, agent="lab-strict")
    assert event.value == "execve" and "seccomp profile 'strict' refuses" in event.detail
    # Starting the sandbox and its workers needed nothing outside the allow-list.
    assert [e.value for e in _events(stack, "lab-strict")] == ["execve"]


def test_memory_breach_fails_the_request_and_is_an_event(stack: Stack) -> None:
    since = time.time()
    status, body = invoke(stack.url, "lab", {"op": "alloc", "mb": 1024})
    assert status == 502 and body["error"]["code"] == "resource_exhausted", body
    event = _wait_event(stack, "memory", since)
    assert event.value == "96 MiB" and event.detail == body["error"]["message"]
    assert event.request_id == body["request_id"]


def test_refused_forks_are_a_pids_event(stack: Stack) -> None:
    since = time.time()
    status, body = invoke(stack.url, "lab", {"op": "fork", "n": 100})
    assert status == 200 and body["output"]["error"], body
    event = _wait_event(stack, "pids", since)
    assert event.value == "16" and "process limit 16 reached" in event.detail


def test_deadline_is_a_timeout_event(stack: Stack) -> None:
    since = time.time()
    status, body = invoke(stack.url, "lab", {"op": "sleep", "s": 5}, timeout_ms=300)
    assert status == 504 and body["error"]["code"] == "deadline_exceeded", body
    event = _wait_event(stack, "timeout", since)
    assert event.value == "0.3 s" and event.request_id == body["request_id"]


def test_nfctl_events_lists_them(stack: Stack) -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "nfctl"), "--socket", str(stack.socket), "events", "lab"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "seccomp" in out.stdout and "socket" in out.stdout and "memory" in out.stdout
    status = subprocess.run([str(Path(sys.executable).parent / "nfctl"), "--socket", str(stack.socket), "status"],
                            capture_output=True, text=True, timeout=30)
    line = next(row for row in status.stdout.splitlines() if row.startswith("lab-strict "))
    assert " strict " in line, status.stdout
    bad = subprocess.run([str(Path(sys.executable).parent / "nfctl"), "--socket", str(stack.socket), "events", "nope"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "agent_not_found" in bad.stderr


def _cgroup_v2_inode(pid: int) -> int:
    path = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.startswith("0::"))
    mount = "/sys/fs/cgroup/unified" if Path("/sys/fs/cgroup/unified").is_dir() else "/sys/fs/cgroup"
    return os.stat(mount + path).st_ino


def test_watch_workers_streams_live_workers_with_their_cgroup_ids(stack: Stack) -> None:
    seen: list[pb.WorkerEvent] = []
    channel = grpc.insecure_channel(f"unix:{stack.socket}")
    stream = pb_grpc.SupervisorStub(channel).WatchWorkers(pb.WatchWorkersRequest())

    def read() -> None:
        try:
            for event in stream:
                seen.append(event)
        except grpc.RpcError:
            pass  # cancelled at the end

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Earlier tests in this module kill lab's workers; under emulation a
        # replacement can still be starting, and is streamed when it is ready.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not {"echo", "lab"} <= {e.agent for e in seen if e.kind == "add"}:
            time.sleep(0.05)
        adds = [e for e in seen if e.kind == "add"]
        assert {e.agent for e in adds} >= {"echo", "lab"}
        for event in adds:
            assert event.cgroup_id == _cgroup_v2_inode(event.pid), event
            assert event.version and event.release
        # A worker that dies is removed (with the id it was added with); its replacement is added.
        lab = {e.worker_id: e.cgroup_id for e in adds if e.agent == "lab"}
        count = len(seen)
        invoke(stack.url, "lab", {"op": "exit"})

        def later(kind: str) -> list[pb.WorkerEvent]:
            return [e for e in seen[count:] if e.kind == kind and e.agent == "lab"]

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (later("remove") and later("add")):
            time.sleep(0.05)
        (removed,) = later("remove")
        assert lab.get(removed.worker_id) == removed.cgroup_id != 0
        assert [e for e in later("add") if e.worker_id not in lab], "no replacement was added"
    finally:
        stream.cancel()
        channel.close()
        reader.join(5)
