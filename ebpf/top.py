"""What ``nfctl status`` and ``nfctl top`` show from the eBPF daemon (``GET /status`` on its loopback port).

nfctl talks to the supervisor over gRPC for agents and requests and reads the
daemon's local endpoint for what only the probes know; neither needs the other.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = os.environ.get("NEUROFLOW_EBPF", "http://127.0.0.1:9466")


class EbpfUnreachable(Exception):
    """The daemon did not answer (not running, or another address)."""


def fetch_status(url: str = DEFAULT_URL, timeout: float = 2.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EbpfUnreachable(f"neuroflow-ebpf is not reachable at {url} ({exc}); "
                              "every eBPF probe is off, everything else works") from None


def status_lines(status: dict[str, Any] | None, error: str = "") -> list[str]:
    """The ``ebpf`` block of ``nfctl status``: one line per probe, on or off and why."""
    if status is None:
        return [f"ebpf        off: {error}"]
    on = [p["name"] for p in status["probes"] if p["on"]]
    sup = status.get("supervisor") or {}
    link = ("following the supervisor" if sup.get("connected") else
            f"NOT following the supervisor ({sup.get('error') or 'connecting'})") if sup else "no supervisor link"
    lines = [f"ebpf        pid {status['pid']}, {len(on)} probe(s) on, {status['watched_cgroups']} cgroup(s) watched, "
             f"{link}; lost events {status['lost_events_total']}, map full {status['map_full_total']}, "
             f"probe CPU {status['probe_cpu_seconds_total']:.3f} s"]
    for probe in status["probes"]:
        if probe["on"]:
            lines.append(f"  {probe['name']:<11} on" + (f" ({probe['detail']})" if probe.get("detail") else ""))
        else:
            lines.append(f"  {probe['name']:<11} off [{probe['code']}]: {probe['reason']}")
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def top_rows(agents: dict[str, dict[str, float]], ebpf: dict[str, Any] | None) -> list[list[str]]:
    """One row per agent. ``agents`` maps name → {"requests_per_s", "workers"} from the supervisor."""
    probe_agents = (ebpf or {}).get("agents", {})
    rows = []
    for name in sorted(set(agents) | set(probe_agents)):
        sup, probe = agents.get(name, {}), probe_agents.get(name, {})
        rss = probe.get("rss_bytes")
        rows.append([
            name, str(int(sup.get("workers", probe.get("workers", 0)))),
            _fmt(sup.get("requests_per_s"), ".1f"), _fmt(sup.get("p99_ms"), ".1f"),
            _fmt(probe.get("cpu_percent"), ".1f"), f"{rss / 2**20:.1f}" if rss else "-",
            _fmt(probe.get("syscalls_per_s"), ".0f"), _fmt(probe.get("connect_p99_ms"), ".2f"),
            str(probe.get("connects_total", "-")),
        ])
    return rows


TOP_HEADER = ["agent", "workers", "req/s", "p99 ms", "cpu %", "rss MiB", "syscalls/s", "connect p99 ms", "connects"]
