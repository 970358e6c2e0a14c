"""Compile, attach and read the probes: one BCC module per probe, each failing alone.

A probe is three things (the libbpf-tools habit): its kernel side
``probes/<name>.bpf.c``, the key structs mirrored below as ctypes-free tuples,
and this loader. ``neuroflow-ebpf --print-program NAME`` prints the C a probe
is compiled from, with the flags it gets.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuroflow.ebpf.errors import ProbeOff

log = logging.getLogger("neuroflow.ebpf")

PROBE_DIR = Path(__file__).resolve().parent / "probes"
TRACEFS = Path("/sys/kernel/tracing")
STAT_LOST, STAT_MAP_FULL = 0, 1  # nf_common.h
TCP_CONNECT, TCP_SRTT, TCP_FAILED = 0, 1, 2  # tcp.bpf.c, nf_tcp_hist_key.kind
PROC_KINDS = ("fork", "exec", "exit")  # proc.bpf.c, NF_PROC_*

# Map sizes (cflags). A full map counts in neuroflow_ebpf_map_full_total.
LIMITS = {"NF_MAX_CGROUPS": 4096, "NF_MAX_SC_KEYS": 16384, "NF_MAX_SC_HIST_KEYS": 65536,
          "NF_MAX_THREADS": 65536, "NF_MAX_SOCKS": 65536, "NF_MAX_TCP_KEYS": 16384, "NF_MAX_PROC_KEYS": 4096}


@dataclass(frozen=True)
class ProbeSpec:
    """A probe: its C file, the tracepoints it needs, what it measures."""

    name: str
    source: str
    tracepoints: tuple[str, ...]
    description: str


PROBES: dict[str, ProbeSpec] = {
    "syscalls": ProbeSpec("syscalls", "syscalls.bpf.c", ("raw_syscalls:sys_enter", "raw_syscalls:sys_exit"),
                          "syscall counts per agent and syscall (latency histograms when enabled)"),
    "tcp": ProbeSpec("tcp", "tcp.bpf.c", ("sock:inet_sock_set_state", "tcp:tcp_probe"),
                     "TCP connect latency and RTT per agent and destination"),
    "proc": ProbeSpec("proc", "proc.bpf.c",
                      ("sched:sched_process_fork", "sched:sched_process_exec", "sched:sched_process_exit"),
                      "process fork/exec/exit in the sandboxes"),
}


@dataclass
class ProbeState:
    """What ``/status`` says about one probe."""

    name: str
    on: bool = False
    code: str = ""
    reason: str = ""
    detail: str = ""
    compile_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on": self.on, "code": self.code, "reason": self.reason,
                "detail": self.detail, "compile_s": round(self.compile_s, 3)}


def ensure_tracefs(root: Path = TRACEFS) -> None:
    """Mount tracefs at /sys/kernel/tracing if nothing is there (BCC reads tracepoint formats from it)."""
    if (root / "events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", str(root).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise ProbeOff("tracepoint_missing", f"tracefs is not mounted at {root} and mounting it failed: "
                                             f"{os.strerror(err)}")


def tracepoint_missing(spec: ProbeSpec, root: Path = TRACEFS) -> str | None:
    for tp in spec.tracepoints:
        category, event = tp.split(":")
        if not any((base / "events" / category / event).is_dir()
                   for base in (root, Path("/sys/kernel/debug/tracing"))):
            return tp
    return None


def tracepoint_has_field(tracepoint: str, name: str, root: Path = TRACEFS) -> bool:
    """Whether this kernel's ``tracepoint`` (``category:event``) has a field ``name`` (they differ by version)."""
    category, event = tracepoint.split(":")
    for base in (root, Path("/sys/kernel/debug/tracing")):
        try:
            text = (base / "events" / category / event / "format").read_text()
        except OSError:
            continue
        declarations = (line.split(";")[0].split() for line in text.splitlines() if line.strip().startswith("field:"))
        return any(words[-1].lstrip("*").split("[")[0] == name for words in declarations)
    return False


def cflags(spec: ProbeSpec, *, latency: bool, root: Path = TRACEFS) -> list[str]:
    flags = [f"-D{k}={v}" for k, v in LIMITS.items()]
    if latency and spec.name == "syscalls":
        flags.append("-DNF_LATENCY=1")
    if spec.name == "proc" and tracepoint_has_field("sched:sched_process_exit", "group_dead", root):
        flags.append("-DNF_HAVE_GROUP_DEAD=1")
    return flags


