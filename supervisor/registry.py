"""Agents: found in the agents folders, snapshotted into immutable releases.

``<state>/agents/<name>/releases/<id>/`` is a read-only copy of the agent's
folder (``id`` is a hash of its content); ``<state>/agents/<name>/current`` is
a symlink swapped atomically (a new link, then rename(2) over the old one).
Sandboxes run from the resolved release folder, never through the link.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from neuroflow.sdk.manifest import Manifest, ManifestError, load_manifest

from .config import Config
from .errors import AgentNotFound, AgentUnavailable
from .pool import AgentPool
from .sandbox.cgroups import Cgroups

log = logging.getLogger("neuroflow.registry")
_SKIP = {"__pycache__", ".git", ".venv", ".pytest_cache"}


def content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(_files(folder)):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _SKIP]
        out += [Path(dirpath, f) for f in filenames if not f.endswith((".pyc", "~", ".swp"))]
    return out


def snapshot(source: Path, agent_dir: Path) -> tuple[str, Path]:
    """Copy ``source`` into a new immutable release (if not there yet); swap ``current``."""
    release = content_hash(source)
    target = agent_dir / "releases" / release
    if not target.is_dir():
        tmp = agent_dir / "releases" / f".{release}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        for path in _files(source):
            dest = tmp / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        _make_read_only(tmp)
        os.rename(tmp, target)
    link, new_link = agent_dir / "current", agent_dir / ".current.new"
    if new_link.is_symlink():
        new_link.unlink()
    os.symlink(Path("releases") / release, new_link)
    os.rename(new_link, link)  # atomic: readers see the old or the new release
    return release, target


def _make_read_only(folder: Path) -> None:
    # World-readable so the sandbox's unprivileged uid can read it; nobody writes.
    for dirpath, _dirs, files in os.walk(folder):
        os.chmod(dirpath, 0o555)
        for f in files:
            os.chmod(Path(dirpath, f), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


@dataclass
class AgentEntry:
    name: str
    source: Path
    manifest: Manifest | None = None
    error: str = ""
    pool: AgentPool | None = None


class Registry:
    def __init__(self, config: Config, cgroups: Cgroups, runtime_paths: tuple[str, ...]) -> None:
        self.config = config
        self.cgroups = cgroups
        self.runtime_paths = runtime_paths
        self.agents: dict[str, AgentEntry] = {}

    def discover(self) -> None:
        """Read every ``*/agent.yaml`` in the agents folders; bad ones are kept as failed."""
        for base in self.config.agents_dirs:
            if not base.is_dir():
                log.warning("agents folder does not exist", extra={"path": str(base)})
                continue
            for manifest_path in sorted(base.glob("*/agent.yaml")):
                self._add(manifest_path)

    def _add(self, manifest_path: Path) -> None:
        folder = manifest_path.parent
        try:
            manifest = load_manifest(manifest_path)
        except ManifestError as exc:
            log.error("invalid agent manifest: %s", exc, extra={"path": str(manifest_path)})
            self.agents.setdefault(folder.name, AgentEntry(folder.name, folder, error=str(exc)))
            return
        if manifest.name in self.agents and self.agents[manifest.name].manifest is not None:
            other = self.agents[manifest.name].source
            log.error("duplicate agent name %r in %s and %s; keeping the first",
                      manifest.name, other, folder)
            return
        self.agents[manifest.name] = AgentEntry(manifest.name, folder, manifest=manifest)

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

    async def start_all(self) -> None:
        starts = []
        for entry in self.agents.values():
            if entry.manifest is None:
                continue
            try:
                release, release_dir = await asyncio.to_thread(
                    snapshot, entry.source, self.config.releases_dir / entry.name
                )
            except OSError as exc:
                entry.error = f"cannot snapshot {entry.source}: {exc}"
                log.error(entry.error, extra={"agent": entry.name})
                continue
            entry.pool = AgentPool(entry.manifest, release, str(release_dir), self.config,
                                   self.cgroups, self._uid_for(entry.name), self.runtime_paths)
            starts.append(entry.pool.start())
        await asyncio.gather(*starts)

    def pool(self, name: str) -> AgentPool:
        entry = self.agents.get(name)
        if entry is None:
            raise AgentNotFound(f"no agent named {name!r} (known: {', '.join(sorted(self.agents)) or 'none'})")
        if entry.pool is None:
            raise AgentUnavailable(f"agent {name!r} cannot run: {entry.error}")
        return entry.pool

    async def stop_all(self) -> None:
        await asyncio.gather(*(e.pool.stop() for e in self.agents.values() if e.pool is not None))
