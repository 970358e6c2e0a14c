"""The worker side of the frame protocol.

A worker process calls :func:`serve` with an agent instance. It reads
``ToWorker`` frames on stdin and writes ``FromWorker`` frames on stdout until
stdin closes. Before any agent code runs, the channel is moved to private file
descriptors and fds 0/1 are pointed away from it (0 at /dev/null, 1 at the log
stream on fd 2), and ``sys.stdout``/``sys.stderr`` become log streams, so
nothing an agent prints, nor any C library writing to fd 1, can corrupt it.

Standalone use (e.g. under another process manager)::

    python -m neuroflow.sdk.harness /path/to/agent-folder
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import io
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from neuroflow.v1 import common_pb2, worker_pb2 as wpb

from . import __version__
from .agent import Agent
from .context import Context
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode, read_frame
from .http import EgressHttp
from .tracing import Tracer
from .types import AgentError, Request, Response

#: Exit codes a supervisor can tell apart.
EXIT_OK = 0
EXIT_PROTOCOL = 3  # the supervisor sent a frame we could not accept
EXIT_AGENT = 4  # the agent could not be loaded

_current_id: contextvars.ContextVar[int] = contextvars.ContextVar("neuroflow_frame_id", default=0)


class FrameWriter:
    """Writes whole frames to a blocking fd; safe to call from any thread."""

    def __init__(self, fd: int, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.fd = fd
        self.max_frame = max_frame
        self._lock = threading.Lock()

    def send(self, message: wpb.FromWorker) -> None:
        data = encode(message)
        view = memoryview(data)
        with self._lock:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]


class CapturedStream(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr: each line becomes a LogRecord frame."""

    def __init__(self, name: str, writer: FrameWriter) -> None:
        self.name = name
        self._writer = writer
        self._partial: dict[int, str] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        frame_id = _current_id.get()
        buf = self._partial.pop(frame_id, "") + text
        *lines, rest = buf.split("\n")
        if rest:
            self._partial[frame_id] = rest
        for line in lines:
            self._emit(frame_id, line)
        return len(text)

    def flush(self) -> None:
        for frame_id, line in list(self._partial.items()):
            del self._partial[frame_id]
            self._emit(frame_id, line)

    def _emit(self, frame_id: int, line: str) -> None:
        level = "info" if self.name == "stdout" else "warning"
        record = wpb.LogRecord(
            id=frame_id, level=level, message=line, time_unix=time.time(), stream=self.name
        )
        self._writer.send(wpb.FromWorker(log=record))


def take_channel(in_fd: int = 0, out_fd: int = 1) -> tuple[int, int]:
    """Move the frame channel off fds 0/1; return its private (in, out) fds.

    Afterwards fd 0 reads /dev/null and fd 1 is a copy of fd 2 (the log stream),
    so an agent's ``print`` or a C extension writing to fd 1 reaches the logs.
    """
    chan_in, chan_out = os.dup(in_fd), os.dup(out_fd)  # dup() fds are close-on-exec
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return chan_in, chan_out


