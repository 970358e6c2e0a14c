"""Prometheus exposition of a :class:`Snapshot` (``/metrics``).

Why ``prometheus_client`` and not the OpenTelemetry SDK: the histograms are
already aggregated in the kernel (log2 buckets plus a sum), and OTel's Python
metrics API has no asynchronous histogram instrument — feeding it would mean
replaying every count as a synthetic measurement. A custom
``prometheus_client`` collector exposes the kernel's buckets exactly. Names
follow the project's ``neuroflow_`` prefix and OTel's semantic style (unit
suffixes, ``_total`` counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from neuroflow.ebpf.snapshot import Hist, Snapshot
from neuroflow.ebpf.syscalls import syscall_name

# Exposed bucket bounds: 2**k ns for k in 10..33 (about 1 µs .. 8.6 s); smaller slots fold into the first.
NS_BOUNDS = tuple(range(10, 34))
US_BOUNDS = tuple(range(0, 24))  # RTT in µs: 1 µs .. 8.4 s


def buckets(hist: Hist, exponents: tuple[int, ...], scale: float) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs for Prometheus; ``le`` in seconds (``2**k * scale``).

    A log2 slot ``s`` holds values below ``2**(s+1)``, so it belongs to every
    bucket with ``k >= s + 1``.
    """
    out, running = [], 0
    slots = sorted(hist.slots.items())
    i = 0
    for k in exponents:
        while i < len(slots) and slots[i][0] + 1 <= k:
            running += slots[i][1]
            i += 1
        out.append((f"{2 ** k * scale:.9g}", float(running)))
    out.append(("+Inf", float(hist.count)))
    return out


class SnapshotCollector(Collector):
    """Renders the latest snapshot; ``agent_name`` maps kernel agent indices to names."""

    def __init__(self, latest: Callable[[], Snapshot | None], agent_name: Callable[[int], str],
                 extra: Callable[[], dict[str, float]] | None = None) -> None:
        self.latest = latest
        self.agent_name = agent_name
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        snap = self.latest()
        if snap is None:
            return
        name = self.agent_name
        calls = CounterMetricFamily("neuroflow_agent_syscalls", "System calls made by an agent's workers",
                                    labels=["agent", "syscall"])
        for (agent, nr), n in sorted(snap.syscalls.items()):
            calls.add_metric([name(agent), syscall_name(nr)], n)
        yield calls
        lat = HistogramMetricFamily("neuroflow_agent_syscall_duration_seconds",
                                    "Time from syscall entry to exit in an agent's workers",
                                    labels=["agent", "syscall"])
        for (agent, nr), hist in sorted(snap.syscall_latency.items()):
            lat.add_metric([name(agent), syscall_name(nr)], buckets(hist, NS_BOUNDS, 1e-9), hist.total * 1e-9)
        yield lat
        conn = HistogramMetricFamily("neuroflow_agent_tcp_connect_seconds",
                                     "TCP connect latency (SYN sent to established) by agent and destination",
                                     labels=["agent", "destination"])
        for (agent, dest), hist in sorted(snap.connect.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            conn.add_metric([name(agent), str(dest)], buckets(hist, NS_BOUNDS, 1e-9), hist.total * 1e-9)
        yield conn
        failed = CounterMetricFamily("neuroflow_agent_tcp_connect_failures", "TCP connects that never got "
                                     "established", labels=["agent", "destination"])
        for (agent, dest), n in sorted(snap.connect_failed.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            failed.add_metric([name(agent), str(dest)], n)
        yield failed
        rtt = HistogramMetricFamily("neuroflow_agent_tcp_rtt_seconds", "Smoothed TCP RTT samples (tcp_probe) by "
                                    "agent and destination", labels=["agent", "destination"])
        for (agent, dest), hist in sorted(snap.srtt.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            rtt.add_metric([name(agent), str(dest)], buckets(hist, US_BOUNDS, 1e-6), hist.total * 1e-6)
        yield rtt
        proc = CounterMetricFamily("neuroflow_agent_process_events", "Forks (any clone), execs and process exits "
                                   "in an agent's sandbox", labels=["agent", "event"])
        for (agent, kind), n in sorted(snap.proc.items()):
            proc.add_metric([name(agent), kind], n)
        yield proc
        for metric, help_text, values in (
                ("neuroflow_ebpf_lost_events", "Events dropped because a ring buffer was full", snap.lost),
                ("neuroflow_ebpf_map_full", "Updates refused because a BPF map was full", snap.map_full)):
            family = CounterMetricFamily(metric, help_text, labels=["probe"])
            for probe, n in sorted(values.items()):
                family.add_metric([probe], n)
            yield family
        cpu = CounterMetricFamily("neuroflow_ebpf_probe_cpu_seconds", "Kernel CPU time spent in the probes' BPF "
                                  "programs (run_time_ns with BPF stats enabled)", labels=["probe"])
        runs = CounterMetricFamily("neuroflow_ebpf_probe_runs", "Times the probes' BPF programs ran",
                                   labels=["probe"])
        for probe, ns in sorted(snap.run_ns.items()):
            cpu.add_metric([probe], ns * 1e-9)
            runs.add_metric([probe], snap.run_cnt.get(probe, 0))
        yield cpu
        yield runs
        if self.extra is not None:
            for metric, value in sorted(self.extra().items()):
                yield GaugeMetricFamily(metric, metric.replace("_", " "), value=value)


def render(collector: SnapshotCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