@dataclass
class LoadedProbe:
    """A compiled and attached probe, with its maps."""

    spec: ProbeSpec
    bpf: Any
    exec_events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=64))

    def table(self, name: str) -> Any:
        return self.bpf.get_table(name)

    def has_table(self, name: str) -> bool:
        return name.encode() in self.bpf.tables or name in self.bpf.tables

    def prog_fds(self) -> list[int]:
        return [fn.fd for fn in self.bpf.funcs.values()]

    def close(self) -> None:
        self.bpf.cleanup()


def load_probe(bcc: Any, spec: ProbeSpec, *, latency: bool) -> LoadedProbe:
    """Compile and attach ``spec``; raise :class:`ProbeOff` with the reason when it cannot run."""
    missing = tracepoint_missing(spec)
    if missing:
        raise ProbeOff("tracepoint_missing", f"tracepoint {missing} does not exist on this kernel")
    try:
        bpf = bcc.BPF(text=program_text(spec), cflags=cflags(spec, latency=latency))
    except Exception as exc:  # BCC raises bare Exception for compile and load failures
        kind = "attach_failed" if "attach" in str(exc).lower() else "compile_failed"
        raise ProbeOff(kind, f"{spec.source}: {exc}") from None
    probe = LoadedProbe(spec, bpf)
    if spec.name == "proc":
        def on_exec(ctx: Any, data: Any, size: int) -> None:
            ev = bpf["exec_events"].event(data)
            probe.exec_events.append({"ts": time.time(), "agent_index": ev.agent, "pid": ev.pid,
                                      "filename": ev.filename.decode(errors="replace")})
        bpf["exec_events"].open_ring_buffer(on_exec)
    return probe


COMMON_INCLUDE = '#include "nf_common.h"'


def program_text(spec: ProbeSpec) -> str:
    """The probe's C with ``nf_common.h`` pasted in.

    BCC rewrites map operations (``watched.lookup(...)``) only in the main
    source, not in included headers, where they would compile to calls
    through a pointer that the verifier rejects ("unknown opcode 8d"); so the
    shared part is pasted in rather than included.
    """
    source = (PROBE_DIR / spec.source).read_text()
    if COMMON_INCLUDE not in source:
        raise ProbeOff("compile_failed", f"{spec.source} does not include nf_common.h")
    return source.replace(COMMON_INCLUDE, (PROBE_DIR / "nf_common.h").read_text(), 1)


def print_program(name: str, *, latency: bool) -> str:
    """The C source of a probe and the flags it is compiled with (``--print-program``)."""
    spec = PROBES[name]
    return f"/* cflags: {' '.join(cflags(spec, latency=latency))} */\n{program_text(spec)}"


class RunStats:
    """Kernel-side run time of our BPF programs (``run_time_ns`` in their fdinfo).

    The kernel only counts it while stats are enabled: ``BPF_ENABLE_STATS``
    returns an fd that keeps them on for as long as it is open, so they go off
    by themselves when the daemon dies (unlike the ``kernel.bpf_stats_enabled``
    sysctl). Counting costs two clock reads per program run, which on this VM
    was a third of the syscalls probe's cost, so the daemon turns the stats on
    for a share of the time only and scales what it measured (``--probe-cost-sample``).
    """

    BPF_ENABLE_STATS = 32
    BPF_STATS_RUN_TIME = 0
    NR_BPF = {"x86_64": 321, "aarch64": 280}

    def __init__(self) -> None:
        self.fd = -1
        self.error = ""

    def enable(self) -> bool:
        import platform

        nr = self.NR_BPF.get(platform.machine())
        if nr is None:
            self.error = f"no bpf syscall number known for {platform.machine()}"
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        attr = (ctypes.c_uint32 * 4)(self.BPF_STATS_RUN_TIME, 0, 0, 0)
        fd = libc.syscall(nr, self.BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
        if fd < 0:
            self.error = f"BPF_ENABLE_STATS failed: {os.strerror(ctypes.get_errno())}"
            return False
        self.fd = fd
        return True

    @staticmethod
    def read(fd: int) -> tuple[int, int]:
        """(run_time_ns, run_cnt) of a program fd, from /proc/self/fdinfo."""
        run_ns = run_cnt = 0
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "run_time_ns":
                run_ns = int(value)
            elif key == "run_cnt":
                run_cnt = int(value)
        return run_ns, run_cnt

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
