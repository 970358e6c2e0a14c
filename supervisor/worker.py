"""The supervisor's handle on one sandboxed worker process.

It owns the worker's three pipes (requests in, replies out, raw log out), its
cgroup leaf, and the futures of the requests in flight on it. When the worker
dies, for whatever reason, every one of those requests fails with an error
that says why (OOM, CPU time, bad frame, signal, exit status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from neuroflow.sdk.framing import FrameDecoder, FrameError, encode
from neuroflow.sdk.http import SANDBOX_SOCKET as EGRESS_SOCKET
from neuroflow.v1 import worker_pb2 as wpb

from . import logs, telemetry
from .errors import NeuroflowError, ResourceExhausted, WorkerCrashed
from .events import BUS, WorkerRef
from .sandbox.cgroups import Leaf

if TYPE_CHECKING:
    from .otel import NoSpan, Span
    from .pool import AgentPool

log = logging.getLogger("neuroflow.worker")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


class _FrameReader(asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.decoder = FrameDecoder(worker.pool.config.max_frame_bytes)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.decoder.feed(data):
                self.worker.on_frame(wpb.FromWorker.FromString(body))
        except (FrameError, DecodeError) as exc:
            self.worker.kill(f"it wrote an invalid frame on stdout ({exc})")

    def eof_received(self) -> bool:
        self.worker.on_channel_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.on_channel_closed()


class _LogReader(asyncio.Protocol):
    """Raw writes to fd 1/2 inside the worker (C extensions, crashes)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self.worker.log_line(line.decode(errors="replace"), "stderr")
        if len(self.partial) > 8192:
            self.worker.log_line(self.partial.decode(errors="replace"), "stderr")
            self.partial = b""


