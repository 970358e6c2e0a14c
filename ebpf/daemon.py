"""The daemon's moving parts: the poller that turns kernel maps into snapshots and
per-agent rates, and the loopback HTTP endpoint (``/metrics``, ``/status``)."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from neuroflow.ebpf.collector import ProbeSet
from neuroflow.ebpf.metrics import SnapshotCollector, render
from neuroflow.ebpf.registry import Registry
from neuroflow.ebpf.share import Sharing
from neuroflow.ebpf.snapshot import Snapshot
from neuroflow.ebpf.watch import Link

VERSION = "0.1.0"


@dataclass
class State:
    """Everything ``/status`` and ``/metrics`` read; written by the poller and the watcher only."""

    probes: ProbeSet
    registry: Registry
    link: Link | None
    headers: dict[str, str]
    sharing: Sharing | None = None
    started: float = field(default_factory=time.time)
    latest: Snapshot | None = None
    previous: Snapshot | None = None
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # agent -> (ts, cpu seconds)

    def poll(self) -> None:
        """Read the maps once and refresh the per-agent summary (called every interval)."""
        self.probes.poll_events()
        snap = self.probes.snapshot()
        self.previous, self.latest = self.latest, snap
        self.agents = {name: self._agent_summary(i, name, snap) for i, name in enumerate(self.registry.names)}

    def _agent_summary(self, index: int, name: str, snap: Snapshot) -> dict[str, Any]:
        prev = self.previous
        dt = snap.ts - prev.ts if prev is not None else 0.0
        calls = snap.agent_syscalls(index)
        rate = (calls - prev.agent_syscalls(index)) / dt if prev is not None and dt > 0 else None
        connects = snap.agent_connects(index)
        recent = connects.minus(prev.agent_connects(index) if prev is not None else None)
        cpu, rss, workers = self.registry.usage(name)
        last = self._cpu.get(name)
        cpu_pct = (cpu - last[1]) / (snap.ts - last[0]) * 100 if last and snap.ts > last[0] else None
        self._cpu[name] = (snap.ts, cpu)
        p99 = connects.quantile(0.99)
        return {
            "index": index, "workers": workers, "syscalls_total": calls,
            "syscalls_per_s": None if rate is None else round(rate, 1),
            "cpu_seconds": round(cpu, 3), "cpu_percent": None if cpu_pct is None else round(cpu_pct, 1),
            "rss_bytes": rss,
            "connects_total": connects.count,
            "connects_per_s": round(recent.count / dt, 2) if dt > 0 else None,
            "connect_mean_ms": round(connects.total / connects.count / 1e6, 3) if connects.count else None,
            "connect_p99_ms": None if p99 is None else round(p99 / 1e6, 3),
            **{f"{kind}s": snap.proc.get((index, kind), 0) for kind in ("fork", "exec", "exit")},
            "syscall_counts": {str(nr): n for (a, nr), n in snap.syscalls.items() if a == index},
        }

    def status(self) -> dict[str, Any]:
        snap = self.latest or Snapshot()
        execs = [dict(e, agent=self.registry.name(e["agent_index"]))
                 for probe in self.probes.loaded.values() for e in probe.exec_events]
        return {
            "service": "neuroflow-ebpf", "version": VERSION, "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1), "kernel": platform.release(),
            "headers": self.headers,
            "supervisor": None if self.link is None else {
                "socket": self.link.socket, "connected": self.link.connected, "error": self.link.error,
                "events": self.link.events, "reconnects": self.link.reconnects,
                "workers_without_cgroup_id": self.link.no_cgroup},
            "syscall_counts_shared": None if self.sharing is None else {
                "socket": self.sharing.socket, "shared": self.sharing.shared, "error": self.sharing.error},
            "probes": self.probes.status(),
            "watched_cgroups": len(self.probes.watched),
            "lost_events_total": sum(snap.lost.values()),
            "map_full_total": sum(snap.map_full.values()),
            "probe_cpu_seconds_total": round(sum(snap.run_ns.values()) * 1e-9, 6),
            "agents": self.agents,
            "recent_execs": execs[-20:],
        }

    def collector(self) -> SnapshotCollector:
        return SnapshotCollector(lambda: self.latest, self.registry.name, self._gauges)

    def _gauges(self) -> dict[str, float]:
        return {"neuroflow_ebpf_watched_cgroups": float(len(self.probes.watched)),
                "neuroflow_ebpf_probes_on": float(sum(s.on for s in self.probes.states.values()))}


async def poller(state: State, interval: float) -> None:
    while True:
        await asyncio.to_thread(state.poll)  # map reads are syscalls; keep them off the loop
        await asyncio.sleep(interval)


async def cost_sampler(probes: ProbeSet, share: float, period: float = 10.0) -> None:
    """Add what the BPF run-time stats count to the probes' cost estimates.

    ``share`` 1 (the default): the stats stay on, and every second's count is added as it is.
    Below 1: they are on for ``share`` of every ``period`` (each period starts with them off)
    and what they count is scaled by 1 / ``share``. Turning them on and off flips a kernel
    static key, which patches code on every CPU each time: a QEMU guest under software
    emulation (the VM tier) locked up doing it every 10 s, so sampling is opt-in.
    """
    window = 1.0 if share >= 1 else period * share
    if share < 1:
        probes.run_stats.close()  # the collector turned them on at load
    while True:
        if share < 1:
            await asyncio.sleep(period - window)
        if probes.run_stats.fd < 0 and not probes.run_stats.enable():
            probes.extra_off("probe_cost", "attach_failed", probes.run_stats.error)
            return
        start = await asyncio.to_thread(probes.run_counts)
        try:
            await asyncio.sleep(window)
            end = await asyncio.to_thread(probes.run_counts)
        finally:
            if share < 1:
                probes.run_stats.close()
        probes.add_cost(start, end, 1 / min(share, 1.0))


def make_app(state: State) -> web.Application:
    collector = state.collector()

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(render, collector)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(state.status())

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    return app
