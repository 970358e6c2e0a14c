"""cgroup v1 backend: memory, cpu (CFS quota), cpuacct and pids hierarchies.

For hosts like the development VMs (see DESIGN.md) where those controllers are
mounted as v1. Groups are created only under the supervisor's own cgroup in
each hierarchy, as read from /proc/self/cgroup.
"""

from __future__ import annotations

from pathlib import Path

from .cgroup_common import (
    CPU_PERIOD_US,
    GroupLimits,
    Usage,
    kill_all,
    read_int,
    read_keyed,
    remove_tree,
    rmdir,
    write,
)

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


class V1Group:
    """One group, present once in each hierarchy."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs  # controller -> directory (co-mounted controllers share one)

    @property
    def unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def create(self, limits: GroupLimits | None) -> None:
        for d in self.unique_dirs:
            d.mkdir(exist_ok=True)
        if limits is None:
            return
        if limits.memory is not None:
            mem = self.dirs["memory"]
            write(mem / "memory.limit_in_bytes", limits.memory)
            if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
                write(mem / "memory.memsw.limit_in_bytes", limits.memory)
            write(mem / "memory.swappiness", 0)
        if limits.cpu is not None:
            cpu = self.dirs["cpu"]
            write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
            write(cpu / "cpu.cfs_quota_us", int(limits.cpu * CPU_PERIOD_US))
        if limits.pids is not None:
            write(self.dirs["pids"] / "pids.max", limits.pids)

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.unique_dirs]

    def add(self, pid: int) -> None:
        for procs in self.procs_files():
            write(procs, pid)

    def kill(self) -> None:
        kill_all(self.dirs["pids"] / "cgroup.procs")

    def usage(self) -> Usage:
        mem = self.dirs["memory"]
        oom = read_keyed(mem / "memory.oom_control")
        return Usage(
            memory_bytes=read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=read_int(mem / "memory.max_usage_in_bytes"),
            cpu_usec=read_int(self.dirs["cpuacct"] / "cpuacct.usage") // 1000,
            pids=read_int(self.dirs["pids"] / "pids.current"),
            oom_kills=oom.get("oom_kill", 0),
            pids_refused=read_keyed(self.dirs["pids"] / "pids.events").get("max", 0),
        )

    def remove(self) -> None:
        for d in self.unique_dirs:
            rmdir(d)


class CgroupV1:
    """The supervisor's subtree in every v1 hierarchy it uses."""

    name = "v1"

    def __init__(self, own_dirs: dict[str, Path], instance: str) -> None:
        self.base = {c: d / f"neuroflow.{instance}" for c, d in own_dirs.items()}

    def setup(self) -> None:
        self.reclaim()
        for d in dict.fromkeys(self.base.values()):
            d.mkdir()

    def reclaim(self) -> None:
        """Kill and remove what a previous run of this instance left behind."""
        for d in dict.fromkeys(self.base.values()):
            remove_tree(d)

    def group(self, *parts: str) -> V1Group:
        return V1Group({c: d.joinpath(*parts) for c, d in self.base.items()})

    def remove(self, *parts: str) -> None:
        for d in dict.fromkeys(self.base.values()):
            remove_tree(d.joinpath(*parts))

    def teardown(self) -> None:
        self.reclaim()

    def describe(self) -> str:
        return ", ".join(f"{c}={d}" for c, d in self.base.items())
