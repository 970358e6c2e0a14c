"""Escape attempts against the kernel and the file system, each harmless even if it succeeded.

Every attempt passes the same permission check as the harmful call it stands
for but changes nothing: signal 0 instead of a kill, a wrong reboot magic,
writing back the value just read, a clock set to its own time, a bogus module
image, swapon of a path that does not exist, a mount over a scratch folder in
the sandbox's own /tmp. Each returns what happened as a short string: the
errno name (``EPERM``, ``ENOENT`` ...) or ``ok:<detail>`` when the call worked.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
NR = {
    "personality": 135, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "ptrace": 101, "syslog": 103, "clone": 56, "pivot_root": 155,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "open_tree": 428,
    "fsopen": 430, "clone3": 435, "pidfd_open": 434, "pidfd_getfd": 438, "capset": 126,
    "setresuid": 117, "setgroups": 116, "prctl": 157, "prlimit64": 302, "mknodat": 259,
    "clock_settime": 227,
}

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x10000000, 0x40000000, 0x20000000
SIGCHLD = 17
AT_FDCWD = -100


def errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def guarded(fn: Callable[[], Any]) -> str:
    """Run ``fn``; its OSError becomes the errno name, success ``ok:<result>``."""
    try:
        result = fn()
    except OSError as exc:
        return errname(exc.errno) if exc.errno is not None else f"OSError:{exc}"
    return f"ok:{result}"


def syscall(name: str, *args: Any) -> str:
    """A raw system call: its errno name, or ``ok:<return value>``."""
    ctypes.set_errno(0)
    rc = libc.syscall(NR[name], *args)
    if rc == -1:
        return errname(ctypes.get_errno())
    return f"ok:{rc}"


def sys_fork_like(name: str, *args: Any) -> str:
    """A clone-type call: if it ever succeeds, the child leaves at once."""
    ctypes.set_errno(0)
    rc = libc.syscall(NR[name], *args)
    if rc == 0:  # the child of a clone that should have been refused
        os._exit(0)
    if rc == -1:
        return errname(ctypes.get_errno())
    os.waitpid(rc, 0)
    return f"ok:{rc}"


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


# -- files -------------------------------------------------------------------

def read_file(path: str) -> str:
    def attempt() -> int:
        with open(path, "rb") as f:
            return len(f.read(4096))
    return guarded(attempt)


def list_dir(path: str) -> str:
    return guarded(lambda: len(os.listdir(path)))


def open_append(path: str) -> str:
    """Open an existing file for writing, write nothing: harmless even if allowed."""
    return guarded(lambda: os.close(os.open(path, os.O_WRONLY | os.O_APPEND)))


def create_new(path: str) -> str:
    """Create a new empty file; removed again if that worked."""
    def attempt() -> str:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(path)
        return "created"
    return guarded(attempt)


def write_back(path: str) -> str:
    """Open a kernel tunable for writing and write back the value just read."""
    def attempt() -> str:
        with open(path, "rb") as f:
            value = f.read()
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
        return "wrote"
    return guarded(attempt)


def open_write_only(path: str) -> str:
    """Open for writing and close without writing (for files where any write acts)."""
    return guarded(lambda: os.close(os.open(path, os.O_WRONLY)))


def mknod_device(major: int, minor: int) -> str:
    """A character device node for /dev/mem (1:1) in the sandbox's own /tmp; removed if made."""
    path = "/tmp/escape-mem"
    res = syscall("mknodat", AT_FDCWD, path.encode(), stat.S_IFCHR | 0o600, os.makedev(major, minor))
    if res.startswith("ok"):
        os.unlink(path)
    return res


