"""A misbehaving worker is killed and replaced; only its own requests fail."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest

from tests.httpc import invoke
from tests.stack import Stack, pid_alive

pytestmark = pytest.mark.root


def _wait_workers(stack: Stack, agent: str, n: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = stack.worker_pids(agent)
        if len(pids) >= n:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"{agent} has {len(stack.worker_pids(agent))} workers, wanted {n}")


def _echo_while(stack: Stack, busy: object) -> list[int]:
    """Call echo repeatedly until ``busy`` (a Future) is done; return the statuses."""
    statuses = []
    while not busy.done():  # type: ignore[attr-defined]
        statuses.append(invoke(stack.url, "echo", "still here")[0])
        time.sleep(0.02)
    return statuses


def test_cpu_spinner_is_killed_at_its_limit_while_echo_answers(stack: Stack) -> None:
    with ThreadPoolExecutor(2) as pool:
        spin = pool.submit(invoke, stack.url, "lab", {"op": "spin"})
        echo_statuses = pool.submit(_echo_while, stack, spin).result(timeout=60)
        status, body = spin.result()
    assert status == 502 and body["error"]["code"] == "resource_exhausted", body
    assert "CPU time limit of 2 s exceeded" in body["error"]["message"]
    assert echo_statuses and set(echo_statuses) == {200}
    _wait_workers(stack, "lab", 2)
    assert invoke(stack.url, "lab", {"op": "echo", "value": 1})[0] == 200


def test_memory_hog_is_oom_killed_alone(stack: Stack) -> None:
    _wait_workers(stack, "lab", 2)
    with ThreadPoolExecutor(2) as pool:
        hog = pool.submit(invoke, stack.url, "lab", {"op": "alloc", "mb": 1024})
        echo_statuses = pool.submit(_echo_while, stack, hog).result(timeout=60)
        status, body = hog.result()
    assert status == 502 and body["error"]["code"] == "resource_exhausted", body
    assert "memory limit 96 MiB exceeded" in body["error"]["message"]
    assert set(echo_statuses) == {200}
    _wait_workers(stack, "lab", 2)
    assert invoke(stack.url, "lab", {"op": "echo", "value": 2})[0] == 200


def test_sigkill_mid_request_gives_502_and_the_worker_is_replaced(stack: Stack) -> None:
    before = set(_wait_workers(stack, "lab", 2))
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke, stack.url, "lab", {"op": "sleep", "s": 5})
        time.sleep(0.5)
        # This test started the supervisor, so its workers are ours to kill.
        victims = before
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        status, body = slow.result(timeout=30)
    assert status == 502 and body["error"]["code"] == "worker_crashed", body
    assert "SIGKILL" in body["error"]["message"]
    after = set(_wait_workers(stack, "lab", 2))
    assert not after & victims
    assert invoke(stack.url, "lab", {"op": "echo", "value": 3})[0] == 200


def test_garbage_on_the_channel_fails_only_that_worker(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "garbage"})
    assert status == 502 and body["error"]["code"] == "worker_crashed", body
    assert "invalid frame" in body["error"]["message"]
    assert invoke(stack.url, "echo", "fine")[0] == 200
    _wait_workers(stack, "lab", 2)
    assert invoke(stack.url, "lab", {"op": "echo", "value": 4})[0] == 200


def test_worker_exit_reports_status(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "exit", "code": 7})
    assert status == 502 and body["error"]["code"] == "worker_crashed"
    assert "exited with status 7" in body["error"]["message"]


def test_crash_loop_respawns_only_up_to_the_pool(stack: Stack) -> None:
    for _ in range(8):  # deaths in quick succession must not each add a replacement
        assert invoke(stack.url, "lab", {"op": "exit", "code": 3})[0] == 502
    time.sleep(3)  # past the respawn backoff
    assert 2 <= len(_wait_workers(stack, "lab", 2)) <= 3  # lab's pool: min 2, max 3


def test_deadline_cancels_cooperative_request_without_a_kill(stack: Stack) -> None:
    pids = set(_wait_workers(stack, "lab", 2))
    started = time.monotonic()
    status, body = invoke(stack.url, "lab", {"op": "sleep", "s": 30}, timeout_ms=500)
    assert status == 504 and body["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 3
    time.sleep(1.5)  # past the kill grace: nobody was killed
    assert all(pid_alive(p) for p in pids)


def test_deadline_on_blocked_worker_kills_it_and_fails_its_other_requests(stack: Stack) -> None:
    _wait_workers(stack, "lab", 2)

    async def run() -> tuple[tuple[int, dict], list[tuple[int, dict]]]:
        async with aiohttp.ClientSession() as session:
            async def call(value: object, timeout_ms: int | None = None) -> tuple[int, dict]:
                body = {"input": value} | ({"timeout_ms": timeout_ms} if timeout_ms else {})
                async with session.post(f"{stack.url}/v1/agents/lab/invoke", json=body) as r:
                    return r.status, await r.json()
            blocked = asyncio.ensure_future(call({"op": "block", "s": 30}, 500))
            await asyncio.sleep(0.1)
            others = [call({"op": "echo", "value": i}) for i in range(6)]
            return await blocked, list(await asyncio.gather(*others))

    (status, body), others = asyncio.run(run())
    assert status == 504 and body["error"]["code"] == "deadline_exceeded"
    codes = {b["error"]["code"] if s != 200 else "ok" for s, b in others}
    # Requests queued on the blocked worker fail with a reason; the rest succeed.
    assert codes <= {"ok", "worker_crashed"}, others
    crashed = [b for s, b in others if s != 200]
    assert all("did not stop it" in b["error"]["message"] for b in crashed)
    _wait_workers(stack, "lab", 2)


def test_fork_bomb_stops_at_pids_limit(stack: Stack) -> None:
    status, body = invoke(stack.url, "lab", {"op": "fork", "n": 200})
    assert status == 200, body
    assert body["output"]["forked"] < 16 and body["output"]["error"]
