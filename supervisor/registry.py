"""Agents, their releases, and hot update: validate, swap, probation, rollback.

An agent's source folder is snapshotted into an immutable release
(``releases.py``). A new release is started in a sandbox of its own and
validated (its zygote imports it, every worker answers ``on_health_check``,
the manifest's ``smoke`` inputs succeed) while the current one keeps serving;
only then is ``current`` swapped and new requests go to it. Requests already
running on the old release finish there. The old release stays warm while the
new one is on probation; if the new one fails more than the old one did, the
swap is undone — in well under a second, since the old sandbox never stopped —
and an alert is sent. Updates of one agent are serialised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from neuroflow.sdk.manifest import Manifest, ManifestError, load_manifest

from .alerts import Alerts
from .config import Config
from .errors import AgentNotFound, AgentUnavailable, BadRequest
from .pool import AgentPool
from .releases import AgentReleases, Release, content_hash
from .sandbox.cgroups import Cgroups
from .watcher import SourceWatcher

log = logging.getLogger("neuroflow.registry")


@dataclass
class AgentEntry:
    name: str
    source: Path
    releases: AgentReleases
    manifest: Manifest | None = None
    error: str = ""
    pool: AgentPool | None = None
    #: The release that served before the last swap, kept warm during probation.
    previous: AgentPool | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Content that failed validation or probation: not deployed again by the watcher.
    rejected: set[str] = field(default_factory=set)
    probation: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class DeployResult:
    agent: str
    release: str
    outcome: str  # "deployed" | "unchanged" | "rejected" | "rolled_back"
    detail: str = ""


class Registry:
    def __init__(self, config: Config, cgroups: Cgroups, runtime_paths: tuple[str, ...],
                 alerts: Alerts | None = None) -> None:
        self.config = config
        self.cgroups = cgroups
        self.runtime_paths = runtime_paths
        self.alerts = alerts or Alerts(config.alert_webhook)
        self.agents: dict[str, AgentEntry] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._live: set[AgentPool] = set()
        self.watcher: SourceWatcher | None = None

    def watch(self, debounce: float) -> None:
        """Deploy an agent whenever its source folder changes (inotify)."""
        self.watcher = SourceWatcher(self.source_changed, debounce)
        self.watcher.start()
        for entry in self.agents.values():
            self.watcher.watch(entry.name, entry.source)

    # -- discovery and start ---------------------------------------------------
    def discover(self) -> None:
        """Every ``*/agent.yaml`` in the agents folders; bad ones are kept as failed."""
        for base in self.config.agents_dirs:
            if not base.is_dir():
                log.warning("agents folder does not exist", extra={"path": str(base)})
                continue
            for manifest_path in sorted(base.glob("*/agent.yaml")):
                self._add(manifest_path)

    def _add(self, manifest_path: Path) -> None:
        folder = manifest_path.parent
        try:
            if manifest_path.is_symlink():  # never read a host file it names, as root
                raise ManifestError(f"{manifest_path}: is a symlink; an agent's files must be regular files")
            name = load_manifest(manifest_path).name
        except ManifestError as exc:
            log.error("invalid agent manifest: %s", exc, extra={"path": str(manifest_path)})
            name, error = folder.name, str(exc)
        else:
            error = ""
        if name in self.agents:
            log.error("duplicate agent name %r in %s and %s; keeping the first",
                      name, self.agents[name].source, folder)
            return
        releases = AgentReleases(self.config.releases_dir / name, keep=self.config.keep_releases)
        self.agents[name] = AgentEntry(name, folder, releases, error=error)

    async def start_all(self) -> None:
        await asyncio.gather(*(self._start(entry) for entry in self.agents.values()))

    async def _start(self, entry: AgentEntry) -> None:
        """Serve the current release (kept across restarts); deploy the source if it changed."""
        await asyncio.to_thread(entry.releases.recover)
        for h in entry.releases.history(1000):  # what failed before stays rejected
            if h["event"] == "rejected" and h.get("release"):
                entry.rejected.add(h["release"])
            elif h["event"] == "rollback" and h.get("failed"):
                entry.rejected.add(h["failed"])
        current = entry.releases.current()
        if current is None:
            if not entry.error:
                await self.deploy(entry.name, source=entry.source, probation=False, reason="first start")
            return
        try:
            manifest = self._manifest(entry, current)
        except ManifestError as exc:
            entry.error = str(exc)
            return
        pool = self._pool(entry, manifest, current)
        await pool.start()
        entry.pool, entry.manifest, entry.error = pool, manifest, ""
        if await asyncio.to_thread(content_hash, entry.source) != current.id:
            self.source_changed(entry.name)

    # -- hot update ------------------------------------------------------------------
    def source_changed(self, name: str) -> None:
        """Called by the watcher: deploy the agent's folder as it is now."""
        if name in self.agents:
            self._background(self.deploy(name, source=self.agents[name].source, reason="source changed"))

    async def deploy(self, name: str, *, source: Path | None = None, release_id: str | None = None,
                     probation: bool = True, reason: str = "") -> DeployResult:
        entry = self._entry(name)
        async with entry.lock:
            if entry.probation is not None and not entry.probation.done():
                await self._finish_probation(entry, passed=True, why="superseded by a newer deploy")
            try:
                release = await asyncio.to_thread(
                    entry.releases.snapshot if source is not None else entry.releases.get,
                    source if source is not None else release_id)  # type: ignore[arg-type]
            except KeyError:
                raise BadRequest(f"agent {name!r} has no release {release_id!r}") from None
            except OSError as exc:
                return self._reject(entry, "", f"cannot snapshot {source}: {exc}")
            if entry.pool is not None and entry.pool.release == release.id and entry.pool.state == "ready":
                return DeployResult(name, release.id, "unchanged")
            standby = entry.previous
            if standby is not None and standby.release == release.id and standby.state == "ready":
                # Back to the release kept warm during probation: a pointer swap.
                await asyncio.to_thread(entry.releases.activate, release.id)
                new, entry.pool, entry.manifest, entry.previous = entry.pool, standby, standby.manifest, None
                if entry.probation is not None:
                    entry.probation.cancel()
                    entry.probation = None
                entry.releases.record("swap", release.id, previous=new.release if new else None, reason=reason)
                if new is not None:
                    self._retire(entry, new)
                return DeployResult(name, release.id, "deployed")
            if source is not None and release.id in entry.rejected:
                return DeployResult(name, release.id, "rejected", "this content was rejected before")
            try:
                manifest = self._manifest(entry, release)
            except ManifestError as exc:
                return self._reject(entry, release.id, str(exc))
            log.info("validating release", extra={"agent": name, "release": release.id, "reason": reason})
            pool = self._pool(entry, manifest, release)
            await pool.start()
            problem = await pool.validate()
            if problem is not None:
                self._background(pool.stop())
                return self._reject(entry, release.id, problem)
            await asyncio.to_thread(entry.releases.activate, release.id)
            old, entry.pool, entry.manifest, entry.error = entry.pool, pool, manifest, ""
            entry.releases.record("swap", release.id, previous=old.release if old else None, reason=reason)
            log.info("release live", extra={"agent": name, "release": release.id,
                                            "previous": old.release if old else None})
            if old is not None and probation and self.config.probation > 0:
                entry.previous = old
                entry.probation = asyncio.ensure_future(self._probation(entry, pool, old))
            elif old is not None:
                self._retire(entry, old)
            return DeployResult(name, release.id, "deployed")

    async def rollback(self, name: str, release_id: str | None = None) -> DeployResult:
        """Go back to ``release_id``, or to the release that served before the current one."""
        entry = self._entry(name)
        if release_id is None:
            current = entry.pool.release if entry.pool else None
            swaps = [h for h in entry.releases.history(1000) if h["event"] in ("swap", "rollback")]
            earlier = [h["release"] for h in reversed(swaps) if h["release"] != current]
            if not earlier:
                raise BadRequest(f"agent {name!r} has no earlier release to roll back to")
            release_id = earlier[0]
        result = await self.deploy(name, release_id=release_id, probation=False, reason="rollback requested")
        if result.outcome == "deployed":
            entry.releases.record("rollback", release_id, reason="requested")
        return result

    async def _probation(self, entry: AgentEntry, new: AgentPool, old: AgentPool) -> None:
        cfg = self.config
        _, old_rate = old.failure_rate()
        loop = asyncio.get_running_loop()
        end = loop.time() + cfg.probation
        why = ""
        while loop.time() < end and not why:
            await asyncio.sleep(min(0.25, cfg.probation))
            served, rate = new.failure_rate()
            if new.state != "ready":
                why = f"the new release's sandbox is {new.state}: {new.detail}"
            elif served >= cfg.probation_min_requests and rate > cfg.probation_max_error_rate \
                    and rate > 2 * old_rate:
                why = (f"{rate:.0%} of {served} requests failed during probation "
                       f"(previous release: {old_rate:.0%}, limit {cfg.probation_max_error_rate:.0%})")
        if not why:
            problem = await new.validate() if new.state == "ready" else new.detail
            why = f"health check after probation: {problem}" if problem else ""
        async with entry.lock:
            if entry.pool is not new:
                return
            await self._finish_probation(entry, passed=not why, why=why)

    async def _finish_probation(self, entry: AgentEntry, passed: bool, why: str) -> None:
        new, old = entry.pool, entry.previous
        entry.previous = None
        current_task = asyncio.current_task()
        if entry.probation is not None and entry.probation is not current_task:
            entry.probation.cancel()
        entry.probation = None
        if new is None or old is None:
            return
        if passed:
            entry.releases.record("probation_passed", new.release)
            self._retire(entry, old)
            return
        # Roll back: the old sandbox never stopped, so this is a pointer swap.
        await asyncio.to_thread(entry.releases.activate, old.release)
        entry.pool, entry.manifest = old, old.manifest
        entry.rejected.add(new.release)
        entry.releases.record("rollback", old.release, failed=new.release, reason=why)
        self.alerts.alert("rollback", entry.name, new.release, why)
        self._background(new.stop())

    def _retire(self, entry: AgentEntry, old: AgentPool) -> None:
        async def retire() -> None:
            await old.stop()  # drains what is still running there
            keep = {p.release for p in (entry.pool, entry.previous) if p is not None}
            removed = await asyncio.to_thread(entry.releases.prune, keep)
            if removed:
                log.info("pruned old releases", extra={"agent": entry.name, "releases": removed})

        self._background(retire())

    def _reject(self, entry: AgentEntry, release: str, why: str) -> DeployResult:
        if release:
            entry.rejected.add(release)
        entry.releases.record("rejected", release, reason=why)
        if entry.pool is None:
            entry.error = why
        self.alerts.alert("update_rejected", entry.name, release, why)
        return DeployResult(entry.name, release, "rejected", why)

    # -- helpers ---------------------------------------------------------------------
    def _manifest(self, entry: AgentEntry, release: Release) -> Manifest:
        manifest = load_manifest(release.path / "agent.yaml")
        if manifest.name != entry.name:
            raise ManifestError(f"{release.path / 'agent.yaml'}: name: the agent {entry.name!r} "
                                f"cannot be renamed to {manifest.name!r} by an update")
        return manifest

    def _pool(self, entry: AgentEntry, manifest: Manifest, release: Release) -> AgentPool:
        pool = AgentPool(manifest, release.id, str(release.path), self.config, self.cgroups,
                         self._uid_for(entry.name), self.runtime_paths)
        self._live.add(pool)  # until it has stopped, whoever stops it
        pool.on_stopped = self._live.discard
        return pool

    def _uid_for(self, name: str) -> int:
        """A stable uid per agent, remembered in ``<state>/uids.json``."""
        path = self.config.state_dir / "uids.json"
        table: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        if name not in table:
            used = set(table.values())
            free = next(i for i in range(self.config.uid_count) if self.config.uid_base + i not in used)
            table[name] = self.config.uid_base + free
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
            os.rename(tmp, path)
        return table[name]

    def add_agent(self, name: str, source: Path) -> AgentEntry:
        """Register a new agent from a folder (``nfctl deploy NEW_NAME PATH``)."""
        releases = AgentReleases(self.config.releases_dir / name, keep=self.config.keep_releases)
        entry = self.agents[name] = AgentEntry(name, source, releases)
        if self.watcher is not None:
            self.watcher.watch(name, source)
        return entry

    def entry(self, name: str) -> AgentEntry:
        return self._entry(name)

    def _entry(self, name: str) -> AgentEntry:
        entry = self.agents.get(name)
        if entry is None:
            raise AgentNotFound(f"no agent named {name!r} (known: {', '.join(sorted(self.agents)) or 'none'})")
        return entry

    def pool(self, name: str) -> AgentPool:
        entry = self._entry(name)
        if entry.pool is None:
            raise AgentUnavailable(f"agent {name!r} cannot run: {entry.error or 'not started'}")
        return entry.pool

    def _background(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_all(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        for entry in self.agents.values():
            if entry.probation is not None:
                entry.probation.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(p.stop() for p in list(self._live)))
        await self.alerts.close()
