"""The zygote: one per agent release, inside the agent's sandbox, forks workers.

Started by the supervisor as ``python -m neuroflow.supervisor.zygote FD`` with
FD one end of a SOCK_SEQPACKET control socket. The process started is the
*launcher* (root): it joins the zygote's cgroup, leaves the host's namespaces
and forks; the child is pid 1 of the sandbox's pid namespace and becomes the
zygote once :func:`sandbox.contain` has run. The launcher only waits for it,
so that the zygote's parent-death signal fires when the supervisor dies.

Control messages are JSON, one per packet. Supervisor → zygote:
``{"op": "spawn", "worker": ID, "cpu_seconds": N}`` with the worker's three
pipe ends (stdin, stdout, log) attached as SCM_RIGHTS, or ``{"op": "exit"}``.
Zygote → supervisor: ``ready`` | ``failed`` (with ``error``), ``spawned``
(``worker``, ``nspid``), ``exited`` (``worker``, ``status``), and from each new
worker itself ``hello`` (``worker``) whose SCM_CREDENTIALS give the supervisor
the worker's pid as seen from the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import traceback
from pathlib import Path

import prctl

from neuroflow.sdk import harness, http

from .sandbox import SandboxSpec, contain, namespaces, rlimits, seccomp
from .sandbox.cgroup_common import write as cgroup_write

EXIT_SETUP = 70  # the sandbox could not be set up
EXIT_AGENT = harness.EXIT_AGENT


def _send(ctl: socket.socket, **msg: object) -> None:
    ctl.send(json.dumps(msg).encode())


def launcher(ctl_fd: int) -> int:
    # Whatever the supervisor's process spawner left open (uvloop passes copies
    # of its stdio beside pass_fds) must not reach the sandbox.
    os.closerange(3, ctl_fd)
    os.closerange(ctl_fd + 1, 1 << 20)
    ctl = socket.socket(fileno=ctl_fd)
    spec_raw = json.loads(ctl.recv(1 << 20))
    spec = SandboxSpec(**{**spec_raw, "runtime_paths": tuple(spec_raw["runtime_paths"]),
                          "zygote_procs": tuple(spec_raw["zygote_procs"])})
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != spec.supervisor_pid:  # the supervisor died before we got here
            return EXIT_SETUP
        for procs in spec.zygote_procs:
            cgroup_write(Path(procs), 0)  # "0" means the writing process itself
        filt = seccomp.build_filter(seccomp.load_profile(spec.seccomp_profile))
        namespaces.unshare()
    except Exception as exc:
        _send(ctl, op="failed", error=f"sandbox set-up failed: {type(exc).__name__}: {exc}")
        return EXIT_SETUP
    pid = os.fork()
    if pid == 0:
        os._exit(_zygote(ctl, spec, filt))
    ctl.close()
    # Pass termination on to pid 1 inside (which ignores signals it has no handler for).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_SETUP


def _zygote(ctl: socket.socket, spec: SandboxSpec, filt: seccomp.sc.SyscallFilter) -> int:
    try:
        contain(spec, filt)
        # The seccomp listener leaves before any agent code exists: a process
        # holding it could answer its own refused calls with "go ahead".
        listener = seccomp.notify_fd(filt)
        socket.send_fds(ctl, [b'{"op": "seccomp"}'], [listener])
        os.close(listener)
    except Exception as exc:
        _send(ctl, op="failed", error=f"sandbox set-up failed: {type(exc).__name__}: {exc}")
        return EXIT_SETUP
    # As pid 1 of the sandbox it receives only the signals it handles; a worker
    # (same uid) must not be able to end it, and with it every sibling worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401  (imported once here, shared by every worker)
    if spec.egress_dir:  # context.http: httpx imported once here, not on each worker's first call
        with contextlib.suppress(ImportError):
            http.preload()
    try:
        os.chdir("/app")
        agent = harness.load_agent("/app", spec.entry)
    except BaseException as exc:  # import-time code of the agent: report anything
        detail = "".join(traceback.format_exception_only(exc)).strip()
        _send(ctl, op="failed", error=f"cannot load agent {spec.entry}: {detail}")
        return EXIT_AGENT
    _send(ctl, op="ready", pid=os.getpid())
    return _serve(ctl, agent)


def _serve(ctl: socket.socket, agent: harness.Agent) -> int:
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    signal.set_wakeup_fd(wake_w)
    workers: dict[int, str] = {}
    while True:
        readable, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap(ctl, workers)
        if ctl in readable:
            data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 8)
            if not data:  # the supervisor is gone: end the sandbox
                return 0
            msg = json.loads(data)
            if msg["op"] == "exit":
                return 0
            if msg["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    os._exit(_worker(ctl, agent, msg, fds, (wake_r, wake_w)))
                for fd in fds:
                    os.close(fd)
                workers[pid] = msg["worker"]
                _send(ctl, op="spawned", worker=msg["worker"], nspid=pid)


def _reap(ctl: socket.socket, workers: dict[int, str]) -> None:
    # As pid 1 we also reap orphans that workers left behind.
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        worker = workers.pop(pid, None)
        if worker is not None:
            _send(ctl, op="exited", worker=worker, nspid=pid, status=status)


def _worker(ctl: socket.socket, agent: harness.Agent, msg: dict, fds: list[int],
            wake: tuple[int, int]) -> int:
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        prctl.set_pdeathsig(signal.SIGKILL)
        prctl.set_dumpable(False)  # no ptrace or /proc/PID/mem by its siblings
        rlimits.apply_cpu_seconds(msg.get("cpu_seconds"))
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        _send(ctl, op="hello", worker=msg["worker"])  # carries our pid as SCM_CREDENTIALS
        ctl.close()
        return harness.serve(agent)
    except BaseException:
        traceback.print_exc()
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(launcher(int(sys.argv[1])))