class Worker:
    """Runs requests of one agent concurrently, one asyncio task per request."""

    def __init__(self, agent: Agent, start: wpb.Start, chan_in: int, writer: FrameWriter) -> None:
        self.agent = agent
        self.start = start
        self.config: dict[str, Any] = json.loads(start.config_json or b"{}")
        self.max_frame = start.max_frame_bytes or DEFAULT_MAX_FRAME
        self._chan_in = chan_in
        self._writer = writer
        self._decoder = FrameDecoder(self.max_frame)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._health_tasks: set[asyncio.Task[None]] = set()
        #: ``context.http``: one egress client per worker, created on first use.
        self._egress = EgressHttp(start.agent, start.egress_socket)
        self._done: asyncio.Future[int] | None = None
        self._draining = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        os.set_blocking(self._chan_in, False)
        loop.add_reader(self._chan_in, self._on_readable)
        self._writer.send(wpb.FromWorker(ready=wpb.Ready(pid=os.getpid(), sdk_version=__version__)))
        try:
            return await self._done
        finally:
            loop.remove_reader(self._chan_in)
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self._egress.aclose()

    def _finish(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._chan_in, 1 << 18)
        except BlockingIOError:
            return
        if not data:  # the supervisor closed our stdin: stop
            self._finish(EXIT_OK)
            return
        try:
            frames = self._decoder.feed(data)
            for body in frames:
                self._dispatch(wpb.ToWorker.FromString(body))
        except (FrameError, DecodeError, ValueError) as exc:
            sys.__stderr__.write(f"neuroflow worker: bad frame from supervisor: {exc}\n")
            self._finish(EXIT_PROTOCOL)

    def _dispatch(self, frame: wpb.ToWorker) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "invoke":
            req = frame.invoke
            self._tasks[req.id] = asyncio.ensure_future(self._invoke(req))
        elif kind == "cancel":
            task = self._tasks.get(frame.cancel.id)
            if task is not None:
                task.cancel()
        elif kind == "health":
            task = asyncio.ensure_future(self._health(frame.health.id))
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)
        elif kind == "shutdown":
            self._draining = True
            if not self._tasks:
                self._finish(EXIT_OK)
        else:
            raise ValueError(f"unexpected frame kind {kind!r}")

    async def _invoke(self, req: wpb.InvokeRequest) -> None:
        _current_id.set(req.id)
        started = time.perf_counter()
        tracer = Tracer(req.trace_id, req.parent_span_id, req.sampled)
        ctx = Context(
            emit=self._writer.send,
            frame_id=req.id,
            request_id=req.request_id,
            session=req.session or None,
            agent=self.start.agent,
            version=self.start.version,
            worker_id=self.start.worker_id,
            config=self.config,
            tracer=tracer,
            egress=self._egress,
        )
        result = wpb.InvokeResult(id=req.id)
        with tracer.start_as_current_span("worker handle", attributes={
            "neuroflow.agent": self.start.agent, "neuroflow.worker": self.start.worker_id,
            "neuroflow.request_id": req.request_id,
        }) as span:
            await self._handle(req, ctx, result)
            if result.HasField("error"):
                span.set_status(False, result.error.code)
                span.set_attribute("error.type", result.error.code)
            if tracer.dropped:
                span.set_attribute("neuroflow.spans_dropped", tracer.dropped)
        usage = ctx._usage_message()
        if usage is not None:
            result.usage.CopyFrom(usage)
        result.duration_ms = (time.perf_counter() - started) * 1000
        self._tasks.pop(req.id, None)
        if tracer.spans:  # the supervisor exports them with the request's own spans
            result.spans.extend(tracer.spans)
        self._writer.send(wpb.FromWorker(result=result))
        if self._draining and not self._tasks:
            self._finish(EXIT_OK)

    async def _handle(self, req: wpb.InvokeRequest, ctx: Context, result: wpb.InvokeResult) -> None:
        """Run the agent's ``handle``; every outcome lands in ``result``."""
        try:
            request = Request(
                input=json.loads(req.input_json) if req.input_json else None,
                request_id=req.request_id,
                session=req.session or None,
                metadata=dict(req.metadata),
                deadline=time.monotonic() + req.timeout_ms / 1000 if req.timeout_ms else None,
            )
            response = await self.agent.handle(request, ctx)
            if not isinstance(response, Response):
                raise TypeError(
                    f"handle() returned {type(response).__name__}, expected neuroflow.sdk.Response"
                )
            output = json.dumps(response.output, ensure_ascii=False).encode()
            if len(output) > self.max_frame - 1024:
                _fail(result, "output_too_large",
                      f"output of {len(output)} bytes exceeds the frame limit of {self.max_frame}")
            else:
                result.output_json = output
        except AgentError as exc:
            _fail(result, exc.code, exc.message)
        except asyncio.CancelledError:
            _fail(result, "cancelled", "the request was cancelled by the supervisor")
        except Exception as exc:  # the agent's own failure: report it, keep serving
            _fail(result, "agent_error", f"{type(exc).__name__}: {exc}")
            ctx.log("".join(traceback.format_exception(exc)).rstrip(), level="error")

    async def _health(self, frame_id: int) -> None:
        healthy, detail = False, ""
        try:
            async with asyncio.timeout(5):
                healthy = bool(await self.agent.on_health_check())
        except Exception as exc:  # a failing check is an answer, not a crash
            detail = f"{type(exc).__name__}: {exc}"
        self._writer.send(
            wpb.FromWorker(health=wpb.HealthResult(id=frame_id, healthy=healthy, detail=detail))
        )


def _fail(result: wpb.InvokeResult, code: str, message: str) -> None:
    result.error.CopyFrom(common_pb2.Error(code=code, message=message))


def load_agent(folder: str | os.PathLike[str], entry: str) -> Agent:
    """Import ``module:Class`` from ``folder`` and return an instance of it."""
    module_name, _, class_name = entry.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"entry must look like 'module:Class', got {entry!r}")
    folder = str(Path(folder))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{entry} is not a subclass of neuroflow.sdk.Agent")
    return cls()


def serve(agent: Agent, in_fd: int = 0, out_fd: int = 1) -> int:
    """Serve the frame protocol for ``agent`` until the supervisor closes stdin."""
    chan_in, chan_out = take_channel(in_fd, out_fd)
    # The loop is made while the supervisor places us in our cgroup (Start comes after).
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return _serve_started(agent, loop, chan_in, chan_out)
    finally:
        loop.close()


def _serve_started(agent: Agent, loop: asyncio.AbstractEventLoop, chan_in: int, chan_out: int) -> int:
    first = read_frame(chan_in)
    if first is None:
        return EXIT_OK
    try:
        frame = wpb.ToWorker.FromString(first)
    except DecodeError as exc:
        sys.__stderr__.write(f"neuroflow worker: bad first frame: {exc}\n")
        return EXIT_PROTOCOL
    if frame.WhichOneof("kind") != "start":
        sys.__stderr__.write("neuroflow worker: first frame must be Start\n")
        return EXIT_PROTOCOL
    writer = FrameWriter(chan_out, frame.start.max_frame_bytes or DEFAULT_MAX_FRAME)
    sys.stdout = CapturedStream("stdout", writer)
    sys.stderr = CapturedStream("stderr", writer)
    return loop.run_until_complete(Worker(agent, frame.start, chan_in, writer).run())


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .manifest import ManifestError, load_manifest

    parser = argparse.ArgumentParser(description="Run one agent worker on stdin/stdout frames.")
    parser.add_argument("folder", help="agent folder containing agent.yaml")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(Path(args.folder) / "agent.yaml")
        agent = load_agent(args.folder, manifest.entry)
    except (ManifestError, ImportError, ValueError, TypeError) as exc:
        print(f"neuroflow worker: cannot load agent: {exc}", file=sys.stderr)
        return EXIT_AGENT
    return serve(agent)


if __name__ == "__main__":
    sys.exit(main())
