"""Resource attacks: each runs into one of the worker's limits and reports where it stopped.

The attacks that the kernel ends by killing the worker (memory, CPU) never
return; the others stop at a refusal (EAGAIN, EMFILE, ENOSPC) and clean up
after themselves, so the worker's next request finds it as before.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from typing import Any


def fork_bomb(n: int) -> dict[str, Any]:
    """Fork until refused; every child sleeps 1 s and exits, and all are reaped."""
    pids: list[int] = []
    error = None
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as exc:
            error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            break
        if pid == 0:
            time.sleep(1)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return {"forked": len(pids), "error": error}


def thread_bomb(n: int) -> dict[str, Any]:
    """Start threads until refused (threads count against pids.max too)."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    error = None
    for _ in range(n):
        t = threading.Thread(target=stop.wait, daemon=True)
        try:
            t.start()
        except RuntimeError as exc:  # "can't start new thread": pthread_create got EAGAIN
            error = str(exc)
            break
        threads.append(t)
    stop.set()
    for t in threads:
        t.join()
    return {"started": len(threads), "error": error}


def memory_bomb(mb: int) -> int:
    """Touch ``mb`` MiB; the memory cgroup's OOM killer ends this long before."""
    hog = [bytearray(1024 * 1024) for _ in range(mb)]
    return len(hog)


def cpu_spin() -> None:
    while True:
        pass


def fd_exhaustion() -> dict[str, Any]:
    """Open /dev/null until EMFILE, then close them all again."""
    fds: list[int] = []
    error = None
    try:
        while len(fds) < 100_000:
            try:
                fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                break
        highest = max(fds) if fds else -1
    finally:
        for fd in fds:
            os.close(fd)
    return {"opened": len(fds), "highest_fd": highest, "error": error}


def fill_tmp(chunk_mb: int, file_mb: int) -> dict[str, Any]:
    """Write files into /tmp until refused; remove them again; report the sizes seen."""
    vfs = os.statvfs("/tmp")
    chunk = b"\xa5" * (chunk_mb * 1024 * 1024)
    written = 0
    error = None
    paths: list[str] = []
    try:
        while written < 1024 * 1024 * 1024 and error is None:
            path = f"/tmp/escape-fill-{len(paths)}"
            paths.append(path)
            with open(path, "wb", buffering=0) as f:
                for _ in range(file_mb // chunk_mb):
                    try:
                        n = f.write(chunk)
                    except OSError as exc:
                        error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                        break
                    written += n or 0
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)
    return {"written": written, "error": error, "tmp_size": vfs.f_blocks * vfs.f_frsize,
            "left_after_cleanup": sorted(p for p in os.listdir("/tmp") if p.startswith("escape-fill"))}


def big_file() -> dict[str, Any]:
    """One file past RLIMIT_FSIZE: EFBIG (Python ignores SIGXFSZ); removed afterwards."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    path = "/tmp/escape-big"
    try:
        with open(path, "wb", buffering=0) as f:
            f.seek(limit - 1)  # sparse: no memory used
            f.write(b"x")
            try:
                f.write(b"y")
                result = "ok"
            except OSError as exc:
                result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    finally:
        os.unlink(path)
    return {"limit": limit, "past_limit": result}


def describe_fd(fd: int) -> dict[str, Any] | None:
    """What an open fd is: kind, target, access mode; None if it is not open."""
    import fcntl

    try:
        st = os.fstat(fd)
    except OSError:
        return None
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = "?"
    kinds = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "dir"),
             (stat.S_ISREG, "file"), (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"))
    kind = next((name for test, name in kinds if test(st.st_mode)), "other")
    if target.startswith("anon_inode:"):
        kind = "anon_inode"
    mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    return {"fd": fd, "kind": kind, "target": target,
            "mode": {os.O_RDONLY: "r", os.O_WRONLY: "w", os.O_RDWR: "rw"}.get(mode, "?")}


def open_fds(upto: int = 1024) -> list[dict[str, Any]]:
    """Every open fd from 0 to ``upto`` (tried one by one, not only what /proc lists)."""
    found = [describe_fd(fd) for fd in range(upto)]
    return [d for d in found if d is not None]
