"""A test agent that does what the request says, including things it should not."""

import asyncio
import errno
import os
import socket
import stat
import sys
import time

from probe import probe

from neuroflow.sdk import Agent, AgentError, Context, Request, Response


def _channel_fd() -> int:
    """The worker's private reply pipe: a write-only FIFO other than fds 0-2."""
    import fcntl

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                return fd
        except OSError:
            continue
    raise RuntimeError("no channel fd found")


class Lab(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        cmd = request.input if isinstance(request.input, dict) else {"op": request.input}
        op = cmd.get("op")
        if op == "echo":
            return Response(output=cmd.get("value"))
        if op == "whoami":
            return Response(output={"pid": os.getpid(), "worker": context.worker_id,
                                    "config": dict(context.config)})
        if op == "sleep":  # cooperative: cancellable
            await asyncio.sleep(float(cmd.get("s", 1)))
            return Response(output="slept")
        if op == "block":  # blocks the event loop: only a kill stops it
            time.sleep(float(cmd.get("s", 1)))
            return Response(output="blocked")
        if op == "spin":
            while True:
                pass
        if op == "alloc":
            hog = []
            for _ in range(int(cmd.get("mb", 1024))):
                hog.append(bytearray(1024 * 1024))
            return Response(output=len(hog))
        if op == "exit":
            os._exit(int(cmd.get("code", 3)))
        if op == "print":
            print("garbage \xff\x00\x01 on stdout", flush=True)
            sys.stderr.write("and on stderr\n")
            os.write(1, b"\x00\x00\x00\x10raw bytes on fd 1\n")
            return Response(output="printed")
        if op == "garbage":
            os.write(_channel_fd(), b"\x7f\xff\xff\xffnot a frame")
            await asyncio.sleep(5)
            return Response(output="unreachable")
        if op == "raise":
            raise ValueError("the agent failed on purpose")
        if op == "refuse":
            raise AgentError("not_today", "the agent refuses this request")
        if op == "usage":
            context.report_usage(prompt_tokens=12, completion_tokens=30, model="test-model")
            context.log("used tokens", level="info", n=42)
            context.emit_metric("lab.calls", 1)
            return Response(output="ok")
        if op == "probe":
            return Response(output=probe())
        if op == "inet":  # refused by seccomp: reported to the supervisor as an event
            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            except OSError as exc:
                return Response(output=errno.errorcode[exc.errno])
            return Response(output="opened")
        if op == "exec":  # of a path that does not exist: harmless if allowed (ENOENT)
            try:
                os.execv("/nonexistent/neuroflow-test", ["x"])
            except OSError as exc:
                return Response(output=errno.errorcode[exc.errno])
        if op == "fork":
            pids = []
            for _ in range(int(cmd.get("n", 100))):
                try:
                    pid = os.fork()
                except OSError as exc:
                    for p in pids:
                        os.waitpid(p, 0)
                    return Response(output={"forked": len(pids), "error": exc.strerror})
                if pid == 0:
                    time.sleep(1)
                    os._exit(0)
                pids.append(pid)
            for p in pids:
                os.waitpid(p, 0)
            return Response(output={"forked": len(pids), "error": None})
        raise AgentError("unknown_op", f"unknown op {op!r}")
