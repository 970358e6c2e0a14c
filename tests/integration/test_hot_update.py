"""Hot update for real: inotify → release → validate → swap → probation → rollback."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TEST_AGENTS
from tests.httpc import invoke
from tests.stack import Stack

pytestmark = pytest.mark.root
NFCTL = Path(sys.executable).parent / "nfctl"
CONFIG = {"probation": "3s", "probation_min_requests": 5, "debounce": "200ms"}


def edit(stack: Stack, version: str, mode: str = "ok", body: str | None = None) -> None:
    path = stack.agents_dir / "versioned" / "agent.py"
    text = body if body is not None else path.read_text()
    text = re.sub(r'^VERSION = ".*"$', f'VERSION = "{version}"', text, flags=re.M)
    text = re.sub(r'^MODE = "\w+"', f'MODE = "{mode}"', text, flags=re.M)
    path.write_text(text)


def wait_version(stack: Stack, version: str, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, body = invoke(stack.url, "versioned", "x")
        if status == 200 and body["output"]["version"] == version:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"version {version} never answered; history {history(stack)}\n"
                         f"{stack.log_text('supervisor')[-3000:]}")


def history(stack: Stack) -> list[dict]:
    out = subprocess.run([str(NFCTL), "--socket", str(stack.socket), "--json", "history", "versioned"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout).get("entries", [])


async def load(url: str, rate: float, seconds: float) -> list[tuple[int, dict]]:
    """Open-loop load at ``rate`` requests/s; every reply is kept."""
    results: list[tuple[int, dict]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        async def one(i: int) -> None:
            async with session.post(f"{url}/v1/agents/versioned/invoke", json={"input": i}) as r:
                results.append((r.status, await r.json()))
        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return results


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Stack(agents=[TEST_AGENTS / "versioned"], workdir=tmp_path, config=CONFIG) as s:
        yield s


def test_edit_under_load_loses_nothing_and_never_mixes_versions(stack: Stack) -> None:
    async def scenario() -> list[tuple[int, dict]]:
        loader = asyncio.ensure_future(load(stack.url, rate=300, seconds=6))
        await asyncio.sleep(1.5)
        edit(stack, "v2")
        return await loader

    results = asyncio.run(scenario())
    statuses = Counter(status for status, _ in results)
    failures = [body for status, body in results if status != 200][:5]
    assert statuses == {200: len(results)}, (statuses, failures)
    by_release: dict[str, set[str]] = {}
    for _, body in results:
        by_release.setdefault(body["release"], set()).add(body["output"]["version"])
    # Every release served exactly one version of the code, and both were seen.
    assert all(len(v) == 1 for v in by_release.values()), by_release
    assert {v for vs in by_release.values() for v in vs} == {"v1", "v2"}
    assert results[-1][1]["output"]["version"] == "v2"


def test_syntax_error_never_reaches_traffic(stack: Stack) -> None:
    path = stack.agents_dir / "versioned" / "agent.py"
    edit(stack, "broken", body=path.read_text() + "\ndef oops(:\n")
    deadline = time.monotonic() + 30
    while not any(h["event"] == "rejected" for h in history(stack)):
        assert time.monotonic() < deadline, "the broken release was not rejected"
        assert invoke(stack.url, "versioned", "x")[1]["output"]["version"] == "v1"
        time.sleep(0.1)
    rejected = next(h for h in history(stack) if h["event"] == "rejected")
    assert "SyntaxError" in rejected["detail"]
    assert "alert: update_rejected versioned" in stack.log_text("supervisor")
    assert invoke(stack.url, "versioned", "x")[1]["output"]["version"] == "v1"


def test_unhealthy_release_is_rejected(stack: Stack) -> None:
    edit(stack, "v2", mode="unhealthy")
    deadline = time.monotonic() + 30
    while not any(h["event"] == "rejected" for h in history(stack)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "health check failed" in history(stack)[-1]["detail"]
    assert invoke(stack.url, "versioned", "x")[1]["output"]["version"] == "v1"


def test_failing_release_is_rolled_back_with_an_alert(stack: Stack) -> None:
    edit(stack, "v2", mode="raise")
    # It passes validation (smoke input works), takes traffic, fails it...
    deadline = time.monotonic() + 30
    while not any(h["event"] == "swap" and h["release"] for h in history(stack)[1:]):
        assert time.monotonic() < deadline, "the release was never swapped in"
        time.sleep(0.05)
    failures = 0
    rolled_back_at = None
    while time.monotonic() < deadline:
        status, body = invoke(stack.url, "versioned", "x")
        if status == 200 and body["output"]["version"] == "v1":
            rolled_back_at = time.monotonic()
            break
        failures += status != 200
        time.sleep(0.05)
    assert rolled_back_at is not None, "no rollback"
    events = history(stack)
    rollback = next(h for h in events if h["event"] == "rollback")
    assert "failed during probation" in rollback["detail"]
    assert "alert: rollback versioned" in stack.log_text("supervisor")
    # The same content is not deployed again by the watcher, nor after a restart.
    stack.stop_supervisor()
    stack.start_supervisor()
    stack.wait_ready()
    assert invoke(stack.url, "versioned", "x")[1]["output"]["version"] == "v1"


def test_nfctl_releases_deploy_rollback(stack: Stack, tmp_path: Path) -> None:
    def nfctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(NFCTL), "--socket", str(stack.socket), *args],
                              capture_output=True, text=True, timeout=120)

    edit(stack, "v2")
    wait_version(stack, "v2")
    out = nfctl("--json", "releases", "versioned")
    releases = json.loads(out.stdout)["releases"]
    assert len(releases) == 2 and sum(r.get("current", False) for r in releases) == 1
    out = nfctl("rollback", "versioned")
    assert out.returncode == 0 and "deployed" in out.stdout, out.stdout + out.stderr
    assert invoke(stack.url, "versioned", "x")[1]["output"]["version"] == "v1"
    out = nfctl("rollback", "versioned", "nosuchrelease")
    assert out.returncode == 1 and "bad_request" in out.stderr
    out = nfctl("releases", "nosuchagent")
    assert out.returncode == 1 and "agent_not_found" in out.stderr
    assert {"swap", "rollback"} <= {h["event"] for h in history(stack)}


def test_half_finished_swap_is_recovered_at_start(stack: Stack) -> None:
    stack.stop_supervisor()
    agent_dir = stack.state_dir / "agents" / "versioned"
    (agent_dir / ".current.new").symlink_to("releases/doesnotexist")
    (agent_dir / "releases" / ".abc.tmp").mkdir()
    stack.start_supervisor()
    assert not (agent_dir / ".current.new").is_symlink()
    assert not (agent_dir / "releases" / ".abc.tmp").exists()
    stack.wait_ready()
    assert invoke(stack.url, "versioned", "x")[0] == 200
