"""Escape attempts against the kernel, the file system and the network, from inside a worker.

Each test runs one attempt in a worker of the ``escape`` test agent
(tests/agents/escape/attempts.py), asserts the precise way it failed (an errno
name), and — through ``host_intact`` — that the supervisor and the gateway
still answer, that other agents' requests still succeed and that nothing
changed on the host (hostname, clock, kernel tunables, modules, swaps, kexec,
/etc/shadow, mounts).

Harmlessness rule: every attempt passes the same permission check as the
harmful call it stands for but would change nothing even if the sandbox
failed — signal 0 instead of a kill, a wrong reboot magic, writing back the
value just read, the clock set to its own time, a bogus module image, swapon
of a path that does not exist — and nothing ever leaves this machine.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import EscapeStack, attempt

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("host_intact")]

# -- files and the file system -------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    # Not mounted in the sandbox at all: the minimal root has no such file.
    ("read_etc_shadow", "ENOENT"),
    # The root, /dev and /app are read-only mounts.
    ("create_in_root", "EROFS"),
    ("create_in_app", "EROFS"),
    ("create_in_dev", "EROFS"),
    # proc refuses new files outright.
    ("create_in_proc", "ENOENT"),
    # Existing files are root's and not writable by the agent's uid, which the
    # kernel checks before the read-only mount (either refusal alone would do).
    ("append_app_file", "EACCES"),
    ("append_etc_passwd", "EACCES"),
    ("append_usr_file", "EACCES"),
    # Other processes' /proc files: the zygote and the workers are not dumpable.
    ("proc1_root_traversal", "EACCES"),
    ("proc1_environ", "EACCES"),
    ("proc1_mem", "EACCES"),
    ("sibling_mem", "EACCES"),
    ("proc_kmsg", "EACCES"),
    # Not mounted: /sys (and with it the cgroup file systems).
    ("sys_access", "ENOENT"),
    ("cgroupfs_access", "ENOENT"),
    # /dev holds only null, zero, random and urandom.
    ("dev_mem", "ENOENT"),
    ("dev_kmsg", "ENOENT"),
    # Making a device node needs CAP_MKNOD (and /tmp is nodev anyway).
    ("mknod_dev_mem", "EPERM"),
])
def test_file_system_attempt_fails(escape_stack: EscapeStack, name: str, expected: str) -> None:
    assert attempt(escape_stack, name) == expected


def test_proc_kcore_is_unreadable(escape_stack: EscapeStack) -> None:
    # ENOENT on kernels built without /proc/kcore (this VM), EACCES (root 0400) elsewhere.
    assert attempt(escape_stack, "proc_kcore") in ("ENOENT", "EACCES")


def test_sysrq_trigger_cannot_be_opened_for_writing(escape_stack: EscapeStack) -> None:
    # Opened, never written: any byte written there acts. ENOENT without CONFIG_MAGIC_SYSRQ
    # (this VM); where it exists it is root's (0200) and bind-mounted read-only.
    assert attempt(escape_stack, "sysrq_trigger_open") in ("ENOENT", "EACCES", "EROFS")


@pytest.mark.parametrize("path", [
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/randomize_va_space",
    "/proc/sys/fs/suid_dumpable",
    "/proc/sys/kernel/hostname",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/net/ipv4/ip_forward",
])
def test_proc_sys_write_back_is_refused(escape_stack: EscapeStack, path: str) -> None:
    # Root-owned 0644 and, behind that, a read-only bind mount of /proc/sys.
    assert attempt(escape_stack, "proc_sys_write_back", path) == "EACCES"


def test_another_agents_release_is_not_reachable(escape_stack: EscapeStack) -> None:
    releases = escape_stack.stack.state_dir / "agents" / "lab" / "releases"
    lab_file = next(p for p in releases.iterdir() if not p.name.startswith(".")) / "agent.py"
    assert lab_file.is_file()  # it exists on the host, world-readable...
    assert attempt(escape_stack, "read_host_file", str(lab_file)) == "ENOENT"  # ...but not in the sandbox


def test_the_supervisors_state_dir_is_not_reachable(escape_stack: EscapeStack) -> None:
    state = escape_stack.stack.state_dir
    assert state.is_dir()
    assert attempt(escape_stack, "list_host_dir", str(state)) == "ENOENT"
    assert attempt(escape_stack, "read_host_file", str(state / "uids.json")) == "ENOENT"


def test_setuid_root_binary_does_not_raise_privileges(escape_stack: EscapeStack) -> None:
    out = attempt(escape_stack, "setuid_root_binary")
    assert out["owner"] == 0 and out["setuid_bit"], out  # a real setuid-root binary...
    auxv = out["auxv"]
    # ...ran (``su --version``) with the ids it was started with: no_new_privs and
    # the nosuid mount of /usr make the kernel ignore the setuid bit.
    assert auxv["exit"] == "0", out
    assert auxv["AT_EUID"] == auxv["AT_UID"] == str(out["euid"]) != "0", out
    assert auxv["AT_SECURE"] == "0", out


def test_chmod_setuid_in_tmp_gives_nothing(escape_stack: EscapeStack) -> None:
    out = attempt(escape_stack, "chmod_setuid_tmp")
    # An owner may set the bit on its own file; it can only ever mean "run as
    # the agent's own uid", the file cannot be given to root, and the bit is
    # ignored at exec (nosuid /tmp, no_new_privs).
    assert out["chmod"] == "ok:None" and out["setuid_bit"], out
    assert out["chown_root"] == "EPERM" and out["owner"] == out["owner_after"] != 0, out
    assert out["auxv"]["AT_EUID"] == str(out["owner"]) and out["auxv"]["AT_SECURE"] == "0", out


# -- the network ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["socket_inet", "socket_inet6", "socket_netlink", "socket_packet",
                                  "socket_vsock", "socket_alg"])
def test_non_unix_sockets_are_refused(escape_stack: EscapeStack, name: str) -> None:
    # seccomp: socket(2) with any family but AF_UNIX fails with EAFNOSUPPORT.
    assert attempt(escape_stack, name) == "EAFNOSUPPORT"


@pytest.fixture
def host_listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback (family from the test's parameter)."""
    family = request.param
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"no {family.name} loopback on this host: {exc.strerror}")
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _accepted_nothing(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@pytest.mark.parametrize("host_listener", [socket.AF_INET, socket.AF_INET6], indirect=True,
                         ids=["127.0.0.1", "::1"])
def test_host_loopback_port_is_unreachable(escape_stack: EscapeStack, host_listener: socket.socket) -> None:
    host, port = host_listener.getsockname()[:2]
    assert attempt(escape_stack, "connect_host_tcp", {"host": host, "port": port}) == "EAFNOSUPPORT"
    assert _accepted_nothing(host_listener), "the host's listener saw a connection from the sandbox"


def test_host_abstract_unix_socket_is_unreachable(escape_stack: EscapeStack) -> None:
    # Abstract Unix addresses belong to the network namespace: the sandbox's own
    # namespace has nobody listening under this name.
    name = f"neuroflow-escape-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.listen(8)
        sock.setblocking(False)
        assert attempt(escape_stack, "connect_host_abstract_unix", "@" + name) == "ECONNREFUSED"
        assert _accepted_nothing(sock), "the host's abstract socket saw a connection from the sandbox"


def test_supervisor_socket_is_not_in_the_sandbox(escape_stack: EscapeStack) -> None:
    path = escape_stack.stack.socket
    assert path.is_socket()
    assert attempt(escape_stack, "connect_supervisor_socket", str(path)) == "ENOENT"


def test_dns_lookup_fails_without_sending_anything(escape_stack: EscapeStack) -> None:
    # /etc/nsswitch.conf says "hosts: files" and /etc/resolv.conf is empty, so the
    # resolver never even opens a socket (which seccomp would refuse anyway).
    assert attempt(escape_stack, "dns_lookup", "pypi.org") == "EAI_NONAME"


# -- processes -----------------------------------------------------------------


def test_host_processes_are_invisible(escape_stack: EscapeStack) -> None:
    stack = escape_stack.stack
    assert stack.supervisor is not None and stack.gateway is not None
    pids = attempt(escape_stack, "visible_pids")
    # Only the zygote (pid 1) and its workers, in the sandbox's own pid namespace.
    assert pids[0] == 1 and len(pids) <= 16, pids
    assert stack.supervisor.pid not in pids and stack.gateway.pid not in pids


@pytest.mark.parametrize("which", ["supervisor", "gateway"])
def test_signal_0_to_host_process_is_esrch(escape_stack: EscapeStack, which: str) -> None:
    proc = getattr(escape_stack.stack, which)
    assert proc is not None and proc.poll() is None
    # The host pid means nothing in the sandbox's pid namespace.
    assert attempt(escape_stack, "kill0_host_pid", proc.pid) == "ESRCH"


def test_pid_1_is_the_sandboxes_own_zygote(escape_stack: EscapeStack) -> None:
    out = attempt(escape_stack, "pid1_identity")
    assert out["cmdline"][1:3] == ["-m", "neuroflow.supervisor.zygote"], out
    assert out["uids"][0] != "0" and len(set(out["uids"])) == 1, out


def test_signal_0_to_pid_1_reaches_only_the_agents_own_zygote(escape_stack: EscapeStack) -> None:
    # Workers share their zygote's uid (README: one sandbox per release), so the
    # permission check passes; what keeps them from ending it is the next test.
    assert attempt(escape_stack, "kill0_pid1") == "ok:None"
    assert attempt(escape_stack, "pid1_identity")["cmdline"][1:3] == ["-m", "neuroflow.supervisor.zygote"]


def test_pid_1_handles_no_signal_a_worker_could_send_but_sigchld(escape_stack: EscapeStack) -> None:
    sigcgt = int(attempt(escape_stack, "pid1_identity")["sigcgt"], 16)
    caught = {sig for sig in range(1, 65) if sigcgt & (1 << (sig - 1))}
    assert caught <= {17}, f"pid 1 handles signals {sorted(caught)}"


# -- system calls the seccomp profile refuses ------------------------------------------

SECCOMP_EPERM = [
    # other processes
    "ptrace_seize_pid1", "ptrace_traceme", "process_vm_readv_pid1", "pidfd_getfd_pid1", "kcmp_self",
    # mounts and namespaces
    "mount_tmpfs", "umount_bogus", "pivot_root", "chroot", "unshare_user", "unshare_mount", "setns_own_net",
    "clone_newuser", "fsopen", "open_tree", "open_by_handle_at", "name_to_handle_at",
    # the kernel
    "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "io_uring_setup", "userfaultfd", "perf_syslog_read", "personality_query",
    "fanotify_init", "quotactl",
    # the machine
    "reboot_bad_magic", "kexec_load_nothing", "kexec_file_load", "swapon_missing", "swapoff_missing",
    "acct_missing", "iopl_zero", "ioperm_off", "sethostname_same", "setdomainname_same",
    "clock_settime_same", "settimeofday_same", "adjtimex_read", "clock_adjtime_read",
]


@pytest.mark.parametrize("name", SECCOMP_EPERM)
def test_refused_syscall(escape_stack: EscapeStack, name: str) -> None:
    assert attempt(escape_stack, name) == "EPERM"


def test_clone3_reports_enosys(escape_stack: EscapeStack) -> None:
    # So that libc falls back to clone(2), whose namespace flags the filter can see.
    assert attempt(escape_stack, "clone3") == "ENOSYS"


@pytest.mark.parametrize(("name", "expected"), [
    ("setuid_root", "EPERM"),
    ("setgroups_root", "EPERM"),
    ("capset_all", "EPERM"),
    # no_new_privs can never be cleared once set.
    ("clear_no_new_privs", "EINVAL"),
    # Hard rlimits are raised only with CAP_SYS_RESOURCE.
    ("raise_nofile_hard", "EPERM"),
])
def test_privileges_cannot_be_regained(escape_stack: EscapeStack, name: str, expected: str) -> None:
    assert attempt(escape_stack, name) == expected


def test_every_attempt_in_the_agent_is_covered() -> None:
    """Each attempt the escape agent knows is asserted by some test of this suite."""
    here = Path(__file__).resolve().parent
    table = (here.parent / "agents" / "escape" / "attempts.py").read_text()
    names = re.findall(r'^    "(\w+)": lambda', table, flags=re.M)
    assert len(names) > 80
    source = "".join(p.read_text() for p in here.glob("test_escape*.py"))
    missing = [name for name in names if f'"{name}"' not in source]
    assert missing == [], f"attempts no test asserts: {missing}"
