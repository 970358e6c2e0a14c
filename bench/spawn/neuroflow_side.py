"""NeuroFlow's side: the real supervisor code spawning sandboxed ``examples/echo`` workers.

:class:`EchoPool` builds what the supervisor builds for one agent release — its
cgroup subtree (:class:`Cgroups`, the same backend detection), an
:class:`AgentPool` whose zygote sits inside the release's sandbox (namespaces,
minimal root, unprivileged uid, no capabilities, seccomp) — with ``pool.min``
set to 0, so that no worker exists until a request needs one. One spawn is then
``pool.invoke()`` on the empty pool: the pool asks the zygote for a worker, the
zygote forks it, the supervisor creates its cgroup leaf with limits and moves
it there, sends Start, waits for Ready and hands it the request. The time is
from that call to the reply. The worker is then closed and its leaf removed
before the next spawn.

:class:`Probe` timestamps the steps without changing them: it wraps a few
methods of the supervisor's classes (and the cgroup layer's file writes) in this
process only, recording ``time.perf_counter()`` as each is reached. Its cost is
a few microseconds per spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuroflow.sdk.manifest import Pool, load_manifest
from neuroflow.supervisor import pool as pool_mod, worker as worker_mod, zygote_handle
from neuroflow.supervisor.config import Config, runtime_paths
from neuroflow.supervisor.pool import AgentPool
from neuroflow.supervisor.sandbox import cgroup_v1, cgroup_v2
from neuroflow.supervisor.sandbox.cgroups import Cgroups
from neuroflow.supervisor.worker import Worker
from neuroflow.v1 import worker_pb2 as wpb

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "examples" / "echo"

#: The steps of one spawn, in the order the supervisor reaches them.
MARKS = ("asked", "fork_sent", "forked", "hello", "placing", "placed", "start_sent", "ready", "answered")
#: Phases between consecutive marks, named for what happens in them.
PHASES = {
    "dispatch": ("asked", "fork_sent"),  # pool finds no worker, schedules _spawn, makes pipes
    "zygote_fork": ("fork_sent", "forked"),  # control message to the zygote, fork, "spawned" back
    "child_setup": ("forked", "hello"),  # child: pdeathsig, dumpable, rlimit, dup2, hello + creds
    "to_thread": ("hello", "placing"),  # pidfd_open, hand-off to a worker thread
    "cgroup_place": ("placing", "placed"),  # create the leaf with limits, move the pid (all hierarchies)
    "start_frame": ("placed", "start_sent"),  # thread done -> back on the loop, Start framed and written
    "worker_ready": ("start_sent", "ready"),  # worker: read Start, redirect stdio, new event loop, Ready
    "first_request": ("ready", "answered"),  # waiter woken, request framed, handled, result read
}


class Probe:
    """Timestamps of the spawn in progress; installed once, removed by :meth:`remove`."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = None
        self._undo: list[tuple[object, str, object]] = []

    def begin(self) -> dict[str, Any]:
        self.current = {"writes": []}
        self.current["asked"] = time.perf_counter()
        return self.current

    def mark(self, name: str) -> None:
        if self.current is not None and name not in self.current:
            self.current[name] = time.perf_counter()

    def _wrap(self, owner: object, attr: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, attr)
        self._undo.append((owner, attr, original))
        setattr(owner, attr, make(original))

    def install(self) -> None:
        probe = self

        def spawn(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(zyg: Any, worker: Any, fds: Any, cpu: Any) -> Any:
                probe.mark("fork_sent")
                return orig(zyg, worker, fds, cpu)
            return wrapper

        def handle(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(zyg: Any, msg: dict[str, Any], pid: int) -> Any:
                if msg.get("op") == "spawned":
                    probe.mark("forked")
                return orig(zyg, msg, pid)
            return wrapper

        def on_hello(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(worker: Any, pid: int) -> Any:
                probe.mark("hello")
                return orig(worker, pid)
            return wrapper

        def create_leaf(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(pool: Any, worker_id: str, pid: int) -> Any:
                probe.mark("placing")
                try:
                    return orig(pool, worker_id, pid)
                finally:
                    probe.mark("placed")
            return wrapper

        def send(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(worker: Any, frame: wpb.ToWorker) -> Any:
                if frame.WhichOneof("kind") == "start":
                    result = orig(worker, frame)
                    probe.mark("start_sent")
                    return result
                return orig(worker, frame)
            return wrapper

        def on_frame(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(worker: Any, frame: wpb.FromWorker) -> Any:
                kind = frame.WhichOneof("kind")
                if kind == "ready":
                    probe.mark("ready")
                elif kind == "result":
                    probe.mark("answered")
                return orig(worker, frame)
            return wrapper

        def cgroup_write(orig: Any) -> Any:
            @functools.wraps(orig)
            def wrapper(path: Path, value: str | int) -> None:
                t0 = time.perf_counter()
                try:
                    orig(path, value)
                finally:
                    if probe.current is not None:
                        probe.current["writes"].append((str(path), (time.perf_counter() - t0) * 1000))
            return wrapper

        self._wrap(zygote_handle.Zygote, "spawn", spawn)
        self._wrap(zygote_handle.Zygote, "_handle", handle)
        self._wrap(worker_mod.Worker, "on_hello", on_hello)
        self._wrap(pool_mod.AgentPool, "create_worker_leaf", create_leaf)
        self._wrap(worker_mod.Worker, "_send", send)
        self._wrap(worker_mod.Worker, "on_frame", on_frame)
        self._wrap(cgroup_v1, "write", cgroup_write)
        self._wrap(cgroup_v2, "write", cgroup_write)

    def remove(self) -> None:
        while self._undo:
            owner, attr, original = self._undo.pop()
            setattr(owner, attr, original)


def phases_of(record: dict[str, Any]) -> dict[str, float]:
    """Milliseconds per phase, plus the cgroup writes split into migrations and limits."""
    out = {name: (record[b] - record[a]) * 1000 for name, (a, b) in PHASES.items() if a in record and b in record}
    writes = record.get("writes", [])
    out["cgroup_procs_writes"] = sum(ms for path, ms in writes if path.endswith("cgroup.procs"))
    out["cgroup_limit_writes"] = sum(ms for path, ms in writes if not path.endswith("cgroup.procs"))
    out["cgroup_mkdir_etc"] = out.get("cgroup_place", 0.0) - out["cgroup_procs_writes"] - out["cgroup_limit_writes"]
    for path, ms in writes:
        if path.endswith("cgroup.procs"):
            hierarchy = path.split("/")[4] if path.startswith("/sys/fs/cgroup/") else path
            out[f"move_into:{hierarchy}"] = out.get(f"move_into:{hierarchy}", 0.0) + ms
    return out


def smaps_rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in KiB: Pss, Rss, and USS = Private_Clean + Private_Dirty."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    return {"pss_kib": fields.get("Pss", 0), "rss_kib": fields.get("Rss", 0),
            "uss_kib": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


class EchoPool:
    """One ``examples/echo`` release under the real supervisor code, with ``pool.min`` 0."""

    def __init__(self, state_dir: Path, max_workers: int) -> None:
        self.instance = f"bench-spawn-{secrets.token_hex(3)}"
        self.config = Config(state_dir=state_dir, agents_dirs=(), socket=state_dir / "unused.sock",
                             instance=self.instance, watch=False)
        manifest = load_manifest(ECHO / "agent.yaml")
        self.manifest = dataclasses.replace(manifest, pool=Pool(min=0, max=max_workers))
        self.cgroups = Cgroups(self.instance)
        self.pool: AgentPool | None = None
        self.probe = Probe()
        self._seq = 0

    async def start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config.state_dir, 0o755)
        await asyncio.to_thread(self.cgroups.setup)
        self.pool = AgentPool(self.manifest, f"bench{secrets.token_hex(8)}", str(ECHO), self.config, self.cgroups,
                              self.config.uid_base, runtime_paths())
        self.pool.spare = 0  # cold spawns first; spare_once() turns the spare on
        await self.pool.start()
        if self.pool.state != "ready":
            raise RuntimeError(f"the echo sandbox did not start: {self.pool.detail}")
        self.probe.install()

    async def stop(self) -> None:
        self.probe.remove()
        try:
            if self.pool is not None:
                await self.pool.stop()
        finally:
            await asyncio.to_thread(self.cgroups.teardown)

    async def invoke(self, worker: Worker | None = None) -> wpb.InvokeResult:
        """One echo request, through the pool's dispatch or straight to ``worker``."""
        assert self.pool is not None
        self._seq += 1
        text = f"spawn-{self._seq}"
        request = wpb.InvokeRequest(request_id=f"bench-{self._seq}", input_json=json.dumps(text).encode(),
                                    timeout_ms=15_000)
        result = await (worker.submit(request) if worker is not None else self.pool.invoke(request))
        if isinstance(result, tuple):
            result = result[0]
        if result.HasField("error") or json.loads(result.output_json) != text:
            raise RuntimeError(f"echo answered wrongly: {result}")
        return result

    async def spawn_once(self) -> tuple[float, dict[str, Any]]:
        """Ask the empty pool for a worker via a request; ms to the reply, and the step times."""
        assert self.pool is not None
        if self.pool.workers:
            raise RuntimeError(f"the pool still has {len(self.pool.workers)} workers; a spawn would not be cold")
        record = self.probe.begin()
        await self.invoke()
        elapsed_ms = (time.perf_counter() - record["asked"]) * 1000
        self.probe.current = None
        (worker,) = self.pool.workers
        record["logged_spawn_place_ms"] = worker.place_ms
        await self.retire(worker)
        return elapsed_ms, record

    async def spare_once(self) -> float:
        """With one worker kept spare ahead of demand (the pool's default), ms from "need a new
        worker" to its reply; the worker that answered is retired, so every call needs a new one."""
        assert self.pool is not None
        if not self.pool.spare:
            self.pool.spare = 1
            self.pool._keep_spare()
        self._seq += 1
        text = f"spare-{self._seq}"
        request = wpb.InvokeRequest(request_id=f"bench-{self._seq}", input_json=json.dumps(text).encode(),
                                    timeout_ms=15_000)
        asked = time.perf_counter()
        result, worker = await self.pool.invoke(request)
        elapsed_ms = (time.perf_counter() - asked) * 1000
        if result.HasField("error") or json.loads(result.output_json) != text:
            raise RuntimeError(f"echo answered wrongly: {result}")
        await self.retire(worker)
        return elapsed_ms

    async def retire(self, worker: Worker) -> None:
        """Close the worker, and wait until it has exited and its cgroup leaf is gone."""
        leaf_dirs = [Path(p).parent for p in worker.leaf.procs_files()] if worker.leaf is not None else []
        worker.close_input()
        await asyncio.wait_for(asyncio.shield(worker.gone), 10)
        deadline = time.monotonic() + 5
        while any(d.exists() for d in leaf_dirs) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    async def idle_memory(self, count: int) -> dict[str, Any]:
        """Spawn ``count`` extra workers, one request each, then read their memory at rest."""
        assert self.pool is not None and self.pool._zygote is not None
        zygote_pids = _zygote_pids(self.pool._zygote.pid)
        await asyncio.sleep(0.3)
        before = sum(smaps_rollup(p)["pss_kib"] for p in zygote_pids)
        workers = []
        for _ in range(count):
            worker = await self.pool._spawn()  # the pool's own spawn path (as under load)
            if worker is None:
                raise RuntimeError("the pool refused to spawn another worker")
            await self.invoke(worker)
            workers.append(worker)
        await asyncio.sleep(0.5)  # let them settle into their idle loop
        per_worker = [smaps_rollup(w.host_pid) for w in workers]
        after = sum(smaps_rollup(p)["pss_kib"] for p in zygote_pids) + sum(m["pss_kib"] for m in per_worker)
        zygote = smaps_rollup(zygote_pids[-1])
        for worker in workers:
            await self.retire(worker)
        return {"workers": per_worker, "zygote": zygote, "pss_total_before_kib": before,
                "pss_total_after_kib": after, "count": count}


def _zygote_pids(launcher_pid: int) -> list[int]:
    """The launcher and its one child, the zygote (pid 1 of the sandbox)."""
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
        return [launcher_pid, *(int(c) for c in children)]
    return [launcher_pid]
