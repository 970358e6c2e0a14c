"""Follow the supervisor's live workers (``WatchWorkers``) and keep the probes' cgroup filter in step.

On every (re)subscription the supervisor first sends an ``add`` for each live
worker, so the daemon starts from an empty filter each time: on a lost stream
every id is dropped (a restarted supervisor makes new groups, and a cgroup id
is an inode number that the kernel may reuse), then rebuilt from the stream.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from neuroflow.ebpf.collector import ProbeSet
from neuroflow.ebpf.registry import Registry, Worker
from neuroflow.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc

log = logging.getLogger("neuroflow.ebpf")


@dataclass
class Link:
    """What ``/status`` says about the supervisor connection."""

    socket: str
    connected: bool = False
    error: str = ""
    events: int = 0
    reconnects: int = 0
    no_cgroup: int = 0  # workers announced without a cgroup v2 id (not observable)


def apply(event: pb.WorkerEvent, registry: Registry, probes: ProbeSet, link: Link) -> None:
    """One ``add``/``remove`` from the supervisor → registry and kernel filter."""
    link.events += 1
    if event.kind == "add":
        worker = Worker(event.agent, event.version, event.worker_id, event.pid, event.cgroup_id)
        old = registry.add(worker)
        if old is not None and old.cgroup_id and old.cgroup_id != worker.cgroup_id:
            probes.unwatch(old.cgroup_id)
        if worker.cgroup_id:
            probes.watch(worker.cgroup_id, registry.index(worker.agent))
        else:
            link.no_cgroup += 1
            log.warning("worker %s/%s has no cgroup v2 id: its syscalls cannot be attributed",
                        event.agent, event.worker_id)
    elif event.kind == "remove":
        gone = registry.remove(event.agent, event.worker_id)
        if gone is not None and gone.cgroup_id:
            probes.unwatch(gone.cgroup_id)
    else:
        log.warning("unknown worker event kind %r from the supervisor; ignored", event.kind)


def forget_all(registry: Registry, probes: ProbeSet) -> None:
    for worker in registry.clear():
        if worker.cgroup_id:
            probes.unwatch(worker.cgroup_id)


async def follow(link: Link, registry: Registry, probes: ProbeSet, *, retry_max: float = 5.0) -> None:
    """Subscribe, apply events, and on any loss forget every id and subscribe again (forever)."""
    target = link.socket if ":" in link.socket else f"unix:{link.socket}"
    delay = 0.2
    while True:
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await asyncio.wait_for(channel.channel_ready(), timeout=5)
                call = pb_grpc.SupervisorStub(channel).WatchWorkers(pb.WatchWorkersRequest())
                link.connected, link.error, delay = True, "", 0.2
                log.info("following the supervisor's workers at %s", link.socket)
                async for event in call:
                    apply(event, registry, probes, link)
                link.error = "the supervisor ended the stream"
        except grpc.aio.AioRpcError as exc:
            link.error = f"{exc.code().name}: {exc.details()}"
        except (TimeoutError, OSError) as exc:
            link.error = f"cannot reach the supervisor at {link.socket}: {exc or 'timed out'}"
        if link.connected:
            link.reconnects += 1
            log.warning("lost the supervisor (%s); dropping every watched cgroup and reconnecting", link.error)
        link.connected = False
        forget_all(registry, probes)
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
