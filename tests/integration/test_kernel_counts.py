"""The handover of neuroflow-ebpf's ``watched`` map to the supervisor, with real BPF maps
(``bpf(2)`` straight from ctypes, no BCC): both sides' code, on a socket in a test folder."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from neuroflow.ebpf.share import LAYOUT as DAEMON_LAYOUT, SOCKET_NAME as DAEMON_SOCKET, Sharing, offer
from neuroflow.supervisor import kernel_counts
from neuroflow.supervisor.kernel_counts import LAYOUT, SOCKET_NAME, KernelCounts, _bpf

pytestmark = pytest.mark.root

_BPF_MAP_CREATE, _BPF_MAP_UPDATE_ELEM = 0, 2


class _CreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32)]


def _create(value_size: int, map_type: int = 1) -> int:
    return _bpf(_BPF_MAP_CREATE, _CreateAttr(map_type, 8, value_size, 16, 0))  # a hash of u64 keys


def _set(fd: int, cgroup_id: int, syscalls: int) -> None:
    key = ctypes.c_uint64(cgroup_id)
    value = ctypes.create_string_buffer(struct.pack("=IIQ", 3, 0, syscalls))
    _bpf(_BPF_MAP_UPDATE_ELEM, kernel_counts._LookupAttr(fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0))


async def _until(check, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_both_sides_agree_on_the_contract() -> None:
    assert (DAEMON_SOCKET, DAEMON_LAYOUT) == (SOCKET_NAME, LAYOUT)


def test_the_daemon_hands_over_its_map_and_the_supervisor_reads_it(tmp_path: Path) -> None:
    async def main() -> None:
        counts = KernelCounts()
        path = tmp_path / SOCKET_NAME
        counts.start(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        good = _create(16)
        _set(good, 42, 1234)
        sharing = Sharing(str(path))
        task = asyncio.create_task(offer(sharing, good))
        await _until(lambda: counts.active and sharing.shared)
        assert counts.syscalls(42) == 1234 and counts.syscalls(43) is None and counts.syscalls(0) is None
        _set(good, 42, 2000)  # the kernel's counting shows through the supervisor's own fd
        assert counts.syscalls(42) == 2000

        # A map of another layout (a per-CPU hash here), or a header that does not name the layout, is refused.
        bad = _create(16, map_type=5)
        for header, fd in ((json.dumps({"map": "watched", "layout": LAYOUT}), bad),
                           (json.dumps({"map": "watched", "layout": "nf_watch/0"}), good)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
                other.connect(str(path))
                socket.send_fds(other, [header.encode() + b"\n"], [fd])
                await asyncio.sleep(0.2)
            assert counts.syscalls(42) == 2000  # still the first provider's map
        os.close(bad)

        task.cancel()  # the daemon stops: its connection closes, the map is dropped
        await asyncio.gather(task, return_exceptions=True)
        await _until(lambda: not counts.active)
        assert counts.syscalls(42) is None
        os.close(good)
        counts.close()
        assert not path.exists()

    asyncio.run(main())
