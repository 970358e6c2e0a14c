"""Pick a cgroup backend at start: v2, v1, or hybrid (v1 limits + v2 identity).

* **v2** — the unified hierarchy has memory, cpu and pids: the production case.
* **hybrid** — those controllers are v1 (like the development VMs, see
  DESIGN.md) but a v2 hierarchy is mounted too: limits live in v1, while each
  worker also gets a v2 group so ``cgroup.kill`` works and eBPF can recognise
  it by cgroup id.
* **v1** — only v1 is mounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import cgroup_v1, cgroup_v2
from .cgroup_common import CgroupError, GroupLimits, Usage


@dataclass
class Mounts:
    v2: Path | None = None
    v2_own: str = "/"
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> own dir


def _mountinfo() -> list[tuple[str, str, str, list[str]]]:
    """(root, mount point, fstype, super options) of every mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, opts = [*right.split(), "", "", ""][:3]
        out.append((fields[3], fields[4], fstype, opts.split(",")))
    return out


def _join(mount_point: str, mount_root: str, path: str) -> Path:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):] or "/"
    return Path(mount_point + path.rstrip("/")) if path != "/" else Path(mount_point)


def discover() -> Mounts:
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    found = Mounts()
    for root, point, fstype, opts in _mountinfo():
        if fstype == "cgroup2" and found.v2 is None and "" in own:
            found.v2 = _join(point, root, own[""])
            found.v2_own = own[""]
        elif fstype == "cgroup":
            for c in cgroup_v1.CONTROLLERS:
                if c in opts and c in own and c not in found.v1:
                    found.v1[c] = _join(point, root, own[c])
    return found


class Leaf:
    """One cgroup in every hierarchy the backend uses."""

    def __init__(self, v1: cgroup_v1.V1Group | None, v2: cgroup_v2.V2Group | None) -> None:
        self.v1, self.v2 = v1, v2
        self._limiter = v2 if v1 is None else v1

    def procs_files(self) -> list[str]:
        files = (self.v1.procs_files() if self.v1 else []) + (self.v2.procs_files() if self.v2 else [])
        return [str(f) for f in files]

    def add(self, pid: int) -> None:
        for part in (self.v1, self.v2):
            if part is not None:
                part.add(pid)

    def kill(self) -> None:
        if self.v2 is not None:
            self.v2.kill()
        if self.v1 is not None:
            self.v1.kill()

    def usage(self) -> Usage:
        assert self._limiter is not None
        return self._limiter.usage()

    @property
    def cgroup_id(self) -> int:
        return self.v2.inode if self.v2 is not None else 0

    def remove(self) -> None:
        for part in (self.v2, self.v1):
            if part is not None:
                part.remove()


class Cgroups:
    """The supervisor's cgroup subtree, whichever backend the host allows."""

    def __init__(self, instance: str, mounts: Mounts | None = None) -> None:
        mounts = mounts or discover()
        self.v1: cgroup_v1.CgroupV1 | None = None
        self.v2: cgroup_v2.CgroupV2 | None = None
        v2_controllers: tuple[str, ...] = ()
        if mounts.v2 is not None:
            available = set((mounts.v2 / "cgroup.controllers").read_text().split())
            v2_controllers = tuple(c for c in cgroup_v2.CONTROLLERS if c in available)
        v1_ok = all(c in mounts.v1 for c in cgroup_v1.CONTROLLERS)
        if mounts.v2 is not None and len(v2_controllers) == len(cgroup_v2.CONTROLLERS):
            self.backend = "v2"
            self.v2 = cgroup_v2.CgroupV2(mounts.v2, instance, v2_controllers)
            self.controllers = list(v2_controllers)
            self.reason = f"unified hierarchy at {mounts.v2} offers {' '.join(v2_controllers)}"
        elif v1_ok:
            self.v1 = cgroup_v1.CgroupV1(mounts.v1, instance)
            self.controllers = list(cgroup_v1.CONTROLLERS)
            if mounts.v2 is not None:
                self.backend = "hybrid"
                self.v2 = cgroup_v2.CgroupV2(mounts.v2, instance, ())
                self.reason = (
                    f"v2 at {mounts.v2} lacks {' '.join(sorted(set(cgroup_v2.CONTROLLERS) - set(v2_controllers)))}; "
                    "limits use v1, v2 groups give cgroup.kill and cgroup ids"
                )
            else:
                self.backend = "v1"
                self.reason = "no cgroup v2 hierarchy is mounted"
        else:
            raise CgroupError(
                "no usable cgroup controllers: need memory, cpu and pids in cgroup v2 "
                f"(found {list(v2_controllers)}) or v1 (found {sorted(mounts.v1)})"
            )

    @property
    def root(self) -> str:
        return "; ".join(b.describe() for b in (self.v2, self.v1) if b is not None)

    def setup(self) -> None:
        for b in (self.v2, self.v1):
            if b is not None:
                b.setup()

    def teardown(self) -> None:
        for b in (self.v2, self.v1):
            if b is not None:
                b.teardown()

    def remove(self, *parts: str) -> None:
        """Kill what is left in a group and its subgroups, and remove them all."""
        for backend in (self.v2, self.v1):
            if backend is not None:
                backend.remove(*parts)

    def create(self, *parts: str, limits: GroupLimits | None = None, parent: bool = False) -> Leaf:
        """Create a group (``parent=True`` for one that will hold other groups)."""
        v1 = self.v1.group(*parts) if self.v1 else None
        v2 = self.v2.group(*parts) if self.v2 else None
        if v1 is not None:
            v1.create(limits)
        if v2 is not None:
            v2.create(None if v1 is not None else limits, parent_of_leaves=parent)
        return Leaf(v1, v2)