class _UvPipeEnd:
    """A pipe fd handed to uvloop, which closes it itself (libuv owns it).

    uvloop's connect_*_pipe does not dup the fd it takes from a file object, so
    a file object would close the same number a second time — possibly after
    another thread got it (MagicStack/uvloop#763). This stand-in never closes.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        pass


def _pipe_end(loop: asyncio.AbstractEventLoop, fd: int, mode: str) -> object:
    if type(loop).__module__.startswith("uvloop"):
        return _UvPipeEnd(fd)
    return os.fdopen(fd, mode, 0)  # asyncio's own pipe transports close the file object


class Worker:
    def __init__(self, pool: AgentPool, worker_id: str) -> None:
        self.pool = pool
        self.id = worker_id
        self.state = "spawning"  # spawning -> ready -> draining -> dead
        self.host_pid = 0
        self.leaf: Leaf | None = None
        self.inflight: dict[int, asyncio.Future[wpb.InvokeResult]] = {}
        self.request_ids: dict[int, str] = {}
        #: Trace id (hex) of each request in flight, for its logs and spans.
        self.trace_ids: dict[int, str] = {}
        #: The supervisor's dispatch span of each request in flight (set by the pool):
        #: the parent of what the supervisor does for it meanwhile (egress connects).
        self.spans: dict[int, Span | NoSpan] = {}
        self.place_ms = 0.0
        self.kill_reason: str | None = None
        #: Set when it died: the limit it hit, as (kind, limit, sentence), or None.
        self.breach: tuple[str, str, str] | None = None
        self._next_id = 0
        self._pidfd = -1
        self._writer: asyncio.WriteTransport | None = None
        self._hello: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exit_status: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Resolved once the worker is dead and its requests have been failed.
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transports: list[asyncio.BaseTransport] = []
        self._grace_timers: dict[int, asyncio.TimerHandle] = {}
        self._exit_waiter: asyncio.Future[None] | None = None
        self._health_waiters: dict[int, asyncio.Future[wpb.HealthResult]] = {}
        self.on_dead: Callable[[Worker], None] = lambda w: None

    @property
    def load(self) -> int:
        return len(self.inflight)

    async def start(self, zygote_spawn: Callable[[str, list[int], int], None]) -> None:
        """Fork from the zygote, place in the cgroup, send Start, wait for Ready."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()  # uvloop's loop.time() has only ms resolution
        pool = self.pool
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        log_r, log_w = os.pipe()
        try:
            zygote_spawn(self.id, [req_r, resp_w, log_w], pool.limits.cpu_seconds or 0)
        finally:
            for fd in (req_r, resp_w, log_w):
                os.close(fd)
        w_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, _pipe_end(loop, req_w, "wb"))
        self._writer = w_transport
        r_transport, _ = await loop.connect_read_pipe(lambda: _FrameReader(self), _pipe_end(loop, resp_r, "rb"))
        l_transport, _ = await loop.connect_read_pipe(lambda: _LogReader(self), _pipe_end(loop, log_r, "rb"))
        self._transports = [w_transport, r_transport, l_transport]
        self.host_pid = await asyncio.wait_for(self._hello, 15)
        self._pidfd = os.pidfd_open(self.host_pid)
        # Placing a process costs several ms per hierarchy (DESIGN.md): do it
        # off the event loop, and before the worker runs any agent code.
        placing = time.perf_counter()
        self.leaf = await asyncio.to_thread(pool.create_worker_leaf, self.id, self.host_pid)
        self.place_ms = (time.perf_counter() - placing) * 1000
        start = wpb.Start(
            agent=pool.name, version=pool.manifest.version, worker_id=self.id,
            release=pool.release, config_json=pool.config_json,
            max_concurrency=pool.limits.concurrency or 1,
            max_frame_bytes=pool.config.max_frame_bytes,
            egress_socket=EGRESS_SOCKET if pool.egress is not None else "",
        )
        self._send(wpb.ToWorker(start=start))
        await asyncio.wait_for(self._ready, 15)
        self.state = "ready"
        BUS.worker_added(WorkerRef(agent=pool.name, version=pool.manifest.version, release=pool.release,
                                   worker_id=self.id, pid=self.host_pid, cgroup_id=self.leaf.cgroup_id))
        log.info("worker ready", extra={"agent": pool.name, "worker": self.id, "pid": self.host_pid,
                                        "spawn_ms": round((time.perf_counter() - started) * 1000, 2),
                                        "place_ms": round(self.place_ms, 2)})

    # -- called by the zygote handle -------------------------------------
    def on_hello(self, host_pid: int) -> None:
        if not self._hello.done():
            self._hello.set_result(host_pid)

    def on_exit(self, status: int | None) -> None:
        if not self.exit_status.done():
            self.exit_status.set_result(status)
        if self.leaf is not None and not self.closed.done():
            # Something it forked may still hold the channel open.
            asyncio.get_running_loop().run_in_executor(None, self.leaf.kill)
        self._die()

    # -- requests ----------------------------------------------------------
    def submit(self, request: wpb.InvokeRequest) -> asyncio.Future[wpb.InvokeResult]:
        self._next_id += 1
        request.id = self._next_id
        fut: asyncio.Future[wpb.InvokeResult] = asyncio.get_running_loop().create_future()
        self.inflight[request.id] = fut
        self.request_ids[request.id] = request.request_id
        if request.trace_id:
            self.trace_ids[request.id] = request.trace_id
        self._send(wpb.ToWorker(invoke=request))
        return fut

    @property
    def last_frame_id(self) -> int:
        """The id of the last request or health check sent to the worker."""
        return self._next_id

    def abandon(self, frame_id: int, why: str) -> None:
        """The caller gave up on a request: cancel it; kill the worker if it does not stop."""
        if frame_id not in self.inflight or self.state == "dead" or frame_id in self._grace_timers:
            return
        self._send(wpb.ToWorker(cancel=wpb.Cancel(id=frame_id)))
        self._grace_timers[frame_id] = asyncio.get_running_loop().call_later(
            self.pool.config.kill_grace, self.kill,
            f"request {self.request_ids.get(frame_id, '?')} {why} and the worker did not stop it "
            f"within {self.pool.config.kill_grace:g} s",
        )

    async def check_health(self, timeout: float = 5.0) -> wpb.HealthResult:
        """Ask the agent's ``on_health_check``; a worker that does not answer is unhealthy."""
        self._next_id += 1
        fut: asyncio.Future[wpb.HealthResult] = asyncio.get_running_loop().create_future()
        self._health_waiters[self._next_id] = fut
        self._send(wpb.ToWorker(health=wpb.HealthCheck(id=self._next_id)))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return wpb.HealthResult(healthy=False, detail=f"no answer within {timeout:g} s")

    def _send(self, frame: wpb.ToWorker) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(frame))

    def on_frame(self, frame: wpb.FromWorker) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "result":
            fid = frame.result.id
            timer = self._grace_timers.pop(fid, None)
            if timer is not None:
                timer.cancel()
            self.request_ids.pop(fid, None)
            trace_id = self.trace_ids.pop(fid, None)
            if trace_id and frame.result.spans:
                telemetry.worker_spans(self, frame.result.spans, trace_id)
            fut = self.inflight.pop(fid, None)
            if fut is not None and not fut.done():
                fut.set_result(frame.result)
            self.pool.on_worker_free(self)
        elif kind == "log":
            rec = frame.log
            self.log_line(rec.message, rec.stream or "log", rec.level, rec.id, dict(rec.fields))
        elif kind == "metric":
            self.pool.on_metric(self, frame.metric)
        elif kind == "ready":
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == "health":
            waiter = self._health_waiters.pop(frame.health.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame.health)
            self.pool.on_health(self, frame.health)

    def log_line(self, message: str, stream: str, level: str = "info", frame_id: int = 0,
                 fields: dict[str, str] | None = None) -> None:
        if self.pool.redact is not None:
            message, fields = logs.redact_all(self.pool.redact, message, fields or {})
        extra = {"agent": self.pool.name, "worker": self.id, "stream": stream, **(fields or {})}
        if frame_id and frame_id in self.request_ids:
            extra["request_id"] = self.request_ids[frame_id]
            if frame_id in self.trace_ids:
                extra["trace_id"] = self.trace_ids[frame_id]
        log.log(_LEVELS.get(level, logging.INFO), message, extra=extra)

    # -- death -------------------------------------------------------------
    def kill(self, reason: str) -> None:
        if self.state == "dead":
            return
        if self.kill_reason is None:
            self.kill_reason = reason
            log.warning("killing worker: %s", reason, extra={"agent": self.pool.name, "worker": self.id})
        self.state = "draining"
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        if self.leaf is not None:  # and anything it forked
            asyncio.get_running_loop().run_in_executor(None, self.leaf.kill)

    def on_channel_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            self._exit_waiter = asyncio.ensure_future(self._await_exit())

    async def _await_exit(self) -> None:
        # The exit status comes from the zygote, usually right after EOF.
        try:
            await asyncio.wait_for(asyncio.shield(self.exit_status), 2)
        except TimeoutError:
            self.kill("its output channel closed but it did not exit")
            if not self.exit_status.done():
                self.exit_status.set_result(None)
        self._die()

    def _die(self) -> None:
        if self.state == "dead" or not (self.exit_status.done() and self.closed.done()):
            return
        self.state = "dead"
        self.breach = breach = self._find_breach()
        error = self.death_error(breach)
        if breach is not None:
            BUS.incident(breach[0], agent=self.pool.name, release=self.pool.release, worker_id=self.id,
                         value=breach[1], detail=breach[2], request_id=self.sole_request_id)
        BUS.worker_removed(self.pool.name, self.pool.release, self.id)
        for timer in self._grace_timers.values():
            timer.cancel()
        for fut in self.inflight.values():
            if not fut.done():
                fut.set_exception(error)
        self.inflight.clear()
        for t in self._transports:
            t.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._hello.done():
            self._hello.set_exception(error)
        if not self._ready.done():
            self._ready.set_exception(error)
        for fut in (self._hello, self._ready):
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: nobody may be waiting any more
        self.gone.set_result(None)
        self.on_dead(self)

    @property
    def sole_request_id(self) -> str:
        """The request in flight when there is exactly one (an event can then name it), else ""."""
        return next(iter(self.request_ids.values())) if len(self.request_ids) == 1 else ""

    @property
    def sole_span(self) -> Span | NoSpan | None:
        """The dispatch span of the request in flight when there is exactly one, else None."""
        return next(iter(self.spans.values())) if len(self.spans) == 1 else None

    def _find_breach(self) -> tuple[str, str, str] | None:
        """The limit this dead worker hit, as (kind, limit, sentence), if any (reads its cgroup)."""
        status = self.exit_status.result() if self.exit_status.done() else None
        limits = self.pool.limits
        usage = self.leaf.usage() if self.leaf is not None else None
        if usage is not None and usage.oom_kills and limits.memory:
            mib = limits.memory // (1024 * 1024)
            return ("memory", f"{mib} MiB",
                    f"memory limit {mib} MiB exceeded: worker {self.id} was killed by the kernel's OOM killer")
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and self.kill_reason is None
                                         and usage is not None and limits.cpu_seconds
                                         and usage.cpu_usec >= limits.cpu_seconds * 1_000_000):
                return ("cpu_time", f"{limits.cpu_seconds} s",
                        f"CPU time limit of {limits.cpu_seconds} s exceeded: worker {self.id} was killed")
        return None

    def death_error(self, breach: tuple[str, str, str] | None = None) -> NeuroflowError:
        if breach is not None:
            return ResourceExhausted(breach[2])
        status = self.exit_status.result() if self.exit_status.done() else None
        if self.kill_reason is not None:
            return WorkerCrashed(f"worker {self.id} was killed: {self.kill_reason}")
        if status is None:
            return WorkerCrashed(f"worker {self.id} stopped answering")
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            return WorkerCrashed(f"worker {self.id} was killed by {name}")
        return WorkerCrashed(f"worker {self.id} exited with status {os.WEXITSTATUS(status)}")

    def close_input(self) -> None:
        """Graceful stop: the worker finishes what it has and exits at EOF."""
        if self.state != "dead":
            self.state = "draining"
        if self._writer is not None:
            self._writer.close()
