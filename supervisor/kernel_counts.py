"""Each worker's syscall count, from neuroflow-ebpf's kernel map, for the request's span.

neuroflow-ebpf's syscalls probe keeps, in the value of its ``watched`` map
(cgroup id → agent index), a count of every syscall made in that cgroup: the
lookup each syscall makes anyway finds it, so a per-worker total costs the
kernel one atomic add (``ebpf/probes/nf_common.h``, ``struct nf_watch``).

The daemon hands that map to the supervisor: it connects to ``ebpf-maps.sock``
beside the gRPC socket (``0600``, and the peer must be root), sends one JSON
line ``{"map": "watched", "layout": "nf_watch/1"}`` with the map's fd
(``SCM_RIGHTS``), and keeps the connection open; when it closes, the daemon is
gone and the map is dropped. The supervisor reads the count of a worker's
cgroup before it dispatches a request and after the reply (two ``bpf(2)``
lookups, a few µs), and when no other request overlapped on that worker, the
difference is the number of syscalls the worker made for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import platform
import socket
import struct
from pathlib import Path

log = logging.getLogger("neuroflow.kernel_counts")

SOCKET_NAME = "ebpf-maps.sock"
LAYOUT = "nf_watch/1"
_VALUE = struct.Struct("=IIQ")  # struct nf_watch: u32 agent, u32 pad, u64 syscalls
_KEY_SIZE = 8  # u64 cgroup id
_BPF_MAP_TYPE_HASH = 1
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_OBJ_GET_INFO_BY_FD = 15
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)


class _LookupAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):  # the head of struct bpf_map_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    if _NR_BPF is None:
        raise OSError(errno.ENOSYS, f"no bpf syscall number known for {platform.machine()}")
    ret = _libc.syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def check_map(fd: int) -> str | None:
    """Why ``fd`` is not a map of ``LAYOUT`` (None if it is)."""
    info = _MapInfo()
    try:
        _bpf(_BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    except OSError as exc:
        return f"not a BPF object: {exc.strerror}"
    if (info.type, info.key_size, info.value_size) != (_BPF_MAP_TYPE_HASH, _KEY_SIZE, _VALUE.size):
        return (f"a map of type {info.type} with {info.key_size}-byte keys and {info.value_size}-byte values, "
                f"not a hash of {_KEY_SIZE}-byte keys and {_VALUE.size}-byte values")
    return None


class KernelCounts:
    """The map neuroflow-ebpf shares, while it does: :meth:`syscalls` of a cgroup."""

    def __init__(self) -> None:
        self.fd = -1
        self.socket_path: Path | None = None
        self._listener: socket.socket | None = None
        self._provider: socket.socket | None = None
        self._key = ctypes.c_uint64()
        self._value = ctypes.create_string_buffer(_VALUE.size)
        self._attr = _LookupAttr(0, 0, ctypes.addressof(self._key), ctypes.addressof(self._value), 0)

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def syscalls(self, cgroup_id: int) -> int | None:
        """Syscalls made so far in ``cgroup_id`` (None: no map, or the cgroup is not watched)."""
        if self.fd < 0 or not cgroup_id:
            return None
        self._key.value = cgroup_id
        self._attr.map_fd = self.fd
        try:
            _bpf(_BPF_MAP_LOOKUP_ELEM, self._attr)
        except OSError:  # ENOENT: not (yet) watched
            return None
        return int(_VALUE.unpack(self._value.raw)[2])

    # -- the socket neuroflow-ebpf connects to ---------------------------------------------------
    def start(self, path: Path) -> None:
        """Listen on ``path`` (root only) on the running event loop."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(4)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener, self.socket_path = sock, path
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in (self._listener, self._provider):
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._listener = self._provider = None
        self._drop()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != 0:
            log.warning("refused a kernel map from uid %d (only root's neuroflow-ebpf may share one)", uid)
            conn.close()
            return
        conn.setblocking(False)
        asyncio.get_running_loop().add_reader(conn.fileno(), self._receive, conn)

    def _receive(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            data, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:  # the daemon closed it: it stopped, its map counts no more
            loop.remove_reader(conn.fileno())
            conn.close()
            if conn is self._provider:
                self._provider = None
                self._drop()
                log.info("neuroflow-ebpf stopped sharing its syscall counts")
            return
        reason = self._adopt(data, fds)
        if reason is not None:
            log.warning("ignored a kernel map from neuroflow-ebpf: %s", reason)
            return
        if self._provider is not None and self._provider is not conn:
            loop.remove_reader(self._provider.fileno())
            self._provider.close()
        self._provider = conn
        log.info("neuroflow-ebpf shares its syscall counts: request spans carry neuroflow.syscalls")

    def _adopt(self, data: bytes, fds: list[int]) -> str | None:
        try:
            header = json.loads(data.decode())
            ok = isinstance(header, dict) and header.get("map") == "watched" and header.get("layout") == LAYOUT
        except ValueError:
            ok = False
        reason = None if ok else f"expected one JSON line {{'map': 'watched', 'layout': {LAYOUT!r}}}"
        if reason is None and len(fds) != 1:
            reason = f"expected one fd, got {len(fds)}"
        if reason is None:
            reason = check_map(fds[0])
        if reason is not None:
            for fd in fds:
                os.close(fd)
            return reason
        self._drop()
        self.fd = fds[0]
        return None

    def _drop(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: The supervisor's (started by main when it serves).
COUNTS = KernelCounts()