def chmod_setuid_in_tmp() -> dict[str, Any]:
    """Set the setuid bit on an own file in /tmp, and try to give it to root."""
    path = "/tmp/escape-suid"
    with open("/usr/bin/true", "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    try:
        chmod = guarded(lambda: os.chmod(path, 0o4755))
        st = os.stat(path)
        chown = guarded(lambda: os.chown(path, 0, 0))
        after = os.stat(path)
        return {"chmod": chmod, "setuid_bit": bool(st.st_mode & stat.S_ISUID), "owner": st.st_uid,
                "chown_root": chown, "owner_after": after.st_uid, "auxv": exec_show_auxv(path)}
    finally:
        os.unlink(path)


def exec_show_auxv(path: str, *args: str) -> dict[str, str] | str:
    """Run a program with LD_SHOW_AUXV=1: the dynamic loader prints the ids it got.

    AT_EUID is the effective uid after exec and AT_SECURE is 1 when the exec
    changed credentials (a setuid bit that took effect); nothing else runs.
    """
    import subprocess

    try:
        out = subprocess.run([path, *args], env={"LD_SHOW_AUXV": "1", "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=5, check=False)
    except OSError as exc:
        return errname(exc.errno or 0)
    found = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        if key in ("AT_UID", "AT_EUID", "AT_GID", "AT_EGID", "AT_SECURE"):
            found[key] = value.strip()
    found["exit"] = str(out.returncode)
    return found


def setuid_root_binary() -> dict[str, Any]:
    """Execute a real setuid-root binary (``su --version``, prints nothing about us)."""
    path = "/usr/bin/su" if os.path.exists("/usr/bin/su") else "/bin/su"
    st = os.stat(path)
    return {"path": path, "owner": st.st_uid, "setuid_bit": bool(st.st_mode & stat.S_ISUID),
            "auxv": exec_show_auxv(path, "--version"), "euid": os.geteuid()}


# -- sockets -----------------------------------------------------------------

def open_socket(family: int, kind: int = socket.SOCK_STREAM, proto: int = 0) -> str:
    return guarded(lambda: socket.socket(family, kind, proto).close())


def connect_tcp(host: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def attempt() -> str:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((host, port))
        return "connected"
    return guarded(attempt)


def connect_unix(address: str) -> str:
    """``@name`` is an abstract address (scoped by network namespace), else a path."""
    target: str | bytes = b"\0" + address[1:].encode() if address.startswith("@") else address

    def attempt() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(target)
        return "connected"
    return guarded(attempt)


def dns_lookup(name: str) -> str:
    try:
        infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        names = {v: k for k, v in vars(socket).items() if k.startswith("EAI_") and isinstance(v, int)}
        return names.get(exc.errno, f"gaierror:{exc.errno}")
    return f"ok:{sorted({i[4][0] for i in infos})}"


# -- processes ---------------------------------------------------------------

def kill0(pid: int) -> str:
    return guarded(lambda: os.kill(pid, 0))


def visible_pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def sibling_pid() -> int | None:
    """Another worker of this agent (not us, not the zygote at pid 1), if one runs."""
    me = os.getpid()
    for pid in visible_pids():
        if pid not in (1, me):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == 1:  # parent is the zygote
                        return pid
            except (OSError, ValueError, IndexError):
                continue
    return None


def process_vm_readv(pid: int) -> str:
    buf = ctypes.create_string_buffer(8)
    local = IoVec(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = IoVec(ctypes.c_void_p(0x400000), 8)
    return syscall("process_vm_readv", pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)


def pidfd_getfd(pid: int) -> str:
    fd = libc.syscall(NR["pidfd_open"], pid, 0)
    if fd < 0:
        return "pidfd_open:" + errname(ctypes.get_errno())
    try:
        return syscall("pidfd_getfd", fd, 0, 0)
    finally:
        os.close(fd)


# -- time --------------------------------------------------------------------

def clock_settime_same() -> str:
    now = time.clock_gettime(time.CLOCK_REALTIME)
    ts = Timespec(int(now), int((now % 1) * 1e9))
    return syscall("clock_settime", time.CLOCK_REALTIME, ctypes.byref(ts))


def settimeofday_same() -> str:
    now = time.time()
    tv = Timeval(int(now), int((now % 1) * 1e6))
    return syscall("settimeofday", ctypes.byref(tv), None)


def adjtimex_read() -> str:
    """modes = 0 only reads the clock state; even that is refused."""
    buf = ctypes.create_string_buffer(256)  # struct timex is 208 bytes on x86_64
    return syscall("adjtimex", buf)


def clock_adjtime_read() -> str:
    buf = ctypes.create_string_buffer(256)
    return syscall("clock_adjtime", time.CLOCK_REALTIME, buf)


# -- the table the agent dispatches on -----------------------------------------

ATTEMPTS: dict[str, Callable[[Any], Any]] = {
    # files and the file system
    "read_etc_shadow": lambda _: read_file("/etc/shadow"),
    "read_host_file": lambda arg: read_file(arg),
    "list_host_dir": lambda arg: list_dir(arg),
    "create_in_root": lambda _: create_new("/escape-test"),
    "create_in_app": lambda _: create_new("/app/escape-test"),
    "append_app_file": lambda _: open_append("/app/agent.py"),
    "append_etc_passwd": lambda _: open_append("/etc/passwd"),
    "append_usr_file": lambda _: open_append(os.path.realpath("/usr/lib/os-release")),
    "create_in_proc": lambda _: create_new("/proc/escape-test"),
    "create_in_dev": lambda _: create_new("/dev/escape-test"),
    "proc_sys_write_back": lambda arg: write_back(arg),
    "sysrq_trigger_open": lambda _: open_write_only("/proc/sysrq-trigger"),
    "proc1_root_traversal": lambda _: read_file("/proc/1/root/etc/hostname"),
    "proc1_environ": lambda _: read_file("/proc/1/environ"),
    "proc1_mem": lambda _: read_file("/proc/1/mem"),
    "sibling_mem": lambda _: (read_file(f"/proc/{pid}/mem") if (pid := sibling_pid()) else "no sibling"),
    "proc_kcore": lambda _: read_file("/proc/kcore"),
    "proc_kmsg": lambda _: read_file("/proc/kmsg"),
    "sys_access": lambda _: list_dir("/sys"),
    "cgroupfs_access": lambda _: list_dir("/sys/fs/cgroup"),
    "dev_mem": lambda _: read_file("/dev/mem"),
    "dev_kmsg": lambda _: read_file("/dev/kmsg"),
    "mknod_dev_mem": lambda _: mknod_device(1, 1),
    "chmod_setuid_tmp": lambda _: chmod_setuid_in_tmp(),
    "setuid_root_binary": lambda _: setuid_root_binary(),
    "release_symlink": lambda arg: {"read": read_file(f"/app/{arg}"), "lstat": guarded(
        lambda: stat.filemode(os.lstat(f"/app/{arg}").st_mode))},
    # sockets and the network
    "socket_inet": lambda _: open_socket(socket.AF_INET),
    "socket_inet6": lambda _: open_socket(socket.AF_INET6),
    "socket_netlink": lambda _: open_socket(socket.AF_NETLINK, socket.SOCK_RAW),
    "socket_packet": lambda _: open_socket(socket.AF_PACKET, socket.SOCK_RAW),
    "socket_vsock": lambda _: open_socket(socket.AF_VSOCK),
    "socket_alg": lambda _: open_socket(socket.AF_ALG, socket.SOCK_SEQPACKET),
    "connect_host_tcp": lambda arg: connect_tcp(arg["host"], arg["port"]),
    "connect_host_abstract_unix": lambda arg: connect_unix(arg),
    "connect_supervisor_socket": lambda arg: connect_unix(arg),
    "dns_lookup": lambda arg: dns_lookup(arg),
    # processes
    "ptrace_seize_pid1": lambda _: syscall("ptrace", 0x4206, 1, None, None),  # PTRACE_SEIZE, no stop
    "ptrace_traceme": lambda _: syscall("ptrace", 0, 0, None, None),
    "process_vm_readv_pid1": lambda _: process_vm_readv(1),
    "pidfd_getfd_pid1": lambda _: pidfd_getfd(1),
    "kcmp_self": lambda _: syscall("kcmp", os.getpid(), os.getpid(), 0, 0, 0),
    "kill0_host_pid": lambda arg: kill0(int(arg)),
    "kill0_pid1": lambda _: kill0(1),
    "visible_pids": lambda _: visible_pids(),
    "pid1_identity": lambda _: pid1_identity(),
    # privileges
    "setuid_root": lambda _: syscall("setresuid", 0, 0, 0),
    "setgroups_root": lambda _: syscall("setgroups", 1, ctypes.byref(ctypes.c_uint(0))),
    "capset_all": lambda _: capset_all(),
    "clear_no_new_privs": lambda _: syscall("prctl", 38, 0, 0, 0, 0),  # PR_SET_NO_NEW_PRIVS, 0
    "raise_nofile_hard": lambda _: raise_nofile(),
    # namespaces and mounts
    "mount_tmpfs": lambda _: scratch_mount(),
    "umount_bogus": lambda _: syscall("umount2", b"/nonexistent-escape", 0),
    "pivot_root": lambda _: syscall("pivot_root", b"/tmp", b"/tmp"),
    "chroot": lambda _: syscall("chroot", b"/tmp"),
    "unshare_user": lambda _: syscall("unshare", CLONE_NEWUSER),
    "unshare_mount": lambda _: syscall("unshare", CLONE_NEWNS),
    "setns_own_net": lambda _: setns_own(),
    "clone_newuser": lambda _: sys_fork_like("clone", CLONE_NEWUSER | SIGCHLD, None, None, None, None),
    "clone3": lambda _: clone3_plain(),
    "fsopen": lambda _: syscall("fsopen", b"tmpfs", 0),
    "open_tree": lambda _: syscall("open_tree", AT_FDCWD, b"/tmp", 1),  # OPEN_TREE_CLONE
    "open_by_handle_at": lambda _: syscall("open_by_handle_at", AT_FDCWD, ctypes.create_string_buffer(16), 0),
    "name_to_handle_at": lambda _: syscall("name_to_handle_at", AT_FDCWD, b"/tmp", ctypes.create_string_buffer(136),
                                       ctypes.byref(ctypes.c_int()), 0),
    # the kernel and the machine
    "init_module": lambda _: syscall("init_module", ctypes.create_string_buffer(b"not an ELF module"), 17, b""),
    "finit_module": lambda _: syscall("finit_module", -1, b"", 0),
    "delete_module": lambda _: syscall("delete_module", b"neuroflow_escape_none", 0o4000),  # O_NONBLOCK
    "bpf": lambda _: syscall("bpf", 0, ctypes.create_string_buffer(128), 128),  # BPF_MAP_CREATE, zeroed
    "perf_event_open": lambda _: syscall("perf_event_open", ctypes.create_string_buffer(128), 0, -1, -1, 0),
    "keyctl": lambda _: syscall("keyctl", 0, -3, 0, 0, 0),  # KEYCTL_GET_KEYRING_ID, session keyring
    "add_key": lambda _: syscall("add_key", b"user", b"escape", b"x", 1, -3),
    "request_key": lambda _: syscall("request_key", b"user", b"escape", None, 0),
    "io_uring_setup": lambda _: syscall("io_uring_setup", 1, ctypes.create_string_buffer(120)),
    "userfaultfd": lambda _: syscall("userfaultfd", 0),
    "perf_syslog_read": lambda _: syscall("syslog", 10, None, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    "personality_query": lambda _: syscall("personality", 0xFFFFFFFF),
    "reboot_bad_magic": lambda _: syscall("reboot", 0xDEADBEEF, 0, 0, None),
    "kexec_load_nothing": lambda _: syscall("kexec_load", 0, 0, None, 0x00280000),  # 0 segments, wrong arch
    "kexec_file_load": lambda _: syscall("kexec_file_load", -1, -1, 0, b"", 0xFFFF),
    "swapon_missing": lambda _: syscall("swapon", b"/nonexistent-escape-swap", 0),
    "swapoff_missing": lambda _: syscall("swapoff", b"/nonexistent-escape-swap"),
    "acct_missing": lambda _: syscall("acct", b"/nonexistent-escape-acct"),
    "quotactl": lambda _: syscall("quotactl", 0x800007, b"/tmp", 0, None),  # Q_GETFMT
    "fanotify_init": lambda _: syscall("fanotify_init", 0, 0),
    "iopl_zero": lambda _: syscall("iopl", 0),
    "ioperm_off": lambda _: syscall("ioperm", 0x80, 1, 0),
    "sethostname_same": lambda _: syscall("sethostname", socket.gethostname().encode(), len(socket.gethostname())),
    "setdomainname_same": lambda _: set_domainname_same(),
    "clock_settime_same": lambda _: clock_settime_same(),
    "settimeofday_same": lambda _: settimeofday_same(),
    "adjtimex_read": lambda _: adjtimex_read(),
    "clock_adjtime_read": lambda _: clock_adjtime_read(),
}


def pid1_identity() -> dict[str, Any]:
    """Who pid 1 of this sandbox is: its command line, uids and the signals it catches."""
    with open("/proc/1/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace").split("\0")
    with open("/proc/1/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {"cmdline": [a for a in cmdline if a], "uids": status["Uid"].split(), "sigcgt": status["SigCgt"]}


def capset_all() -> str:
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)(0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return syscall("capset", header, data)


def raise_nofile() -> str:
    """prlimit(RLIMIT_NOFILE) above the hard limit needs CAP_SYS_RESOURCE."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = (ctypes.c_uint64 * 2)(hard * 2, hard * 2)
    return syscall("prlimit64", 0, resource.RLIMIT_NOFILE, new, None)


def scratch_mount() -> str:
    os.makedirs("/tmp/escape-mnt", exist_ok=True)
    res = syscall("mount", b"tmpfs", b"/tmp/escape-mnt", b"tmpfs", 0, None)
    if res.startswith("ok"):
        libc.syscall(NR["umount2"], b"/tmp/escape-mnt", 2)  # MNT_DETACH
    return res


def setns_own() -> str:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        return syscall("setns", fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def set_domainname_same() -> str:
    with open("/proc/sys/kernel/domainname", "rb") as f:
        name = f.read().strip()
    return syscall("setdomainname", name, len(name))


def clone3_plain() -> str:
    """clone3 with no namespace flags at all: still refused (ENOSYS, so libc uses clone)."""
    args = (ctypes.c_uint64 * 11)()
    args[4] = SIGCHLD  # exit_signal
    return sys_fork_like("clone3", args, ctypes.sizeof(args))


def run(name: str, arg: Any) -> Any:
    if name not in ATTEMPTS:
        raise KeyError(name)
    return ATTEMPTS[name](arg)
