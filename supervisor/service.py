"""The gRPC servicer: the one place domain errors become wire errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from neuroflow.sdk import __version__
from neuroflow.v1 import common_pb2, supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc, worker_pb2 as wpb

from . import telemetry
from .errors import AgentNotFound, BadRequest, NeuroflowError, ShuttingDown
from .events import BUS
from .pool import AgentPool
from .registry import DeployResult, Registry
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
        """Run one call in its span (child of the caller's ``traceparent``), and record its metrics."""
        with telemetry.server_span(call.metadata, call.agent, call.request_id) as span:
            reply = await self._handle(call)
            if reply.HasField("error"):
                span.set_attribute("error.type", reply.error.code)
                span.set_status(telemetry.StatusCode.ERROR, reply.error.code)
        telemetry.record_reply(call.agent if reply.version else "", reply.version, reply.release,
                               reply.error.code, reply.duration_ms / 1000, reply.usage.prompt_tokens,
                               reply.usage.completion_tokens)
        return reply

    async def _handle(self, call: pb.InvokeCall) -> pb.InvokeReply:
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
            telemetry.record_execution(pool.name, reply.version, result.duration_ms)
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
            info.state, info.detail = ("failed" if entry.error else "starting"), entry.error
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
        info.seccomp = m.seccomp
        info.events = sum(n for (agent, _kind), n in BUS.counts.items() if agent == name)
        info.p99_ms = (telemetry.recent_p99(name) or 0.0) * 1000
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

    # -- hot update ------------------------------------------------------------------
    async def Deploy(self, request: pb.DeployRequest, context: grpc.aio.ServicerContext) -> pb.DeployReply:
        async with _admin_errors(context):
            path = Path(request.path) if request.path else None
            if path is not None and not (path / "agent.yaml").is_file():
                raise BadRequest(f"{path} is not an agent folder (no agent.yaml)")
            if request.agent not in self.registry.agents:
                if path is None:
                    raise AgentNotFound(f"no agent named {request.agent!r}; give a folder to add it")
                self.registry.add_agent(request.agent, path)
            source = path or self.registry.agents[request.agent].source
            result = await self.registry.deploy(request.agent, source=source, reason="nfctl deploy")
            return _deploy_reply(result)
        raise AssertionError("unreachable")

    async def Rollback(self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext) -> pb.DeployReply:
        async with _admin_errors(context):
            return _deploy_reply(await self.registry.rollback(request.agent, request.release or None))
        raise AssertionError("unreachable")

    async def ListReleases(self, request: pb.ListReleasesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListReleasesReply:
        async with _admin_errors(context):
            entry = self.registry.entry(request.agent)
            live = entry.pool.release if entry.pool else ""
            standby = entry.previous.release if entry.previous else ""
            return pb.ListReleasesReply(releases=[
                pb.ReleaseInfo(id=r.id, created_unix=r.created, current=r.id == live, standby=r.id == standby)
                for r in entry.releases.list()
            ])
        raise AssertionError("unreachable")

    async def History(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryReply:
        async with _admin_errors(context):
            names = [request.agent] if request.agent else sorted(self.registry.agents)
            limit = request.limit or 50
            entries = []
            for name in names:
                for h in self.registry.entry(name).releases.history(limit):
                    detail = h.get("reason") or ""
                    if h.get("previous"):
                        detail = f"from {h['previous']}" + (f" ({detail})" if detail else "")
                    entries.append(pb.HistoryEntry(ts_unix=h["ts"], agent=name, event=h["event"],
                                                   release=h.get("release", ""), detail=detail))
            entries.sort(key=lambda e: e.ts_unix)
            return pb.HistoryReply(entries=entries[-limit:])
        raise AssertionError("unreachable")

    # -- sandbox events ----------------------------------------------------------------
    async def Events(self, request: pb.EventsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Event]:
        async with _admin_errors(context):
            if request.agent:
                self.registry.entry(request.agent)  # agent_not_found for a wrong name
        async for event in BUS.watch_incidents(request.agent, request.limit or 100, request.follow):
            yield event

    async def WatchWorkers(self, request: pb.WatchWorkersRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WorkerEvent]:
        async for event in BUS.watch_workers():
            yield event


def _deploy_reply(result: DeployResult) -> pb.DeployReply:
    return pb.DeployReply(agent=result.agent, release=result.release, outcome=result.outcome,
                          detail=result.detail)


_ADMIN_STATUS = {"agent_not_found": grpc.StatusCode.NOT_FOUND, "bad_request": grpc.StatusCode.INVALID_ARGUMENT}


@contextlib.asynccontextmanager
async def _admin_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Domain errors of admin calls become gRPC statuses carrying the stable code."""
    try:
        yield
    except NeuroflowError as exc:
        context.set_trailing_metadata((("nf-error-code", exc.code),))
        await context.abort(_ADMIN_STATUS.get(exc.code, grpc.StatusCode.FAILED_PRECONDITION),
                            f"{exc.code}: {exc.message}")
