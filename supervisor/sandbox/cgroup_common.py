"""What both cgroup backends share: limits, errors, and careful file writes."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


class CgroupError(Exception):
    """A cgroup operation the kernel refused; the message names file and value."""


@dataclass(frozen=True, slots=True)
class GroupLimits:
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores
    pids: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    cpu_usec: int = 0
    pids: int = 0
    oom_kills: int = 0
    #: Forks refused because pids.max was reached (``pids.events`` "max").
    pids_refused: int = 0


CPU_PERIOD_US = 100_000


def write(path: Path, value: str | int) -> None:
    """Write a cgroup file with an explicit close, so the kernel's refusal is seen.

    (A write through a buffered, unclosed Python file object can swallow it;
    see DESIGN.md.)
    """
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"writing {value!r} to {path}: {exc.strerror}") from exc


def read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def read_int(path: Path, default: int = 0) -> int:
    try:
        text = read(path).strip()
    except OSError:
        return default
    return default if text in ("", "max") else int(text)


def read_keyed(path: Path) -> dict[str, int]:
    """Parse ``key value`` lines (memory.events, cpu.stat, memory.oom_control)."""
    try:
        lines = read(path).splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def pids_in(procs_file: Path) -> list[int]:
    try:
        return [int(p) for p in read(procs_file).split()]
    except OSError:
        return []


def kill_all(procs_file: Path, timeout: float = 5.0) -> None:
    """SIGKILL every process in a group until it is empty (no cgroup.kill on v1)."""
    deadline = time.monotonic() + timeout
    while pids := pids_in(procs_file):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise CgroupError(f"{procs_file}: processes {pids} survived SIGKILL for {timeout} s")
        time.sleep(0.005)


def rmdir(path: Path, timeout: float = 2.0) -> None:
    """Remove a group; a just-killed group stays busy until its tasks are reaped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"removing {path}: {exc.strerror}") from exc
            time.sleep(0.01)


def remove_tree(path: Path) -> None:
    """Kill everything below ``path`` and remove its groups, deepest first."""
    if not path.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        kill_all(Path(dirpath) / "cgroup.procs")
        rmdir(Path(dirpath))
