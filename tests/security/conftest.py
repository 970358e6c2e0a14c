"""Fixtures for the escape suite: a stack with the ``escape`` agent, and a host check.

``escape_stack`` runs echo, lab and the ``escape`` test agent (tests/agents/escape).
Before it starts, symlinks that point out of the agent's folder are added to the
copy of ``escape`` the supervisor snapshots: to a root-only canary file standing
in for /etc/shadow (never the real one, so that a failing snapshot cannot copy a
real secret anywhere), to a root-only folder, and to the host's ``/``.

``host_intact`` fingerprints the host before a test and checks after it that
nothing changed, that the supervisor and the gateway still run and answer, and
that other agents' requests still succeed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, TEST_AGENTS
from tests.httpc import invoke
from tests.stack import Stack, cgroup_dirs

#: The symlinks added to the escape agent's folder, name -> what they point at
#: (``{secret}`` is the canary folder made by the fixture).
RELEASE_LINKS = {
    "leak-secret": "{secret}/shadow-canary",
    "leak-dir": "{secret}",
    "leak-root": "/",
}


@dataclass
class EscapeStack:
    stack: Stack
    canary: str  # the content of the root-only canary file
    secret_dir: Path

    @property
    def url(self) -> str:
        return self.stack.url


@pytest.fixture(scope="module")
def escape_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EscapeStack]:
    workdir = tmp_path_factory.mktemp("escape")
    secret_dir = workdir / "host-secret"
    secret_dir.mkdir(mode=0o700)
    canary = f"canary-{secrets.token_hex(16)}"
    (secret_dir / "shadow-canary").write_text(canary + "\n")
    os.chmod(secret_dir / "shadow-canary", 0o600)
    stack = Stack(agents=[EXAMPLES / "echo", TEST_AGENTS / "lab", TEST_AGENTS / "escape"], workdir=workdir)
    for name, target in RELEASE_LINKS.items():
        os.symlink(target.format(secret=secret_dir), stack.agents_dir / "escape" / name)
    with stack:
        yield EscapeStack(stack, canary, secret_dir)
    assert cgroup_dirs(stack.instance) == [], "the supervisor left cgroups behind"
    shutil.rmtree(workdir / "state", ignore_errors=True)


def attempt(es: EscapeStack, name: str, arg: Any = None) -> Any:
    """Run one attempt in an escape worker; the request itself must succeed."""
    status, body = invoke(es.url, "escape", {"op": "attempt", "name": name, "arg": arg})
    assert status == 200, (name, body)
    return body["output"]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def host_fingerprint(workdir: Path) -> dict[str, Any]:
    """What an escape could change on the host, read cheaply."""
    shadow = os.stat("/etc/shadow")
    return {
        "hostname": socket.gethostname(),
        "domainname": _read("/proc/sys/kernel/domainname"),
        "core_pattern": _read("/proc/sys/kernel/core_pattern"),
        "aslr": _read("/proc/sys/kernel/randomize_va_space"),
        "suid_dumpable": _read("/proc/sys/fs/suid_dumpable"),
        "modules": sorted(line.split()[0] for line in _read("/proc/modules").splitlines() if line),
        "swaps": _read("/proc/swaps"),
        "kexec_loaded": _read("/sys/kernel/kexec_loaded"),
        "kexec_crash_loaded": _read("/sys/kernel/kexec_crash_loaded"),
        "shadow": (_digest("/etc/shadow"), shadow.st_mode, shadow.st_uid, shadow.st_mtime_ns),
        "passwd": _digest("/etc/passwd"),
        # No mount made inside a sandbox may show up in the host's mount namespace.
        "mounts_in_workdir": [line for line in _read("/proc/self/mountinfo").splitlines()
                              if str(workdir) in line],
    }


def _clock_offset() -> float:
    return time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)


def assert_host_intact(es: EscapeStack, before: dict[str, Any]) -> None:
    stack = es.stack
    assert stack.supervisor is not None and stack.supervisor.poll() is None, "the supervisor died"
    assert stack.gateway is not None and stack.gateway.poll() is None, "the gateway died"
    assert stack.status(timeout=10).agents, "the supervisor does not answer Status"
    status, body = invoke(stack.url, "echo", "still here")
    assert (status, body.get("output")) == (200, "still here"), body
    status, body = invoke(stack.url, "lab", {"op": "echo", "value": 7})
    assert (status, body.get("output")) == (200, 7), body
    assert host_fingerprint(stack.workdir) == before


@pytest.fixture
def host_intact(escape_stack: EscapeStack) -> Iterator[None]:
    """Fingerprint the host before the test; after it, everything must be as it was."""
    before = host_fingerprint(escape_stack.stack.workdir)
    offset = _clock_offset()
    yield
    assert_host_intact(escape_stack, before)
    assert abs(_clock_offset() - offset) < 2.0, "the host's clock jumped"
