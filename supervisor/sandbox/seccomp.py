"""seccomp: named profiles in YAML, compiled with libseccomp (pyseccomp).

A profile is built in the launcher before any agent code exists and loaded as
the very last step of containment (see ``sandbox.contain``), after which the
filter applies to the zygote and every worker it forks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyseccomp as sc
import yaml

from neuroflow.sdk.manifest import ManifestError

_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


@dataclass(frozen=True)
class Profile:
    """A deny-list (``deny:``, everything else allowed) or an allow-list (``allow:``)."""

    name: str
    deny: tuple[str, ...]
    socket_families: tuple[int, ...]
    deny_namespace_clone: bool
    allow: tuple[str, ...] = ()
    #: Refused without an event: calls that libraries make to probe for a feature.
    quiet: tuple[str, ...] = ()

    @property
    def is_allow_list(self) -> bool:
        return bool(self.allow)


def profile_names() -> list[str]:
    return sorted(p.stem for p in Path(__file__).with_name("profiles").glob("*.yaml"))


def load_profile(name: str) -> Profile:
    """Load ``profiles/<name>.yaml`` shipped with NeuroFlow."""
    ref = Path(__file__).with_name("profiles") / f"{name}.yaml"
    if not ref.is_file():
        raise ManifestError(f"seccomp profile {name!r} does not exist (available: {', '.join(profile_names())})")
    return parse_profile(yaml.safe_load(ref.read_text()), str(ref))


def parse_profile(raw: Any, where: str) -> Profile:
    if not isinstance(raw, dict) or (isinstance(raw.get("deny"), list) == isinstance(raw.get("allow"), list)):
        raise ManifestError(f"{where}: expected a mapping with either a 'deny' or an 'allow' list")
    families = []
    for fam in raw.get("socket_families", []):
        value = getattr(socket, str(fam), None)
        if not isinstance(value, int):
            raise ManifestError(f"{where}: socket_families: unknown address family {fam!r}")
        families.append(value)
    return Profile(
        name=str(raw.get("name", "")),
        deny=tuple(str(s) for s in raw.get("deny") or ()),
        allow=tuple(str(s) for s in raw.get("allow") or ()),
        quiet=tuple(str(s) for s in raw.get("quiet") or ()),
        socket_families=tuple(families),
        deny_namespace_clone=bool(raw.get("deny_namespace_clone", True)),
    )


def _known(name: str) -> bool:
    try:
        return sc.resolve_syscall(sc.system_arch(), name) >= 0
    except (ValueError, OSError):
        return False


def syscall_name(arch: int, nr: int) -> str:
    try:
        name = sc.resolve_syscall(arch, nr)
    except (ValueError, OSError):
        return f"syscall {nr}"
    if isinstance(name, bytes):
        return name.decode()
    if isinstance(name, str):
        return name
    return f"syscall {nr}"


def build_filter(profile: Profile, *, notify: bool = True) -> sc.SyscallFilter:
    """Compile the profile. Syscalls this architecture lacks are skipped.

    With ``notify`` a refused call is not failed by the kernel itself: it is
    handed to the supervisor (``SECCOMP_RET_USER_NOTIF``, see :class:`Listener`),
    which records a violation event naming the syscall and fails the call
    with :func:`refusal_errno`. The listener fd must leave the sandbox before
    any agent code runs: whoever holds it could let a refused call through.
    """
    refuse = sc.NOTIFY if notify else sc.ERRNO(errno.EPERM)
    no_family = sc.NOTIFY if notify else sc.ERRNO(errno.EAFNOSUPPORT)
    ns_mask = 0
    for flag in _NAMESPACE_FLAGS:
        ns_mask |= flag
    if profile.is_allow_list:
        filt = sc.SyscallFilter(refuse)
        for name in profile.quiet if notify else ():
            if _known(name) and name not in profile.allow:
                filt.add_rule(sc.ERRNO(errno.EPERM), name)
        for name in profile.allow:
            if name in ("socket", "clone", "clone3") or not _known(name):
                continue
            filt.add_rule(sc.ALLOW, name)
        for fam in profile.socket_families:
            filt.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.EQ, fam))
        if "clone" in profile.allow:
            filt.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, ns_mask, 0))
        if _known("clone3"):
            filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        return filt
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in profile.deny:
        if _known(name):
            filt.add_rule(sc.ERRNO(errno.EPERM) if name in profile.quiet else refuse, name)
    if profile.socket_families:
        # One rule per call matches "family is none of the allowed ones".
        args = [sc.Arg(0, sc.NE, fam) for fam in profile.socket_families]
        filt.add_rule(no_family, "socket", *args)
    if profile.deny_namespace_clone:
        for flag in _NAMESPACE_FLAGS:
            filt.add_rule(refuse, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        if _known("clone3"):
            filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return filt


def notify_fd(filt: sc.SyscallFilter) -> int:
    """The listener fd of a loaded filter that has notify rules."""
    fd = int(sc._libseccomp.seccomp_notify_fd(filt._filter))  # pyseccomp has no public accessor
    if fd < 0:
        raise OSError(-fd, f"seccomp_notify_fd: {os.strerror(-fd)}")
    return fd


def refusal_errno(name: str) -> int:
    """What a refused call returns: what an unsandboxed kernel would say for 'not here'."""
    return errno.EAFNOSUPPORT if name == "socket" else errno.EPERM


# struct seccomp_notif / seccomp_notif_resp (linux/seccomp.h) and their ioctls.
_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, data.nr, data.arch, data.ip, data.args[6]
_NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags
_IOCTL_NOTIF_RECV = (3 << 30) | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_IOCTL_NOTIF_SEND = (3 << 30) | (_NOTIF_RESP.size << 16) | (ord("!") << 8) | 1


@dataclass(frozen=True)
class Violation:
    pid: int  # in the listener's pid namespace: the supervisor's, so a host pid
    syscall: str
    args: tuple[int, ...]
    errno: int


class Listener:
    """The supervisor's end of one sandbox's seccomp notifications.

    :meth:`handle` answers every pending notification with the refusal errno
    and returns what was refused. It never blocks: it receives only when the
    fd polls readable, and sets ``done`` once every process under the filter
    is gone; the owner then stops watching the fd and calls :meth:`close`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False
        self.closed = False
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def handle(self) -> list[Violation]:
        out = []
        while not self.done:
            events = dict(self._poll.poll(0)).get(self.fd, 0)
            if not events & select.POLLIN:
                self.done = bool(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL))
                break
            buf = bytearray(_NOTIF.size)
            try:
                fcntl.ioctl(self.fd, _IOCTL_NOTIF_RECV, buf, True)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR):  # the caller died meanwhile
                    continue
                self.done = True
                break
            nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(buf)
            name = syscall_name(arch, nr)
            err = refusal_errno(name)
            with contextlib.suppress(OSError):  # ENOENT: it died before our answer
                fcntl.ioctl(self.fd, _IOCTL_NOTIF_SEND, _NOTIF_RESP.pack(nid, 0, -err, 0))
            out.append(Violation(pid=pid, syscall=name, args=tuple(args), errno=err))
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = self.done = True
            os.close(self.fd)
