"""Shared fixtures, and the capability probe behind the ``root`` marker.

Tests marked ``root`` start the real supervisor: they need root and the
kernel features listed in DESIGN.md. Where those are missing they are skipped
with the reason — except under CI, where a missing privileged tier is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, cgroup_dirs, delegated_scope

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_AGENTS = ROOT / "tests" / "agents"


def _privileged_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the supervisor creates cgroups and namespaces"
    # Detect the cgroup backend where the supervisor will run: under systemd
    # that is a delegated scope of its own (tests/stack.py), not our cgroup.
    probe = "from neuroflow.supervisor.sandbox.cgroups import Cgroups; print(Cgroups('probe').backend)"
    out = subprocess.run([*delegated_scope("neuroflow-probe"), sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return f"no usable cgroups: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    if not Path("/proc/self/ns/pid").exists():
        return "no namespace support in this kernel"
    return None


PRIVILEGED_UNAVAILABLE = _privileged_unavailable()


def pytest_configure(config: pytest.Config) -> None:
    if PRIVILEGED_UNAVAILABLE and os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run the privileged tiers, but: {PRIVILEGED_UNAVAILABLE}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "root" in item.keywords and PRIVILEGED_UNAVAILABLE:
            item.add_marker(pytest.mark.skip(reason=PRIVILEGED_UNAVAILABLE))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One supervisor + gateway with the examples and the test agents, per module."""
    workdir = tmp_path_factory.mktemp("stack")
    agents = [EXAMPLES / "echo", EXAMPLES / "calc", TEST_AGENTS / "lab", TEST_AGENTS / "broken",
              TEST_AGENTS / "badmanifest"]
    with Stack(agents=agents, workdir=workdir) as s:
        yield s
    assert cgroup_dirs(s.instance) == [], "the supervisor left cgroups behind"
    shutil.rmtree(workdir / "state", ignore_errors=True)
