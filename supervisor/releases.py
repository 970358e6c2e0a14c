"""Immutable releases of an agent, and the ``current`` link that picks one.

Layout under ``<state>/agents/<name>/``::

    releases/<id>/      read-only copy of the agent folder; id = hash of its content
    current -> releases/<id>
    history.jsonl       one line per deploy, swap, rollback or rejection

``current`` is only ever replaced atomically: a new symlink ``.current.new``
is made, then ``rename(2)``-d over ``current``. A crash between the two leaves
``.current.new`` behind, which :meth:`AgentReleases.recover` removes; a crash
while copying leaves a ``.<id>.tmp`` folder, also removed. Sandboxes run from
the resolved release folder, never through the link, so a swap can never mix
two versions in one process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SKIP_DIRS = {"__pycache__", ".git", ".venv", ".pytest_cache", ".mypy_cache"}


def is_editor_temp(name: str) -> bool:
    """Files editors write beside the real one while saving (vim, emacs, JetBrains...)."""
    return (name.endswith(("~", ".swp", ".swx", ".swo", ".tmp", ".pyc", ".part"))
            or name.startswith((".#", "#", ".~")) or name == "4913" or name.startswith(".goutputstream"))


def source_files(folder: Path) -> list[Path]:
    """The regular files of an agent folder, in a stable order.

    Symlinks (to files or folders) and special files are never part of a
    release: the supervisor copies as root, and following a link would copy
    whatever host file it names into a folder the sandbox can read.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked folders
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
                             and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not is_editor_temp(name) and stat.S_ISREG(os.lstat(path).st_mode):
                out.append(path)
    return out


def read_regular(path: Path) -> bytes:
    """Read a file that must still be a regular file, never through a symlink
    (one swapped in after :func:`source_files` looked fails with ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def content_hash(folder: Path) -> str:
    """A release id: the same files with the same content give the same id."""
    digest = hashlib.sha256()
    for path in source_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(read_regular(path) + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Release:
    id: str
    path: Path
    created: float


class AgentReleases:
    """The releases of one agent."""

    def __init__(self, agent_dir: Path, keep: int = 5) -> None:
        self.dir = agent_dir
        self.keep = keep
        self.releases_dir = agent_dir / "releases"
        self.link = agent_dir / "current"
        self.history_file = agent_dir / "history.jsonl"

    def recover(self) -> None:
        """Undo what a crash in the middle of :meth:`snapshot` or :meth:`activate` left."""
        new_link = self.dir / ".current.new"
        if new_link.is_symlink():
            new_link.unlink()
        if self.releases_dir.is_dir():
            for tmp in self.releases_dir.glob(".*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)
        if self.link.is_symlink() and not self.link.resolve().is_dir():
            self.link.unlink()  # points at a release that is gone: no current

    def snapshot(self, source: Path) -> Release:
        """Copy ``source`` into a new read-only release, unless one with its content exists."""
        release_id = content_hash(source)
        target = self.releases_dir / release_id
        if not target.is_dir():
            tmp = self.releases_dir / f".{release_id}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for path in source_files(source):
                dest = tmp / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(read_regular(path))
            _make_read_only(tmp)
            os.rename(tmp, target)
        return self.get(release_id)

    def get(self, release_id: str) -> Release:
        path = self.releases_dir / release_id
        if not path.is_dir():
            raise KeyError(release_id)
        return Release(release_id, path, path.stat().st_mtime)

    def current(self) -> Release | None:
        if not self.link.is_symlink():
            return None
        return self.get(Path(os.readlink(self.link)).name)

    def activate(self, release_id: str) -> None:
        """Point ``current`` at a release: a new link, then rename(2) over the old one."""
        self.get(release_id)
        new_link = self.dir / ".current.new"
        if new_link.is_symlink():
            new_link.unlink()
        os.symlink(Path("releases") / release_id, new_link)
        os.rename(new_link, self.link)

    def list(self) -> list[Release]:
        if not self.releases_dir.is_dir():
            return []
        found = [self.get(p.name) for p in self.releases_dir.iterdir() if not p.name.startswith(".")]
        return sorted(found, key=lambda r: r.created, reverse=True)

    def prune(self, protect: set[str]) -> list[str]:
        """Keep the newest ``keep`` releases (and any in ``protect``); remove the rest."""
        removed = []
        for release in self.list()[self.keep:]:
            if release.id in protect:
                continue
            _make_writable(release.path)
            shutil.rmtree(release.path)
            removed.append(release.id)
        return removed

    def record(self, event: str, release: str, **fields: Any) -> None:
        line = {"ts": time.time(), "event": event, "release": release, **fields}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.history_file, "a") as f:
            f.write(json.dumps(line) + "\n")

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        if not self.history_file.exists():
            return []
        lines = self.history_file.read_text().splitlines()[-limit:]
        return [json.loads(line) for line in lines if line.strip()]


def _make_read_only(folder: Path) -> None:
    # World-readable so a sandbox's unprivileged uid can read it; nobody may write.
    for dirpath, _dirs, files in os.walk(folder):
        os.chmod(dirpath, 0o555)
        for f in files:
            os.chmod(Path(dirpath, f), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _make_writable(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder):
        os.chmod(dirpath, 0o755)
