"""The gRPC servicer: the one place domain errors become wire errors."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import grpc

from neuroflow.sdk import __version__
from neuroflow.v1 import common_pb2, supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc, worker_pb2 as wpb

from .errors import BadRequest, NeuroflowError, ShuttingDown
from .pool import AgentPool
from .registry import Registry
from .sandbox.cgroups import Cgroups

log = logging.getLogger("neuroflow.service")


class SupervisorService(pb_grpc.SupervisorServicer):
    def __init__(self, registry: Registry, cgroups: Cgroups) -> None:
        self.registry = registry
        self.cgroups = cgroups
        self.started = time.monotonic()
        self.stopping = False
        self.requests = 0
        self.failures = 0

    async def handle(self, call: pb.InvokeCall) -> pb.InvokeReply:
        """Run one call; every failure becomes ``reply.error`` with a stable code."""
        reply = pb.InvokeReply(call_id=call.call_id, agent=call.agent, request_id=call.request_id)
        self.requests += 1
        started = time.perf_counter()
        pool: AgentPool | None = None
        try:
            if self.stopping:
                raise ShuttingDown("the supervisor is shutting down")
            if not call.agent:
                raise BadRequest("no agent named in the call")
            pool = self.registry.pool(call.agent)
            reply.version, reply.release = pool.manifest.version, pool.release
            request = wpb.InvokeRequest(
                request_id=call.request_id, input_json=call.input_json, session=call.session,
                timeout_ms=call.timeout_ms, metadata=call.metadata,
            )
            result, worker = await pool.invoke(request)
            reply.worker_id = worker.id
            if result.HasField("error"):
                reply.error.CopyFrom(result.error)
            else:
                reply.output_json = result.output_json
            if result.HasField("usage"):
                reply.usage.CopyFrom(result.usage)
        except NeuroflowError as exc:
            reply.error.CopyFrom(common_pb2.Error(code=exc.code, message=exc.message))
        reply.duration_ms = (time.perf_counter() - started) * 1000
        if reply.HasField("error"):
            self.failures += 1
            if pool is not None:
                pool.counters.failures += 1
                pool.counters.by_error[reply.error.code] += 1
            log.info("request failed", extra={"agent": call.agent, "request_id": call.request_id,
                                              "code": reply.error.code, "error": reply.error.message})
        return reply

    async def Invoke(self, request: pb.InvokeCall, context: grpc.aio.ServicerContext) -> pb.InvokeReply:
        return await self.handle(request)

    async def InvokeStream(
        self, request_iterator: AsyncIterator[pb.InvokeCall], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InvokeReply]:
        replies: asyncio.Queue[pb.InvokeReply | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def run(call: pb.InvokeCall) -> None:
            replies.put_nowait(await self.handle(call))

        async def read() -> None:
            try:
                async for call in request_iterator:
                    task = asyncio.ensure_future(run(call))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if pending:
                    await asyncio.wait(set(pending))
            finally:
                replies.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
            await reader  # re-raises what ended the reader, if anything did
        finally:
            reader.cancel()
            for task in pending:
                task.cancel()

    def _agent_info(self, name: str) -> pb.AgentInfo:
        entry = self.registry.agents[name]
        info = pb.AgentInfo(name=name)
        if entry.manifest is None:
            info.state, info.detail = "failed", entry.error
            return info
        m = entry.manifest
        info.version, info.description = m.version, m.description
        info.skills.extend(m.skills)
        info.examples.extend(m.examples)
        pool = entry.pool
        if pool is None:
            info.state, info.detail = "failed", entry.error
            return info
        info.release, info.state, info.detail = pool.release, pool.state, pool.detail
        snap = pool.snapshot()
        info.workers, info.busy, info.queued = snap["workers"], snap["busy"], snap["queued"]
        lim = pool.limits
        info.limits.CopyFrom(pb.Limits(
            memory_bytes=lim.memory or 0, cpu=lim.cpu or 0, pids=lim.pids or 0,
            timeout_ms=int((lim.timeout or 0) * 1000), cpu_seconds=lim.cpu_seconds or 0,
        ))
        info.requests, info.failures = pool.counters.requests, pool.counters.failures
        info.restarts = pool.counters.restarts
        return info

    async def ListAgents(self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext) -> pb.ListAgentsReply:
        return pb.ListAgentsReply(agents=[self._agent_info(n) for n in sorted(self.registry.agents)])

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(
            version=__version__,
            uptime_s=time.monotonic() - self.started,
            pid=os.getpid(),
            cgroup=pb.CgroupStatus(backend=self.cgroups.backend, controllers=self.cgroups.controllers,
                                   reason=self.cgroups.reason, root=self.cgroups.root),
            agents=[self._agent_info(n) for n in sorted(self.registry.agents)],
            requests=self.requests,
            failures=self.failures,
            state_dir=str(self.registry.config.state_dir),
        )
