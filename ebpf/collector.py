"""The set of probes the daemon runs: loading each (or the reason it is off),
the watched-cgroup maps, and reading every map into a :class:`Snapshot`."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
from typing import Any

from neuroflow.ebpf.errors import ProbeOff
from neuroflow.ebpf.probes import (
    PROBES,
    PROC_KINDS,
    STAT_LOST,
    STAT_MAP_FULL,
    TCP_CONNECT,
    TCP_FAILED,
    TCP_SRTT,
    LoadedProbe,
    ProbeState,
    RunStats,
    ensure_tracefs,
    load_probe,
)
from neuroflow.ebpf.snapshot import Dest, Hist, Snapshot

log = logging.getLogger("neuroflow.ebpf")


class ProbeSet:
    """Loads the enabled probes; every other method works (and does nothing) when none loaded."""

    def __init__(self, enabled: tuple[str, ...], *, latency: bool, probe_cost: bool) -> None:
        self.enabled = enabled
        self.latency = latency
        self.probe_cost = probe_cost
        self.loaded: dict[str, LoadedProbe] = {}
        self.states: dict[str, ProbeState] = {name: ProbeState(name) for name in PROBES}
        self.extras: dict[str, ProbeState] = {}
        self.run_stats = RunStats()
        #: The probes' estimated kernel run time and runs since start (see :meth:`add_cost`).
        self.cost_ns: dict[str, float] = {}
        self.cost_runs: dict[str, float] = {}
        self.watched: dict[int, int] = {}  # cgroup id -> agent index

    # -- loading -------------------------------------------------------------
    def load(self, import_bcc: Any) -> None:
        """Load every enabled probe; a failure turns that probe (or all of them) off with its reason."""
        for name in PROBES:
            if name not in self.enabled:
                self._off(name, ProbeOff("disabled", f"not in --probes ({','.join(self.enabled) or 'none'})"))
        wanted = [name for name in PROBES if name in self.enabled]
        if not wanted:
            return
        try:
            if os.geteuid() != 0:
                raise ProbeOff("not_root", f"the daemon runs as uid {os.geteuid()}; BPF programs need root")
            ensure_tracefs()
            bcc = import_bcc()
        except ProbeOff as off:
            for name in wanted:
                self._off(name, off)
            return
        for name in wanted:
            started = time.monotonic()
            try:
                self.loaded[name] = load_probe(bcc, PROBES[name], latency=self.latency)
            except ProbeOff as off:
                self._off(name, off)
                continue
            state = self.states[name]
            state.on, state.compile_s = True, time.monotonic() - started
            if name == "syscalls":
                state.detail = "counts and latency" if self.latency else "counts only (latency off)"
            log.info("probe %s on (compiled and attached in %.2f s)", name, state.compile_s)
        self.extras["probe_cost"] = ProbeState("probe_cost")
        if not self.probe_cost:
            self.extra_off("probe_cost", "disabled", "--no-probe-cost")
        elif self.loaded and self.run_stats.enable():  # on; the daemon's cost_sampler reads (and may switch) it
            self.extras["probe_cost"].on = True
            self.cost_ns = dict.fromkeys(self.loaded, 0.0)
            self.cost_runs = dict.fromkeys(self.loaded, 0.0)
        elif self.loaded:
            self.extra_off("probe_cost", "attach_failed", self.run_stats.error)
        self.extras["kprobes"] = ProbeState("kprobes")
        self.extra_off("kprobes", "no_kprobes" if not _have_kprobes() else "disabled",
                        "kprobe extras are not built yet; every probe uses tracepoints")

    def _off(self, name: str, off: ProbeOff) -> None:
        state = self.states[name]
        state.on, state.code, state.reason = False, off.code, off.message
        level = logging.INFO if off.code == "disabled" else logging.WARNING
        log.log(level, "probe %s off (%s): %s", name, off.code, off.message)

    def extra_off(self, name: str, code: str, reason: str) -> None:
        self.extras[name].on, self.extras[name].code, self.extras[name].reason = False, code, reason

    def close(self) -> None:
        for probe in self.loaded.values():
            probe.close()
        self.loaded.clear()
        self.run_stats.close()

    # -- the watched cgroups -------------------------------------------------
    def watch(self, cgroup_id: int, agent: int) -> None:
        self.watched[cgroup_id] = agent
        for probe in self.loaded.values():
            table = probe.table("watched")
            table[ctypes.c_uint64(cgroup_id)] = table.Leaf(agent, 0, 0)

    def unwatch(self, cgroup_id: int) -> None:
        self.watched.pop(cgroup_id, None)
        for probe in self.loaded.values():
            table = probe.table("watched")
            with contextlib.suppress(KeyError):  # never written (probe loaded later) or already gone
                del table[ctypes.c_uint64(cgroup_id)]

    def unwatch_all(self) -> None:
        for cgroup_id in list(self.watched):
            self.unwatch(cgroup_id)

    # -- the probes' own cost ----------------------------------------------------
    def run_counts(self) -> dict[str, tuple[int, int]]:
        """(run_time_ns, run_cnt) of each loaded probe's programs, as the kernel has counted so far."""
        out = {}
        for name, probe in self.loaded.items():
            run_ns = run_cnt = 0
            for fd in probe.prog_fds():
                ns, cnt = RunStats.read(fd)
                run_ns, run_cnt = run_ns + ns, run_cnt + cnt
            out[name] = (run_ns, run_cnt)
        return out

    def add_cost(self, start: dict[str, tuple[int, int]], end: dict[str, tuple[int, int]], scale: float) -> None:
        """Add what the kernel counted between two :meth:`run_counts`, times ``scale`` (1 / the share of time
        the stats were on), to the estimates."""
        for name, (ns, cnt) in end.items():
            ns0, cnt0 = start.get(name, (ns, cnt))
            self.cost_ns[name] = self.cost_ns.get(name, 0.0) + max(ns - ns0, 0) * scale
            self.cost_runs[name] = self.cost_runs.get(name, 0.0) + max(cnt - cnt0, 0) * scale

    # -- reading -------------------------------------------------------------
    def poll_events(self) -> None:
        """Drain the ring buffers (non-blocking)."""
        proc = self.loaded.get("proc")
        if proc is not None:
            proc.bpf.ring_buffer_consume()

    def snapshot(self) -> Snapshot:
        snap = Snapshot(ts=time.time())
        for name, probe in self.loaded.items():
            stats = probe.table("nf_stats")
            snap.lost[name] = int(stats[ctypes.c_int(STAT_LOST)].value)
            snap.map_full[name] = int(stats[ctypes.c_int(STAT_MAP_FULL)].value)
            if name in self.cost_ns:
                snap.run_ns[name], snap.run_cnt[name] = round(self.cost_ns[name]), round(self.cost_runs[name])
        if "syscalls" in self.loaded:
            self._read_syscalls(self.loaded["syscalls"], snap)
        if "tcp" in self.loaded:
            self._read_tcp(self.loaded["tcp"], snap)
        if "proc" in self.loaded:
            for key, value in self.loaded["proc"].table("proc_counts").items():
                snap.proc[(key.agent, PROC_KINDS[key.kind])] = int(value.value)
        return snap

    def _read_syscalls(self, probe: LoadedProbe, snap: Snapshot) -> None:
        for key, value in probe.table("sc_counts").items():
            snap.syscalls[(key.agent, key.nr)] = int(value.value)
        if not self.latency:
            return
        for key, value in probe.table("sc_hist").items():
            snap.syscall_latency.setdefault((key.agent, key.nr), Hist()).add(key.slot, int(value.value))
        for key, value in probe.table("sc_sum_ns").items():
            snap.syscall_latency.setdefault((key.agent, key.nr), Hist()).total = int(value.value)

    def _read_tcp(self, probe: LoadedProbe, snap: Snapshot) -> None:
        def ident(dest: Any) -> tuple[int, Dest]:
            return dest.agent, Dest(int(dest.family), bytes(dest.daddr), int(dest.dport))

        for key, value in probe.table("tcp_hist").items():
            agent_dest = ident(key.dest)
            if key.kind == TCP_CONNECT:
                snap.connect.setdefault(agent_dest, Hist()).add(key.slot, int(value.value))
            elif key.kind == TCP_SRTT:
                snap.srtt.setdefault(agent_dest, Hist()).add(key.slot, int(value.value))
            elif key.kind == TCP_FAILED:
                snap.connect_failed[agent_dest] = snap.connect_failed.get(agent_dest, 0) + int(value.value)
        for key, value in probe.table("tcp_sum").items():
            agent_dest = ident(key.dest)
            target = snap.connect if key.kind == TCP_CONNECT else snap.srtt if key.kind == TCP_SRTT else None
            if target is not None:
                target.setdefault(agent_dest, Hist()).total = int(value.value)

    def status(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in [*self.states.values(), *self.extras.values()]]


def _have_kprobes() -> bool:
    return any(os.path.exists(os.path.join(base, "kprobe_events"))
               for base in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))
