"""Share the syscalls probe's ``watched`` map with the supervisor, for per-request syscall counts.

Each value of that map (``struct nf_watch`` in ``probes/nf_common.h``) counts
every syscall made in its worker's cgroup. The supervisor reads it when it
dispatches a request and when the reply comes back, and puts the difference on
the request's span (``neuroflow.supervisor.kernel_counts``).

The daemon connects to ``ebpf-maps.sock`` beside the supervisor's gRPC socket,
sends one JSON line naming the map and its layout with the map's fd
(``SCM_RIGHTS``), and keeps the connection open for as long as it runs: the
supervisor drops the map when it closes. A restarted supervisor is offered the
map again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass

log = logging.getLogger("neuroflow.ebpf")

SOCKET_NAME = "ebpf-maps.sock"  # neuroflow.supervisor.kernel_counts.SOCKET_NAME
LAYOUT = "nf_watch/1"  # neuroflow.supervisor.kernel_counts.LAYOUT


@dataclass
class Sharing:
    """What ``/status`` says about the map handed to the supervisor."""

    socket: str
    shared: bool = False
    error: str = ""


def socket_beside(supervisor_socket: str) -> str | None:
    """Where the supervisor listens for the map: beside its gRPC Unix socket (None for a TCP target)."""
    if not supervisor_socket or ":" in supervisor_socket:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(supervisor_socket)), SOCKET_NAME)


async def offer(sharing: Sharing, map_fd: int, *, retry_max: float = 5.0) -> None:
    """Hand ``map_fd`` over and hold the connection; reconnect whenever it ends (forever)."""
    loop = asyncio.get_running_loop()
    header = json.dumps({"map": "watched", "layout": LAYOUT}).encode() + b"\n"
    delay = 0.2
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sharing.socket)
            socket.send_fds(sock, [header], [map_fd])
            sharing.shared, sharing.error, delay = True, "", 0.2
            log.info("sharing per-worker syscall counts with the supervisor at %s", sharing.socket)
            while await loop.sock_recv(sock, 64):  # nothing is sent back; EOF: the supervisor is gone
                pass
            sharing.error = "the supervisor closed the connection"
        except OSError as exc:
            sharing.error = f"cannot reach {sharing.socket}: {exc.strerror or exc}"
        finally:
            sock.close()
        sharing.shared = False
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
