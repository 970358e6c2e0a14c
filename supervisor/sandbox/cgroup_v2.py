"""cgroup v2 backend: one unified hierarchy, a delegated subtree.

Under systemd (``Delegate=yes``) the supervisor owns its service's cgroup; the
"no internal processes" rule means it first moves itself into a ``supervisor``
leaf, then enables controllers for its subtree. Started by hand, it needs a
cgroup it may enable controllers in (the root, or ``systemd-run --scope -p
Delegate=yes``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .cgroup_common import (
    CPU_PERIOD_US,
    CgroupError,
    GroupLimits,
    Usage,
    kill_all,
    pids_in,
    read,
    read_int,
    read_keyed,
    remove_tree,
    rmdir,
    write,
)

CONTROLLERS = ("memory", "cpu", "pids")


def enable_controllers(directory: Path, wanted: tuple[str, ...]) -> None:
    have = set(read(directory / "cgroup.subtree_control").split())
    missing = [c for c in wanted if c not in have]
    if missing:
        write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


class V2Group:
    def __init__(self, path: Path, controllers: tuple[str, ...]) -> None:
        self.path = path
        self.controllers = controllers

    def create(self, limits: GroupLimits | None, parent_of_leaves: bool = False) -> None:
        self.path.mkdir(exist_ok=True)
        if parent_of_leaves and self.controllers:
            enable_controllers(self.path, self.controllers)
        if limits is None:
            return
        if limits.memory is not None and "memory" in self.controllers:
            write(self.path / "memory.max", limits.memory)
            if (self.path / "memory.swap.max").exists():  # absent without swap accounting
                write(self.path / "memory.swap.max", 0)
            write(self.path / "memory.oom.group", 1)
        if limits.cpu is not None and "cpu" in self.controllers:
            write(self.path / "cpu.max", f"{int(limits.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        if limits.pids is not None and "pids" in self.controllers:
            write(self.path / "pids.max", limits.pids)

    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def add(self, pid: int) -> None:
        write(self.path / "cgroup.procs", pid)

    @property
    def inode(self) -> int:
        """The cgroup id that eBPF's bpf_get_current_cgroup_id() reports."""
        return os.stat(self.path).st_ino

    def kill(self) -> None:
        if (self.path / "cgroup.kill").exists():
            write(self.path / "cgroup.kill", 1)
        kill_all(self.path / "cgroup.procs")

    def usage(self) -> Usage:
        cpu = read_keyed(self.path / "cpu.stat")
        events = read_keyed(self.path / "memory.events")
        return Usage(
            memory_bytes=read_int(self.path / "memory.current"),
            memory_peak_bytes=read_int(self.path / "memory.peak"),
            cpu_usec=cpu.get("usage_usec", 0),
            pids=read_int(self.path / "pids.current"),
            oom_kills=events.get("oom_kill", 0),
            pids_refused=read_keyed(self.path / "pids.events").get("max", 0),
        )

    def remove(self) -> None:
        rmdir(self.path)


class CgroupV2:
    name = "v2"

    def __init__(self, own_dir: Path, instance: str, controllers: tuple[str, ...]) -> None:
        self.own = own_dir
        self.controllers = controllers
        self.base = own_dir / f"neuroflow.{instance}"

    def setup(self) -> None:
        self.reclaim()
        if self.controllers:
            self._delegate()
        V2Group(self.base, self.controllers).create(None, parent_of_leaves=True)

    def _delegate(self) -> None:
        have = set(read(self.own / "cgroup.subtree_control").split())
        if all(c in have for c in self.controllers):
            return
        is_root = not (self.own / "cgroup.procs").exists() or self.own == Path("/sys/fs/cgroup")
        others = [p for p in pids_in(self.own / "cgroup.procs") if p != os.getpid()]
        if not is_root and others:
            raise CgroupError(
                f"cannot enable {' '.join(self.controllers)} below {self.own}: it holds other "
                f"processes {others[:5]}; run under systemd with Delegate=yes, or "
                "`systemd-run --scope -p Delegate=yes neuroflow-supervisor ...`"
            )
        if not is_root:  # no internal processes: move ourselves into a leaf first
            leaf = self.own / "supervisor"
            leaf.mkdir(exist_ok=True)
            write(leaf / "cgroup.procs", os.getpid())
        enable_controllers(self.own, self.controllers)

    def reclaim(self) -> None:
        if (self.base / "cgroup.kill").exists():
            write(self.base / "cgroup.kill", 1)
        remove_tree(self.base)

    def group(self, *parts: str) -> V2Group:
        return V2Group(self.base.joinpath(*parts), self.controllers)

    def remove(self, *parts: str) -> None:
        remove_tree(self.base.joinpath(*parts))

    def teardown(self) -> None:
        self.reclaim()

    def describe(self) -> str:
        return str(self.base)
