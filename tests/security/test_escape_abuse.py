"""Abuse from inside a worker: resource exhaustion, the frame channel, inherited fds, release symlinks.

Each test makes the ``escape`` test agent (tests/agents/escape) attack one
limit or channel and asserts the precise outcome (an errno name, or the
request's error code and message), that only the attacking worker suffered,
that the agent recovers (its next request succeeds) and — through
``host_intact`` — that the supervisor, the gateway and other agents still
answer and nothing changed on the host.

Harmlessness rule: every attack stops at a limit or cleans up after itself
(children reaped, fds closed, /tmp files removed); forged frames only carry the
word FORGED; inherited host files get zero-byte writes; a symlink in a release
points at a canary file made by the test, never at a real secret.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tests.httpc import invoke
from tests.security.conftest import EscapeStack, attempt
from tests.stack import Stack

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("host_intact")]

MAX_FRAME = 16 * 1024 * 1024  # the supervisor's default max_frame_bytes


def _wait_workers(stack: Stack, agent: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(stack.worker_pids(agent)) < n:
        assert time.monotonic() < deadline, f"{agent} has {len(stack.worker_pids(agent))} workers, wanted {n}"
        time.sleep(0.05)


def _op(es: EscapeStack, op: str, arg: Any = None) -> tuple[int, Any]:
    status, body = invoke(es.url, "escape", {"op": op, "arg": arg})
    return status, body


def _recovers(es: EscapeStack) -> None:
    """The attacked agent is whole again: its pool is back and its requests succeed."""
    _wait_workers(es.stack, "escape", 2)
    for value in range(4):
        status, body = invoke(es.url, "escape", {"op": "echo", "value": value})
        assert (status, body.get("output")) == (200, value), body


def _others_while(es: EscapeStack, busy: Future[Any]) -> list[tuple[int, Any]]:
    """Call echo and lab until ``busy`` is done; every answer must be right."""
    answers = []
    n = 0
    while not busy.done() or n < 2:
        n += 1
        for agent, value, expected in (("echo", f"e{n}", f"e{n}"), ("lab", {"op": "echo", "value": n}, n)):
            status, body = invoke(es.url, agent, value)
            answers.append((status, body.get("output") == expected))
        time.sleep(0.02)
    return answers


def _under_attack(es: EscapeStack, op: str, arg: Any = None) -> tuple[int, Any]:
    with ThreadPoolExecutor(2) as pool:
        attack = pool.submit(_op, es, op, arg)
        others = pool.submit(_others_while, es, attack).result(timeout=60)
        status, body = attack.result()
    assert others and set(others) == {(200, True)}, others
    return status, body


# -- resources -------------------------------------------------------------------


def test_fork_bomb_stops_at_the_pids_limit(escape_stack: EscapeStack) -> None:
    status, body = _under_attack(escape_stack, "fork", 200)
    assert status == 200, body
    # pids.max is 16 for the worker's cgroup: itself and 15 children.
    assert body["output"] == {"forked": 15, "error": "EAGAIN"}, body
    _recovers(escape_stack)


def test_thread_bomb_stops_at_the_pids_limit(escape_stack: EscapeStack) -> None:
    status, body = _under_attack(escape_stack, "threads", 200)
    assert status == 200, body
    assert body["output"]["started"] <= 15 and body["output"]["error"] == "can't start new thread", body
    _recovers(escape_stack)


def test_memory_bomb_is_oom_killed_alone(escape_stack: EscapeStack) -> None:
    _wait_workers(escape_stack.stack, "escape", 2)
    status, body = _under_attack(escape_stack, "alloc", 1024)
    assert status == 502 and body["error"]["code"] == "resource_exhausted", body
    assert "memory limit 128 MiB exceeded" in body["error"]["message"], body
    _recovers(escape_stack)


def test_cpu_spin_is_killed_at_its_cpu_time_limit(escape_stack: EscapeStack) -> None:
    _wait_workers(escape_stack.stack, "escape", 2)
    status, body = _under_attack(escape_stack, "spin")
    assert status == 502 and body["error"]["code"] == "resource_exhausted", body
    assert "CPU time limit of 2 s exceeded" in body["error"]["message"], body
    _recovers(escape_stack)


def test_fd_exhaustion_stops_at_rlimit_nofile(escape_stack: EscapeStack) -> None:
    status, body = _under_attack(escape_stack, "fds")
    assert status == 200, body
    out = body["output"]
    # RLIMIT_NOFILE is 1024: the highest fd is 1023, then EMFILE; the hard limit
    # cannot be raised (test_escape_kernel: raise_nofile_hard).
    assert out["error"] == "EMFILE" and out["highest_fd"] == 1023 and out["opened"] > 900, out
    _recovers(escape_stack)


def test_filling_tmp_stops_at_its_size(escape_stack: EscapeStack) -> None:
    status, body = _under_attack(escape_stack, "fill_tmp")
    assert status == 200, body
    out = body["output"]
    # /tmp is a 64 MiB tmpfs; the worker's 128 MiB memory limit leaves room to reach it.
    assert out["tmp_size"] == 64 * 1024 * 1024, out
    assert out["error"] == "ENOSPC" and out["written"] <= out["tmp_size"], out
    assert out["left_after_cleanup"] == [], out
    _recovers(escape_stack)


def test_one_file_past_rlimit_fsize_is_refused(escape_stack: EscapeStack) -> None:
    status, body = _op(escape_stack, "big_file")
    assert status == 200, body
    assert body["output"] == {"limit": 64 * 1024 * 1024, "past_limit": "EFBIG"}, body


# -- the frame channel -------------------------------------------------------------


def test_forged_result_frames_reach_no_other_request(escape_stack: EscapeStack) -> None:
    """A worker writes results for 40 frame ids around its own, plus id 0 and 2**63-1.

    Frame ids are per worker and the escape agent runs one request per worker,
    so no other request can be waiting on any of those ids: the supervisor drops
    them. Concurrent requests to other agents and to other escape workers, and
    the forging worker's next requests (whose ids it forged in advance), all get
    their own answers.
    """
    _wait_workers(escape_stack.stack, "escape", 2)

    def escape_echoes(n: int) -> list[tuple[int, Any]]:
        out = []
        for i in range(n):
            status, body = invoke(escape_stack.url, "escape", {"op": "echo", "value": f"x{i}"})
            out.append((status, body.get("output") == f"x{i}"))
        return out

    with ThreadPoolExecutor(3) as pool:
        forging = [pool.submit(_op, escape_stack, "forge", 20) for _ in range(3)]
        echoes = pool.submit(escape_echoes, 20)
        others = pool.submit(_others_while, escape_stack, echoes)
        results = [f.result(timeout=60) for f in forging]
        assert set(echoes.result()) == {(200, True)}, echoes.result()
        assert set(others.result()) == {(200, True)}, others.result()
    for status, body in results:
        own = body["output"]["own"]
        assert status == 200 and own >= 1, body
        assert body["output"]["forged"] == len(range(max(1, own - 20), own + 21)) - 1 + 2, body
    assert set(escape_echoes(10)) == {(200, True)}


def test_frame_over_the_size_limit_kills_only_that_worker(escape_stack: EscapeStack) -> None:
    _wait_workers(escape_stack.stack, "escape", 2)
    status, body = _under_attack(escape_stack, "huge_frame", MAX_FRAME)
    assert status == 502 and body["error"]["code"] == "worker_crashed", body
    assert (f"invalid frame on stdout (frame of {MAX_FRAME + 1} bytes exceeds the limit of {MAX_FRAME} bytes)"
            in body["error"]["message"]), body
    _recovers(escape_stack)


# -- inherited file descriptors ---------------------------------------------------------


def test_worker_fds_are_only_its_channel_logs_and_own_event_loop(escape_stack: EscapeStack) -> None:
    status, body = _op(escape_stack, "open_fds")
    assert status == 200, body
    fds = {d["fd"]: d for d in body["output"]}
    # fd 0 reads /dev/null; 1 and 2 are the log pipe; the channel is a pair of pipes.
    assert fds[0]["target"] == "/dev/null" and fds[0]["mode"] == "r", fds[0]
    assert fds[1]["kind"] == fds[2]["kind"] == "fifo" and fds[1]["target"] == fds[2]["target"], (fds[1], fds[2])
    assert not [d for d in fds.values() if d["kind"] in ("dir", "blockdev")], fds


def test_worker_holds_no_host_file(escape_stack: EscapeStack) -> None:
    status, body = _op(escape_stack, "inherited_files")
    assert status == 200, body
    assert body["output"] == [], body["output"]


def test_zygote_holds_no_host_file_while_importing_the_agent(escape_stack: EscapeStack) -> None:
    status, body = _op(escape_stack, "zygote_fds")
    assert status == 200, body
    out = body["output"]
    assert out["pid"] == 1
    assert not [d for d in out["fds"] if d["kind"] in ("file", "dir")], out["fds"]


# -- symlinks in an agent's release ----------------------------------------------------


def test_release_symlink_to_a_host_file_is_not_readable(escape_stack: EscapeStack) -> None:
    out = attempt(escape_stack, "release_symlink", "leak-secret")
    assert out["read"] in ("ENOENT", "EACCES"), out


def test_release_symlink_content_never_reaches_the_release(escape_stack: EscapeStack) -> None:
    """The host side of the same hole: the snapshot must not copy the canary into the release folder."""
    releases = escape_stack.stack.state_dir / "agents" / "escape" / "releases"
    copies = [p for p in releases.glob("*/leak-secret") if escape_stack.canary in p.read_text()]
    assert copies == [], [(str(p), oct(p.stat().st_mode & 0o777)) for p in copies]


@pytest.mark.parametrize("link", ["leak-dir", "leak-root"])
def test_release_symlink_to_a_host_folder_is_dropped(escape_stack: EscapeStack, link: str) -> None:
    # os.walk does not descend into symlinked folders and they are not copied.
    out = attempt(escape_stack, "release_symlink", link)
    assert out == {"read": "ENOENT", "lstat": "ENOENT"}, out
