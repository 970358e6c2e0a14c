"""The sandbox's file system: a minimal read-only root, built on a tmpfs.

Visible inside: the system libraries and the Python runtime (read-only), the
agent's release folder at ``/app`` (read-only), a size-limited ``/tmp``, a
fresh ``/proc`` for the sandbox's pid namespace, a minimal ``/dev`` (null,
zero, random, urandom), a handful of generated ``/etc`` files and, for an
agent with a network allowlist, the egress proxy's socket folder at
``/run/neuroflow``. Nothing else of the host: the old root is detached after
``pivot_root``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from . import libc

#: Host paths shared read-only when they exist (symlinks, as on merged-/usr
#: systems, are recreated as symlinks).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ssl",
                "/etc/alternatives", "/etc/ld.so.cache")
#: Where the egress proxy's folder (holding ``egress.sock``) appears inside.
EGRESS_DIR = "/run/neuroflow"
DEVICES = ("null", "zero", "random", "urandom")
RO_FLAGS = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV


@dataclass(frozen=True)
class RootSpec:
    """What to put in the sandbox's root."""

    root: str  # an empty directory to build the root on
    app: str  # the agent's release folder, mounted at /app
    runtime_paths: tuple[str, ...]  # Python prefix, virtualenv, NeuroFlow's own sdk/proto
    uid: int
    gid: int
    hostname: str
    tmp_size: int = 64 * 1024 * 1024
    egress_dir: str = ""  # host folder with the egress proxy's socket, shown read-only at /run/neuroflow


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def bind_ro(source: str, target: str) -> None:
    if os.path.isdir(source):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        open(target, "a").close()
    libc.mount(source, target, None, libc.MS_BIND | libc.MS_REC)
    libc.mount(None, target, None, RO_FLAGS)


def _share_system(root: str, paths: Iterable[str]) -> None:
    for path in paths:
        if not os.path.lexists(path):
            continue
        target = root + path
        if os.path.islink(path):
            _mkdirs(os.path.dirname(target))
            if not os.path.lexists(target):
                os.symlink(os.readlink(path), target)
        elif not os.path.lexists(target):
            bind_ro(path, target)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _populate_etc(root: str, spec: RootSpec) -> None:
    etc = root + "/etc"
    _mkdirs(etc)
    _write(etc + "/passwd", f"root:x:0:0::/:/usr/sbin/nologin\nagent:x:{spec.uid}:{spec.gid}::/tmp:/usr/sbin/nologin\n")
    _write(etc + "/group", f"root:x:0:\nagent:x:{spec.gid}:\n")
    _write(etc + "/hosts", f"127.0.0.1\tlocalhost {spec.hostname}\n::1\tlocalhost\n")
    _write(etc + "/hostname", spec.hostname + "\n")
    _write(etc + "/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")
    _write(etc + "/resolv.conf", "")
    if os.path.islink("/etc/localtime"):
        os.symlink(os.readlink("/etc/localtime"), etc + "/localtime")


def _populate_dev(root: str) -> None:
    dev = root + "/dev"
    _mkdirs(dev)
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        target = f"{dev}/{name}"
        open(target, "a").close()
        libc.mount(f"/dev/{name}", target, None, libc.MS_BIND)
        libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_NOSUID | libc.MS_NOEXEC)
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        os.symlink(f"/proc/self/fd/{fd}", f"{dev}/{name}")
    os.symlink("/proc/self/fd", dev + "/fd")
    libc.mount(None, dev, None, libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NOEXEC)


def build_and_enter(spec: RootSpec) -> None:
    """Build the root at ``spec.root`` and ``pivot_root`` into it.

    Runs as root in fresh mount and pid namespaces (we are pid 1 there).
    """
    # Nothing we mount may propagate back to the host.
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    root = spec.root
    libc.mount("tmpfs", root, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=1m,mode=755")
    # /tmp first: a runtime path below it (a checkout in /tmp) is bound on top, not hidden.
    _mkdirs(root + "/tmp")
    libc.mount("tmpfs", root + "/tmp", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"size={spec.tmp_size},mode=1777")
    _share_system(root, SYSTEM_PATHS)
    for path in spec.runtime_paths:
        if not os.path.lexists(root + path):
            bind_ro(path, root + path)
    bind_ro(spec.app, root + "/app")
    if spec.egress_dir:
        # Read-only is enough: connect(2) to a socket is not a write to the file system.
        bind_ro(spec.egress_dir, root + EGRESS_DIR)
    _populate_etc(root, spec)
    _populate_dev(root)
    _mkdirs(root + "/proc")
    libc.mount("proc", root + "/proc", "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    # Kernel tunables stay read-only even for a uid that could write them.
    for path in ("/proc/sys", "/proc/sysrq-trigger"):
        if os.path.exists(root + path):
            libc.mount(root + path, root + path, None, libc.MS_BIND | libc.MS_REC)
            libc.mount(None, root + path, None, RO_FLAGS)
    # pivot_root(".", ".") stacks the old root under the new one; detaching it
    # leaves nothing of the host reachable (see pivot_root(2), NOTES).
    os.chdir(root)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")
    libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV)
