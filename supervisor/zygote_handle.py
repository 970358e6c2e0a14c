"""The supervisor's side of a zygote: start it, ask it for workers, hear events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .errors import AgentUnavailable
from .sandbox import SandboxSpec, seccomp
from .worker import Worker

log = logging.getLogger("neuroflow.zygote")

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FD = struct.Struct("i")


class Zygote:
    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.workers: dict[str, Worker] = {}
        self.process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self.dead: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._listener: seccomp.Listener | None = None
        self._output: asyncio.Future[None] | None = None
        #: Called for every refused system call, with the worker that made it (None: the zygote).
        self.on_violation: Callable[[seccomp.Violation, Worker | None], None] = lambda v, w: None

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        try:
            # Its output is a pipe of its own, never the supervisor's log file:
            # a sandbox holding that file could read, forge or truncate it.
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "neuroflow.supervisor.zygote", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            theirs.close()
        assert self.process.stdout is not None
        self._output = asyncio.ensure_future(self._log_output(self.process.stdout))
        try:
            ours.send(json.dumps(asdict(self.spec)).encode())
        except OSError as exc:
            code = await self.process.wait()
            self._gone(f"its launcher exited with {code} before reading its spec ({exc.strerror})")
            raise AgentUnavailable(f"agent {self.spec.agent}: the sandbox launcher exited with status "
                                   f"{code} at start") from None
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.stop()
            raise AgentUnavailable(
                f"agent {self.spec.agent}: its sandbox did not become ready in {timeout:g} s"
            ) from None

    async def _log_output(self, stream: asyncio.StreamReader) -> None:
        """What the zygote prints (the agent's import-time output, a traceback) goes to the log."""
        while line := await stream.readline():
            log.info(line.decode(errors="replace").rstrip(), extra={"agent": self.spec.agent, "stream": "zygote"})

    def spawn(self, worker: Worker, fds: list[int], cpu_seconds: int) -> None:
        if self._sock is None or self.dead.done():
            raise AgentUnavailable(f"agent {self.spec.agent}: its sandbox is not running")
        self.workers[worker.id] = worker
        msg = json.dumps({"op": "spawn", "worker": worker.id, "cpu_seconds": cpu_seconds})
        socket.send_fds(self._sock, [msg.encode()], fds)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(_CREDS.size) + socket.CMSG_SPACE(_FD.size))
            except BlockingIOError:
                return
            except OSError as exc:
                self._gone(f"control socket failed: {exc}")
                return
            if not data:
                self._gone("the sandbox's zygote exited")
                return
            pid, fds = 0, []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack(payload[: _CREDS.size])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += [_FD.unpack_from(payload, i)[0] for i in range(0, len(payload) - _FD.size + 1, _FD.size)]
            msg = json.loads(data)
            if msg.get("op") == "seccomp" and len(fds) == 1 and self._listener is None:
                self._watch_seccomp(fds.pop())
            free_fds(fds)
            self._handle(msg, pid)

    def _handle(self, msg: dict[str, Any], sender_pid: int) -> None:
        op = msg.get("op")
        worker = self.workers.get(msg.get("worker", ""))
        if op == "ready":
            if self._ready and not self._ready.done():
                self._ready.set_result(None)
        elif op == "failed":
            error = AgentUnavailable(f"agent {self.spec.agent}: {msg.get('error')}")
            if self._ready and not self._ready.done():
                self._ready.set_exception(error)
            self._gone(str(msg.get("error")))
        elif op == "hello" and worker is not None:
            worker.on_hello(sender_pid)
        elif op == "exited" and worker is not None:
            self.workers.pop(worker.id, None)
            worker.on_exit(int(msg["status"]))

    def _watch_seccomp(self, fd: int) -> None:
        self._listener = seccomp.Listener(fd)
        asyncio.get_running_loop().add_reader(fd, self._on_seccomp)

    def _on_seccomp(self) -> None:
        listener = self._listener
        assert listener is not None
        by_pid = {w.host_pid: w for w in self.workers.values() if w.host_pid}
        for v in listener.handle():
            self.on_violation(v, by_pid.get(v.pid))
        if listener.done:
            self._stop_seccomp()

    def _stop_seccomp(self) -> None:
        if self._listener is not None and not self._listener.closed:
            asyncio.get_running_loop().remove_reader(self._listener.fd)  # before the fd number is freed
            self._listener.close()

    def _gone(self, why: str) -> None:
        if self._listener is not None and not self._listener.closed:
            self._on_seccomp()  # answer what is pending, so nothing stays blocked
            self._stop_seccomp()
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._ready and not self._ready.done():
            self._ready.set_exception(AgentUnavailable(f"agent {self.spec.agent}: {why}"))
        for worker in list(self.workers.values()):
            worker.on_exit(None)
        self.workers.clear()
        if not self.dead.done():
            self.dead.set_result(why)

    async def stop(self, timeout: float = 5.0) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(b'{"op": "exit"}')
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._gone("stopped")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0


def free_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
