"""inotify on the agents' source folders: a burst of saves becomes one change.

Each agent folder (and its subfolders) is watched for files written, moved or
deleted. Editor temp files are ignored. After the last event, the folder must
stay quiet for ``debounce`` seconds before ``on_change(name)`` is called, so
an editor's save dance (write temp, rename, chmod) or a ``git checkout`` of
many files deploys once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

from .releases import is_editor_temp

log = logging.getLogger("neuroflow.watcher")

_MASK = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.DELETE
         | flags.DELETE_SELF | flags.MOVE_SELF | flags.ATTRIB)
_SKIP_DIRS = {"__pycache__", ".git", ".venv"}


class SourceWatcher:
    def __init__(self, on_change: Callable[[str], None], debounce: float = 0.3) -> None:
        self.on_change = on_change
        self.debounce = debounce
        self._inotify = INotify(nonblocking=True)
        self._wd: dict[int, tuple[str, Path]] = {}  # watch descriptor -> (agent, folder)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inotify.fileno(), self._on_readable)

    def watch(self, agent: str, folder: Path) -> None:
        for dirpath, dirnames, _ in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            self._add(agent, Path(dirpath))

    def _add(self, agent: str, folder: Path) -> None:
        try:
            wd = self._inotify.add_watch(folder, _MASK)
        except OSError as exc:  # e.g. fs.inotify.max_user_watches reached
            log.warning("cannot watch %s: %s", folder, exc.strerror, extra={"agent": agent})
            return
        self._wd[wd] = (agent, folder)

    def _on_readable(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return
        for event in events:
            if event.mask & flags.Q_OVERFLOW:  # events were lost: assume everything changed
                for agent in {a for a, _ in self._wd.values()}:
                    self._touch(agent)
                continue
            agent_folder = self._wd.get(event.wd)
            if agent_folder is None:
                continue
            agent, folder = agent_folder
            if event.mask & flags.IGNORED:
                self._wd.pop(event.wd, None)
                continue
            if event.name and is_editor_temp(event.name):
                continue
            new_dir = event.mask & flags.ISDIR and event.mask & (flags.CREATE | flags.MOVED_TO)
            if new_dir and event.name not in _SKIP_DIRS:
                self.watch(agent, folder / event.name)
            self._touch(agent)

    def _touch(self, agent: str) -> None:
        assert self._loop is not None
        timer = self._timers.pop(agent, None)
        if timer is not None:
            timer.cancel()
        self._timers[agent] = self._loop.call_later(self.debounce, self._fire, agent)

    def _fire(self, agent: str) -> None:
        self._timers.pop(agent, None)
        self.on_change(agent)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fileno())
        for timer in self._timers.values():
            timer.cancel()
        self._inotify.close()
