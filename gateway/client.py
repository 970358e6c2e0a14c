"""The gateway's connection to the supervisor.

Invocations share one long-lived bidirectional gRPC stream and are matched to
replies by ``call_id``: per-call overhead in Python's gRPC dominates the hop
(DESIGN.md), and a stream avoids it. The stream reconnects when the
supervisor restarts; calls in flight when it breaks fail with
``supervisor_unavailable`` and never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator

import grpc

from neuroflow.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc

log = logging.getLogger("neuroflow.gateway.client")

_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class SupervisorUnavailable(Exception):
    """No connection to the supervisor, or it broke while a call was in flight."""


class SupervisorClient:
    def __init__(self, target: str, max_message: int = 16 * 1024 * 1024) -> None:
        self.target = target
        self._options = [("grpc.max_receive_message_length", max_message),
                         ("grpc.max_send_message_length", max_message)]
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.SupervisorStub | None = None
        self._queue: asyncio.Queue[pb.InvokeCall] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[pb.InvokeReply]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        self._stub = pb_grpc.SupervisorStub(self._channel)
        self._task = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending("the gateway is shutting down")
        if self._channel is not None:
            await self._channel.close()

    async def _maintain(self) -> None:
        attempt = 0
        assert self._stub is not None and self._channel is not None
        while True:
            try:
                await asyncio.wait_for(self._channel.channel_ready(), 5)
                # A fresh queue per stream: a broken stream's request iterator may
                # still be running and must not take calls meant for the new one.
                self._queue = asyncio.Queue()
                call = self._stub.InvokeStream(self._outgoing(self._queue))
                self.connected.set()
                if attempt:
                    log.info("reconnected to the supervisor", extra={"target": self.target})
                attempt = 0
                async for reply in call:
                    fut = self._pending.pop(reply.call_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(reply)
                why = "the supervisor closed the stream"
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "connect timed out"
            self.connected.clear()
            self._fail_pending(f"lost the connection to the supervisor ({why})")
            if attempt == 0:
                log.warning("supervisor connection lost: %s", why, extra={"target": self.target})
            await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
            attempt += 1

    @staticmethod
    async def _outgoing(queue: asyncio.Queue[pb.InvokeCall]) -> AsyncIterator[pb.InvokeCall]:
        while True:
            yield await queue.get()

    def _fail_pending(self, why: str) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(SupervisorUnavailable(why))

    async def invoke(self, call: pb.InvokeCall, timeout: float) -> pb.InvokeReply:
        """Send one call; ``timeout`` is a backstop past the supervisor's own deadline."""
        if not self.connected.is_set():
            raise SupervisorUnavailable(f"not connected to the supervisor at {self.target}")
        call.call_id = next(self._ids)
        fut: asyncio.Future[pb.InvokeReply] = asyncio.get_running_loop().create_future()
        self._pending[call.call_id] = fut
        self._queue.put_nowait(call)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut, timeout)
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(call.call_id, None)

    async def list_agents(self, timeout: float = 5) -> pb.ListAgentsReply:
        assert self._stub is not None
        try:
            return await self._stub.ListAgents(pb.ListAgentsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise SupervisorUnavailable(f"supervisor at {self.target}: {exc.details()}") from exc

    async def status(self, timeout: float = 2) -> pb.StatusReply:
        assert self._stub is not None
        try:
            return await self._stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise SupervisorUnavailable(f"supervisor at {self.target}: {exc.details()}") from exc


def _expire(fut: asyncio.Future[pb.InvokeReply], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no reply from the supervisor within {timeout:g} s"))
