"""A test agent that tries to escape its sandbox on request, harmlessly.

Ops (``{"op": ..., ...}``):

* ``attempt`` ``name`` ``arg`` — one kernel/file-system/network attempt from ``attempts.py``
* ``fork``/``threads``/``alloc``/``spin``/``fds``/``fill_tmp``/``big_file`` — resource attacks
* ``open_fds`` — the fds this worker holds; ``inherited_files`` — what its fds on host files allow;
  ``zygote_fds`` — the fds the zygote held while importing this module
* ``forge`` — write result frames for other frame ids straight onto the reply channel
* ``huge_frame`` — write a frame header over the size limit onto the reply channel
* ``echo`` / ``whoami`` — proof of life
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import struct
from typing import Any

import attempts
import resources

from neuroflow.sdk import Agent, AgentError, Context, Request, Response
from neuroflow.v1 import worker_pb2 as wpb


def _reopen_for_reading(fd: int) -> str:
    """Reopen one of our own fds read-only through /proc (what a leaked log fd would allow)."""
    return attempts.guarded(lambda: len(open(f"/proc/self/fd/{fd}", "rb").read(64)))


# Import-time code runs in the zygote (already sandboxed): record what it holds.
ZYGOTE_AT_IMPORT: dict[str, Any] = {
    "pid": os.getpid(),
    "fds": resources.open_fds(256),
    "reopen_read": {str(fd): _reopen_for_reading(fd) for fd in (0, 1, 2)},
}


def inherited_files() -> list[dict[str, Any]]:
    """Every fd on a regular file or folder, and what it allows: a zero-byte write
    (changes nothing) and a read-only reopen through /proc/self/fd."""
    out = []
    for d in resources.open_fds(1024):
        if d["kind"] in ("file", "dir"):
            fd = d["fd"]
            d["write_zero"] = attempts.guarded(lambda fd=fd: os.write(fd, b"")) if d["kind"] == "file" else "-"
            d["reopen_read"] = _reopen_for_reading(fd) if d["kind"] == "file" else "-"
            out.append(d)
    return out


def _channel_fd() -> int:
    """The worker's private reply pipe: the write-only FIFO above fds 0-2."""
    for fd in range(3, 1024):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                return fd
        except OSError:
            continue
    raise AgentError("no_channel", "no reply channel fd found")


def _own_frame_id() -> int:
    from neuroflow.sdk.harness import _current_id

    return _current_id.get()


def _frame(message: wpb.FromWorker) -> bytes:
    body = message.SerializeToString()
    return struct.pack(">I", len(body)) + body


def forge(spread: int) -> dict[str, Any]:
    """Answer every frame id around ours with a forged result, then our own request normally."""
    own = _own_frame_id()
    fd = _channel_fd()
    forged = [i for i in range(max(1, own - spread), own + spread + 1) if i != own]
    for i in forged:
        result = wpb.InvokeResult(id=i, output_json=b'"FORGED"')
        os.write(fd, _frame(wpb.FromWorker(result=result)))
    # Also a result with id 0 (the "no request" id used by logs) and a huge id.
    for i in (0, 2**63 - 1):
        os.write(fd, _frame(wpb.FromWorker(result=wpb.InvokeResult(id=i, output_json=b'"FORGED"'))))
    return {"own": own, "forged": len(forged) + 2}


class Escape(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        cmd = request.input if isinstance(request.input, dict) else {"op": request.input}
        op = cmd.get("op")
        arg = cmd.get("arg")
        if op == "echo":
            return Response(output=cmd.get("value"))
        if op == "whoami":
            return Response(output={"pid": os.getpid(), "uid": os.getuid(), "worker": context.worker_id})
        if op == "attempt":
            try:
                return Response(output=attempts.run(str(cmd.get("name")), arg))
            except KeyError:
                raise AgentError("unknown_attempt", f"unknown attempt {cmd.get('name')!r}") from None
        if op == "fork":
            return Response(output=resources.fork_bomb(int(arg or 200)))
        if op == "threads":
            return Response(output=resources.thread_bomb(int(arg or 200)))
        if op == "alloc":
            return Response(output=resources.memory_bomb(int(arg or 1024)))
        if op == "spin":
            resources.cpu_spin()
        if op == "fds":
            return Response(output=resources.fd_exhaustion())
        if op == "fill_tmp":
            return Response(output=resources.fill_tmp(1, 8))
        if op == "big_file":
            return Response(output=resources.big_file())
        if op == "open_fds":
            return Response(output=resources.open_fds(1024))
        if op == "inherited_files":
            return Response(output=inherited_files())
        if op == "zygote_fds":
            return Response(output=ZYGOTE_AT_IMPORT)
        if op == "forge":
            return Response(output=forge(int(arg or 20)))
        if op == "huge_frame":
            os.write(_channel_fd(), struct.pack(">I", int(arg) + 1) + b"\0" * 64)
            await asyncio.sleep(10)  # the supervisor kills us long before
            return Response(output="unreachable")
        raise AgentError("unknown_op", f"unknown op {op!r}")
