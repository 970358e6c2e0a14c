"""Look around the sandbox without harming anything, even if the sandbox failed.

Every probe uses a call that passes the same permission check as the harmful
one but does nothing: signal 0, a wrong reboot magic, writing back a value just
read, setting the clock to its own time, mounting nothing over a scratch dir.
"""

import ctypes
import errno
import os
import resource
import socket
import time

libc = ctypes.CDLL(None, use_errno=True)


def _errno_of(fn) -> str:
    try:
        result = fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return f"ok:{result}"


def _libc_call(name: str, *args) -> str:
    ctypes.set_errno(0)
    rc = getattr(libc, name)(*args)
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _write_back(path: str) -> str:
    def attempt() -> str:
        with open(path) as f:
            value = f.read()
        with open(path, "w") as f:  # same value: harmless even if it succeeds
            f.write(value)
        return "wrote"
    return _errno_of(attempt)


def _read(path: str) -> str:
    return _errno_of(lambda: len(open(path, "rb").read()))


def _mounts() -> dict:
    """Mount point -> per-mount options, from /proc/self/mountinfo."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            out[fields[4]] = fields[5].split(",")
    return out


def probe() -> dict:
    st = _status()
    now = time.clock_gettime(time.CLOCK_REALTIME)

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    ts = Timespec(int(now), int((now % 1) * 1e9))
    os.makedirs("/tmp/probe-mnt", exist_ok=True)
    return {
        "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
        "groups": os.getgroups(),
        "uid_map": [int(x) for x in open("/proc/self/uid_map").read().split()],
        "cap_eff": st.get("CapEff"), "cap_bnd": st.get("CapBnd"), "cap_prm": st.get("CapPrm"),
        "no_new_privs": st.get("NoNewPrivs"), "seccomp": st.get("Seccomp"),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "net_ifaces": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]),
        "root_entries": sorted(os.listdir("/")),
        "rlimits": {name: resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[1]
                    for name in ("AS", "NOFILE", "FSIZE", "CORE", "CPU")},
        "mounts": _mounts(),
        "dev_entries": sorted(os.listdir("/dev")),
        "etc_entries": sorted(os.listdir("/etc")),
        "read_shadow": _read("/etc/shadow"),
        # Opening existing files for append writes nothing even if it succeeds.
        "write_app": _errno_of(lambda: open("/app/agent.py", "ab").close()),
        "write_usr": _errno_of(lambda: open(os.path.realpath("/usr/lib/os-release"), "ab").close()),
        "write_tmp": _errno_of(lambda: open("/tmp/ok", "w").write("x")),
        "core_pattern": _write_back("/proc/sys/kernel/core_pattern"),
        "socket_inet": _errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "socket_netlink": _errno_of(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
        "socket_unix": _errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
        "mount": _libc_call("mount", b"tmpfs", b"/tmp/probe-mnt", b"tmpfs", 0, None),
        "unshare_user": _libc_call("unshare", 0x10000000),
        "unshare_net": _libc_call("unshare", 0x40000000),
        # PTRACE_PEEKUSER on ourselves: ESRCH if ptrace is allowed, EPERM if filtered.
        "ptrace_self_peek": _libc_call("ptrace", 3, os.getpid(), None, None),
        # reboot(2) with a wrong magic number: EINVAL at worst, never a reboot.
        "reboot_bad_magic": _libc_call("syscall", 169, 0xDEADBEEF, 0, 0, None),
        "settime_same": _libc_call("clock_settime", 0, ctypes.byref(ts)),
        "sethostname_same": _libc_call("sethostname", socket.gethostname().encode(),
                                       len(socket.gethostname())),
        "kill_pid1_sig0": _errno_of(lambda: os.kill(1, 0)),
        "bpf": _libc_call("syscall", 321, 0, None, 0),
    }
