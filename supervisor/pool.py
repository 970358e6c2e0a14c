"""One agent release's sandbox: its zygote, its pool of workers, and dispatch.

Requests go to the ready worker with the fewest in flight, up to the agent's
per-worker concurrency; when every worker is full a new one is forked (up to
``pool.max``) and the request waits in a bounded queue until its deadline.
A worker that dies is replaced; only the requests it held fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neuroflow.sdk.manifest import Limits, Manifest
from neuroflow.v1 import worker_pb2 as wpb

from . import logs, telemetry
from .config import Config
from .egress import EgressProxy
from .errors import AgentUnavailable, DeadlineExceeded, NeuroflowError, Overloaded, ShuttingDown
from .events import BUS
from .sandbox import SandboxSpec, rlimits, seccomp
from .sandbox.cgroup_common import GroupLimits
from .sandbox.cgroups import Cgroups, Leaf
from .worker import Worker
from .zygote_handle import Zygote

log = logging.getLogger("neuroflow.pool")

_POOL_SEQ = 0

#: Failures that count against a release on probation (not the client's).
AGENT_FAULTS = ("agent_error", "worker_crashed", "resource_exhausted", "deadline_exceeded",
                "output_too_large", "agent_unavailable")

#: A pool whose workers keep dying is not respawned faster than this.
_RESPAWN_BACKOFF = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)

#: Workers kept forked, placed in their cgroup and started beyond current demand
#: (within pool.max): a request that needs one more worker finds it ready, so a
#: spawn's fork, cgroup move (an RCU grace period, DESIGN.md) and Start are never
#: on a request's path. The replacement is forked as soon as the spare is taken.
SPARE_WORKERS = 1
#: Repeats of one refused syscall by one worker within this many seconds are only counted.
_VIOLATION_QUIET = 10.0


@dataclass
class Counters:
    requests: int = 0
    failures: int = 0
    restarts: int = 0
    by_error: collections.Counter[str] = field(default_factory=collections.Counter)


class AgentPool:
    def __init__(self, manifest: Manifest, release: str, release_dir: str, config: Config,
                 cgroups: Cgroups, uid: int, runtime_paths: tuple[str, ...]) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.release = release
        self.release_dir = release_dir
        self.config = config
        self.cgroups = cgroups
        self.uid = uid
        self.runtime_paths = runtime_paths
        self.limits: Limits = config.defaults.resolve(manifest.limits)
        self.pool_min = manifest.pool.min if manifest.pool.min is not None else config.defaults.pool_min
        self.pool_max = max(manifest.pool.max or config.defaults.pool_max, self.pool_min, 1)
        self.config_json = json.dumps(dict(manifest.config)).encode()
        #: What the agents' log lines pass through (checked at start by main).
        self.redact = logs.load_redactor(config.log_redactor)
        self.state = "starting"
        self.detail = ""
        self.workers: list[Worker] = []
        self.counters = Counters()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._zygote: Zygote | None = None
        self._group: Leaf | None = None
        self._seq = 0
        self._violations: dict[tuple[str, str], float] = {}
        self._crashes = 0
        self._respawning = 0
        self.spare = SPARE_WORKERS if self.pool_max > self.pool_min else 0
        self._tasks: set[asyncio.Task[None]] = set()
        # One cgroup and sandbox root per pool: a release can be live twice for a
        # moment (rolled back to while its old pool still drains).
        global _POOL_SEQ
        _POOL_SEQ += 1
        self.group_parts = (f"{self.name}.{release[:12]}.{_POOL_SEQ}",)
        self.on_stopped: Callable[[AgentPool], None] = lambda pool: None
        self._root_dir = config.state_dir / "run" / "roots" / self.group_parts[0]
        #: The egress proxy of an agent with a network allowlist (started before the zygote).
        self.egress: EgressProxy | None = None
        self._egress_dir = config.state_dir / "run" / "egress" / self.group_parts[0]

    # -- lifecycle ---------------------------------------------------------
    def _group_limits(self) -> GroupLimits:
        return GroupLimits(memory=self.limits.memory, cpu=self.limits.cpu, pids=self.limits.pids)

    async def start(self) -> None:
        try:
            await self._start_egress()
            await self._start_zygote()
        except AgentUnavailable as exc:
            self.state, self.detail = "failed", exc.message
            log.error("agent failed to start: %s", exc.message, extra={"agent": self.name})
            return
        self.state = "ready"
        self._background(self._watch_pids())
        await asyncio.gather(*(self._spawn() for _ in range(self.pool_min)), return_exceptions=True)
        self._keep_spare()
        log.info("agent ready", extra={"agent": self.name, "release": self.release,
                                       "workers": len(self.workers)})

    async def _start_egress(self) -> None:
        if not self.manifest.network or self.egress is not None:
            return
        proxy = EgressProxy(
            self.name, self.manifest.network, self._egress_dir / "egress.sock", uid=self.uid, gid=self.uid,
            connect_timeout=self.config.egress_connect_timeout, idle_timeout=self.config.egress_idle_timeout,
            max_connections=self.config.egress_max_connections,
            peer_name=lambda pid: next((w.id for w in self.workers if w.host_pid == pid), None),
            on_connect=self._egress_connected,
        )
        try:
            await proxy.start()
        except OSError as exc:
            raise AgentUnavailable(f"agent {self.name}: cannot start its egress proxy at "
                                   f"{proxy.socket_path}: {exc.strerror or exc}") from None
        self.egress = proxy

    async def _start_zygote(self) -> None:
        self._group = await asyncio.to_thread(self.cgroups.create, *self.group_parts, parent=True)
        zygote_leaf = await asyncio.to_thread(
            self.cgroups.create, *self.group_parts, "zygote", limits=self._group_limits()
        )
        root_dir = self._root_dir
        root_dir.mkdir(parents=True, exist_ok=True)
        spec = SandboxSpec(
            agent=self.name, release=self.release, release_dir=self.release_dir,
            entry=self.manifest.entry, uid=self.uid, gid=self.uid, root_dir=str(root_dir),
            runtime_paths=self.runtime_paths, seccomp_profile=self.manifest.seccomp,
            zygote_procs=tuple(zygote_leaf.procs_files()), supervisor_pid=os.getpid(),
            address_space=rlimits.address_space_for(self.limits.memory),
            egress_dir=str(self._egress_dir) if self.egress is not None else "",
        )
        self._zygote = Zygote(spec)
        self._zygote.on_violation = self._on_violation
        await self._zygote.start()
        self._zygote.dead.add_done_callback(self._on_zygote_dead)

    def _on_violation(self, violation: seccomp.Violation, worker: Worker | None) -> None:
        """A refused system call: one event per worker and syscall per ``_VIOLATION_QUIET`` s."""
        who = worker.id if worker is not None else "zygote"
        key = (who, violation.syscall)
        now = time.monotonic()
        if now - self._violations.get(key, -_VIOLATION_QUIET) < _VIOLATION_QUIET:
            return
        self._violations[key] = now
        BUS.incident(
            "seccomp", agent=self.name, release=self.release, worker_id=who, value=violation.syscall,
            request_id=worker.sole_request_id if worker is not None else "",
            detail=f"{who} called {violation.syscall}, which seccomp profile {self.manifest.seccomp!r} refuses "
                   f"(it got {errno.errorcode.get(violation.errno, violation.errno)})",
        )

    def _on_zygote_dead(self, fut: asyncio.Future[str]) -> None:
        if self.state in ("stopping", "stopped"):
            return
        self.state, self.detail = "failed", f"sandbox exited: {fut.result()}"
        log.error("agent sandbox died", extra={"agent": self.name, "detail": self.detail})
        self._background(self._restart_zygote())

    async def _restart_zygote(self) -> None:
        for delay in _RESPAWN_BACKOFF[1:] + (_RESPAWN_BACKOFF[-1],) * 1000:
            await asyncio.sleep(delay)
            if self.state in ("stopping", "stopped"):
                return
            try:
                await self._start_zygote()
            except AgentUnavailable as exc:
                self.detail = exc.message
                continue
            self.state, self.detail = "ready", ""
            self.counters.restarts += 1
            self._ensure_min()
            self._keep_spare()
            return

    def create_worker_leaf(self, worker_id: str, pid: int) -> Leaf:
        """Runs in a thread: create the worker's cgroup and move it there."""
        leaf = self.cgroups.create(*self.group_parts, worker_id, limits=self._group_limits())
        leaf.add(pid)
        return leaf

    async def _spawn(self) -> Worker | None:
        if self._zygote is None or self.state != "ready" or len(self.workers) >= self.pool_max:
            return None
        self._seq += 1
        worker = Worker(self, f"w{self._seq}")
        worker.on_dead = self._on_worker_dead
        self.workers.append(worker)
        try:
            await worker.start(lambda wid, fds, cpu: self._zygote.spawn(worker, fds, cpu))  # type: ignore[union-attr]
        except Exception as exc:  # a failed spawn is logged and retried by _ensure_min
            log.error("worker failed to start: %s", exc, extra={"agent": self.name, "worker": worker.id})
            self._crashes += 1  # retried with backoff, never in a tight loop
            worker.kill(f"it failed to start ({exc})")
            return None
        self._crashes = 0
        telemetry.worker_spawned(self.name)
        self.on_worker_free(worker)
        return worker

    def _on_worker_dead(self, worker: Worker) -> None:
        telemetry.worker_exited(self, worker)
        if worker in self.workers:
            self.workers.remove(worker)
        for key in [k for k in self._violations if k[0] == worker.id]:
            del self._violations[key]
        if worker.leaf is not None:
            leaf = worker.leaf
            asyncio.get_running_loop().run_in_executor(None, _remove_leaf, leaf)
        if worker.kill_reason is None and self.state == "ready":
            self._crashes += 1
        if self.state == "ready":
            self._ensure_min()
            self._keep_spare()

    async def _watch_pids(self) -> None:
        """Report forks refused at ``pids.max`` (a fork bomb) as limit events."""
        seen: dict[str, int] = {}
        while self.state not in ("stopping", "stopped"):
            await asyncio.sleep(self.config.limits_poll)
            workers = [w for w in self.workers if w.leaf is not None and w.state != "dead"]
            if not workers or not self.limits.pids:
                continue
            counts = await asyncio.to_thread(_refused_forks, workers)
            for worker, refused in zip(workers, counts, strict=True):
                if refused > seen.get(worker.id, 0):
                    BUS.incident(
                        "pids", agent=self.name, release=self.release, worker_id=worker.id,
                        value=str(self.limits.pids), request_id=worker.sole_request_id,
                        detail=f"process limit {self.limits.pids} reached: worker {worker.id} had "
                               f"{refused - seen.get(worker.id, 0)} fork(s) refused",
                    )
                seen[worker.id] = refused
            live = {w.id for w in self.workers}
            for gone in [k for k in seen if k not in live]:
                del seen[gone]

    def _ensure_min(self) -> None:
        """Respawn up to ``pool.min``, counting the respawns already scheduled."""
        missing = self.pool_min - len(self.workers) - self._respawning
        if missing <= 0:
            return
        self._schedule_spawns(missing)

    def _keep_spare(self) -> None:
        """Fork ahead of demand until ``spare`` workers' worth of request slots are free, within pool.max."""
        if self.state != "ready" or not self.spare:
            return
        slots = self.limits.concurrency or 1
        free = sum(slots - len(w.inflight) for w in self.workers if w.state in ("spawning", "ready"))
        missing = min(self.spare - free // slots, self.pool_max - len(self.workers)) - self._respawning
        if missing > 0:
            self._schedule_spawns(missing)

    def _schedule_spawns(self, count: int) -> None:
        """Spawn ``count`` workers in the background, after the backoff that recent crashes earned;
        counted in ``_respawning`` until each spawn ends."""
        delay = _RESPAWN_BACKOFF[min(self._crashes, len(_RESPAWN_BACKOFF) - 1)]

        async def respawn() -> None:
            try:
                await asyncio.sleep(delay)
                await self._spawn()
            finally:
                self._respawning -= 1
                # A worker that died while this one was starting was not replaced (this spawn
                # was still counted); if this spawn failed too, the pool would stay short.
                if self.state == "ready":
                    self._ensure_min()

        for _ in range(count):
            self._respawning += 1
            self._background(respawn())

    def _background(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Drain: finish in-flight requests (bounded), then end the sandbox."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(ShuttingDown(f"agent {self.name} is shutting down"))
        deadline = time.monotonic() + self.config.drain_timeout
        while any(w.inflight for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for w in list(self.workers):
            w.close_input()
        exiting = [w.gone for w in self.workers]
        if exiting:
            await asyncio.wait(exiting, timeout=2)
        for w in list(self.workers):
            w.kill("the supervisor is shutting down")
        if self._zygote is not None:
            await self._zygote.stop()
        if self.egress is not None:
            await self.egress.close()
        for task in list(self._tasks):
            task.cancel()
        if self._group is not None:
            await asyncio.to_thread(_remove_group, self.cgroups, self.group_parts)
        with contextlib.suppress(OSError):  # the tmpfs on it lived only in the sandbox's namespace
            self._root_dir.rmdir()
        self.state = "stopped"
        self.on_stopped(self)

    # -- dispatch ----------------------------------------------------------
    def _pick(self) -> Worker | None:
        best: Worker | None = None
        cap = self.limits.concurrency or 1
        for w in self.workers:
            if w.state == "ready" and len(w.inflight) < cap and (best is None or w.load < best.load):
                best = w
        return best

    def on_worker_free(self, worker: Worker) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _acquire(self, deadline: float, timeout: float) -> Worker:
        """Wait for a worker with a free slot; ``deadline`` is on the loop's clock."""
        while True:
            if self.state != "ready":
                raise AgentUnavailable(f"agent {self.name} is {self.state}: {self.detail or 'not ready'}")
            worker = self._pick()
            if worker is not None:
                return worker
            if len(self._waiters) >= self.config.max_queue:
                raise Overloaded(f"agent {self.name} has {len(self._waiters)} requests queued; try again later")
            starting = sum(1 for w in self.workers if w.state == "spawning")
            if len(self.workers) < self.pool_max and starting * (self.limits.concurrency or 1) <= len(self._waiters):
                self._background(self._spawn())
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, max(deadline - asyncio.get_running_loop().time(), 0))
            except TimeoutError:
                raise DeadlineExceeded(
                    f"agent {self.name} had no free worker within the {timeout:g} s deadline"
                ) from None
            finally:
                if not fut.done():
                    fut.cancel()

    async def invoke(self, request: wpb.InvokeRequest) -> tuple[wpb.InvokeResult, Worker]:
        timeout = request.timeout_ms / 1000 if request.timeout_ms else (self.limits.timeout or 30.0)
        request.timeout_ms = int(timeout * 1000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.counters.requests += 1
        worker = self._pick() if self.state == "ready" else None
        if worker is None:
            with telemetry.queue_span(self.name):
                worker = await self._acquire(deadline, timeout)
        span = telemetry.start_dispatch(self.name, worker.id, request)
        syscalls = telemetry.syscalls_before(span, worker)
        fut = worker.submit(request)
        worker.spans[request.id] = span
        self._keep_spare()
        # A timer instead of asyncio.wait_for: no extra task per request on the hot path.
        timer = loop.call_at(deadline, self._expire, fut, worker, request.id, timeout)
        try:
            return await fut, worker
        except asyncio.CancelledError:
            worker.abandon(request.id, "was cancelled by its caller")
            raise
        finally:
            timer.cancel()
            worker.spans.pop(request.id, None)
            if syscalls is not None:
                telemetry.syscalls_after(span, worker, syscalls, request.id)
            span.end()

    def _egress_connected(self, conn: Any, started_ns: int, code: str) -> None:
        """An upstream connection attempt of the egress proxy: a metric, and a span in the request's trace.

        The request is the one in flight on the worker that connected (``SO_PEERCRED``);
        with several in flight at once on that worker, which one asked is unknown and
        no span is recorded.
        """
        worker = next((w for w in self.workers if w.host_pid == conn.pid), None) if conn.pid else None
        telemetry.egress_connected(self.name, worker.sole_span if worker is not None else None, conn.method,
                                   conn.dest, conn.address, started_ns, code)

    def _expire(self, fut: asyncio.Future[wpb.InvokeResult], worker: Worker, frame_id: int,
                timeout: float) -> None:
        if fut.done():
            return
        message = f"agent {self.name} did not answer within {timeout:g} s"
        fut.set_exception(DeadlineExceeded(message))
        BUS.incident("timeout", agent=self.name, release=self.release, worker_id=worker.id, value=f"{timeout:g} s",
                     detail=message, request_id=worker.request_ids.get(frame_id, ""))
        worker.abandon(frame_id, f"overran its {timeout:g} s deadline")

    # -- validation of a new release ---------------------------------------------
    async def validate(self) -> str | None:
        """Health-check every worker and run the manifest's smoke inputs; None if all pass."""
        if self.state != "ready":
            return self.detail or f"the sandbox is {self.state}"
        ready = [w for w in self.workers if w.state == "ready"]
        if not ready:
            return "no worker started"
        for result in await asyncio.gather(*(w.check_health() for w in ready)):
            if not result.healthy:
                return f"health check failed: {result.detail or 'on_health_check() returned False'}"
        for n, value in enumerate(self.manifest.smoke, start=1):
            request = wpb.InvokeRequest(request_id=f"smoke-{self.release[:8]}-{n}",
                                        input_json=json.dumps(value).encode())
            try:
                result, _ = await self.invoke(request)
            except NeuroflowError as exc:
                return f"smoke input {n} failed: {exc.code}: {exc.message}"
            if result.HasField("error"):
                return f"smoke input {n} failed: {result.error.code}: {result.error.message}"
        return None

    def failure_rate(self) -> tuple[int, float]:
        """Requests served and the share that failed through the agent's fault."""
        failed = sum(self.counters.by_error[c] for c in AGENT_FAULTS)
        served = self.counters.requests
        return served, (failed / served if served else 0.0)

    # -- events from workers ---------------------------------------------------
    def on_metric(self, worker: Worker, metric: wpb.Metric) -> None:
        telemetry.agent_metric(self.name, metric)
        log.debug("metric", extra={"agent": self.name, "worker": worker.id, "metric": metric.name,
                                   "value": metric.value})

    def on_health(self, worker: Worker, health: wpb.HealthResult) -> None:
        if not health.healthy:
            worker.kill(f"its health check failed ({health.detail or 'returned False'})")

    def snapshot(self) -> dict[str, int]:
        return {
            "workers": sum(1 for w in self.workers if w.state == "ready"),
            "busy": sum(1 for w in self.workers if w.inflight),
            "queued": len(self._waiters),
        }


def _remove_group(cgroups: Cgroups, parts: tuple[str, ...]) -> None:
    """The release's own group and its leaves (a retired release's are gone for good)."""
    try:
        cgroups.remove(*parts)
    except Exception as exc:  # reclaimed at the next start at the latest
        log.warning("could not remove cgroup %s: %s", "/".join(parts), exc)


def _refused_forks(workers: list[Worker]) -> list[int]:
    return [w.leaf.usage().pids_refused if w.leaf is not None else 0 for w in workers]


def _remove_leaf(leaf: Leaf) -> None:
    try:
        leaf.kill()
        leaf.remove()
    except Exception as exc:  # the group is reclaimed at the next start at the latest
        log.warning("could not remove a worker's cgroup: %s", exc)
