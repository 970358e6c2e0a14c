"""Namespaces: which ones a sandbox gets, and what is set up inside them.

The launcher (root, outside) calls :func:`unshare`; the first child, pid 1 of
the new pid namespace, calls :func:`init_inside` before dropping privileges.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from . import libc

#: pid, mount, net (only ``lo``), ipc, uts (own hostname), cgroup (own view).
SANDBOX_FLAGS = (
    libc.CLONE_NEWPID
    | libc.CLONE_NEWNS
    | libc.CLONE_NEWNET
    | libc.CLONE_NEWIPC
    | libc.CLONE_NEWUTS
    | libc.CLONE_NEWCGROUP
)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def unshare() -> None:
    """Leave the host's namespaces. The caller's *next child* is pid 1 inside."""
    libc.unshare(SANDBOX_FLAGS)


def bring_up_loopback() -> None:
    """A new network namespace has only ``lo``, and it starts down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def init_inside(hostname: str) -> None:
    """Set up the namespaces from inside, while still privileged."""
    libc.sethostname(hostname)
    bring_up_loopback()
