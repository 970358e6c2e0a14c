"""Who is running where, and what went wrong in the sandboxes.

Two feeds, both served over gRPC:

- the live worker set with each worker's cgroup v2 id (``WatchWorkers``),
  which ``neuroflow-ebpf`` uses to filter its probes in the kernel;
- sandbox incidents (``Events``): limit breaches and seccomp violations, each
  also a JSON log line, kept in a bounded ring for ``nfctl events``.

The supervisor is one process with one event loop, so one module-level
:data:`BUS` serves every pool; subscribers are bounded queues, and a
subscriber that falls behind is dropped rather than slowing the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from neuroflow.v1 import supervisor_pb2 as pb

log = logging.getLogger("neuroflow.events")

#: Incident kinds, for documentation and tests.
KINDS = ("memory", "cpu_time", "pids", "timeout", "seccomp")

_QUEUE_LIMIT = 10_000


@dataclass(frozen=True)
class WorkerRef:
    agent: str
    version: str
    release: str
    worker_id: str
    pid: int
    cgroup_id: int

    def event(self, kind: str) -> pb.WorkerEvent:
        return pb.WorkerEvent(kind=kind, agent=self.agent, version=self.version, release=self.release,
                              worker_id=self.worker_id, pid=self.pid, cgroup_id=self.cgroup_id)


class _Feed:
    """Fan-out to bounded subscriber queues; a full queue ends that subscription."""

    def __init__(self) -> None:
        self._subs: set[asyncio.Queue[object]] = set()

    def subscribe(self) -> asyncio.Queue[object]:
        queue: asyncio.Queue[object] = asyncio.Queue(_QUEUE_LIMIT)
        self._subs.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[object]) -> None:
        self._subs.discard(queue)

    def publish(self, item: object) -> None:
        for queue in list(self._subs):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                # It fell behind: end its stream (None) rather than block the loop.
                self._subs.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)


class EventBus:
    def __init__(self, keep: int = 1000) -> None:
        self.workers: dict[tuple[str, str, str], WorkerRef] = {}
        self.incidents: collections.deque[pb.Event] = collections.deque(maxlen=keep)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._worker_feed = _Feed()
        self._incident_feed = _Feed()

    # -- workers -------------------------------------------------------------
    def worker_added(self, ref: WorkerRef) -> None:
        self.workers[(ref.agent, ref.release, ref.worker_id)] = ref
        self._worker_feed.publish(ref.event("add"))

    def worker_removed(self, agent: str, release: str, worker_id: str) -> None:
        ref = self.workers.pop((agent, release, worker_id), None)
        if ref is not None:
            self._worker_feed.publish(ref.event("remove"))

    async def watch_workers(self) -> AsyncIterator[pb.WorkerEvent]:
        queue = self._worker_feed.subscribe()
        try:
            for ref in list(self.workers.values()):
                yield ref.event("add")
            while (item := await queue.get()) is not None:
                assert isinstance(item, pb.WorkerEvent)
                yield item
        finally:
            self._worker_feed.unsubscribe(queue)

    # -- incidents -----------------------------------------------------------
    def incident(self, kind: str, *, agent: str, release: str = "", worker_id: str = "", value: str = "",
                 detail: str = "", request_id: str = "") -> pb.Event:
        """Record one incident: ring, counters, subscribers and a warning log line."""
        event = pb.Event(ts_unix=time.time(), kind=kind, agent=agent, release=release, worker_id=worker_id,
                         value=value, detail=detail, request_id=request_id)
        self.incidents.append(event)
        self.counts[(agent, kind)] += 1
        self._incident_feed.publish(event)
        log.warning("sandbox event: %s", detail or kind,
                    extra={"event": kind, "agent": agent, "release": release, "worker": worker_id,
                           "value": value, **({"request_id": request_id} if request_id else {})})
        return event

    async def watch_incidents(self, agent: str = "", limit: int = 100,
                              follow: bool = False) -> AsyncIterator[pb.Event]:
        queue = self._incident_feed.subscribe() if follow else None
        try:
            past = [e for e in self.incidents if not agent or e.agent == agent]
            for event in past[-limit:] if limit else past:
                yield event
            while queue is not None and (item := await queue.get()) is not None:
                assert isinstance(item, pb.Event)
                if not agent or item.agent == agent:
                    yield item
        finally:
            if queue is not None:
                self._incident_feed.unsubscribe(queue)


#: The supervisor's one bus.
BUS = EventBus()
