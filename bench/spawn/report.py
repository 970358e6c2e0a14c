"""Turn the spawn samples into the tables, ratios and target checks."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NEUROFLOW = "neuroflow"
#: The same demand with the pool's default of one worker spawned ahead of it.
SPARE = "neuroflow+spare"
#: Issue #4's targets.
P50_MAX_MS, P99_MAX_MS, PEER_RATIO_MIN, IDLE_MIB_MAX = 5.0, 15.0, 8.0, 10.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was actually measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": statistics.median(values), "p99": percentile(values, 99),
            "mean": statistics.fmean(values), "min": min(values), "max": max(values)}


@dataclass(frozen=True, slots=True)
class Check:
    """One number against its target; ``value`` None means not measured."""

    label: str
    value: float | None
    limit: float
    at_most: bool
    unit: str

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        return "PASS" if (self.value <= self.limit if self.at_most else self.value >= self.limit) else "FAIL"

    def line(self) -> str:
        mark = {"PASS": "✔", "FAIL": "✘", "SKIP": "-"}[self.status]
        shown = "n/a (not measured)" if self.value is None else f"{self.value:.2f}{self.unit}"
        return f"{mark} {self.label}: {shown}  [target {'<=' if self.at_most else '>='} {self.limit:g}{self.unit}: " \
               f"{self.status}]"


def spawn_table(stats: Mapping[str, Mapping[str, float]]) -> str:
    rows = [f"{'sandbox':<10} {'spawns':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'min ms':>8} {'max ms':>8}"]
    for name, s in stats.items():
        rows.append(f"{name:<10} {s['n']:>6} {s['p50']:>8.2f} {s['p99']:>8.2f} {s['mean']:>8.2f} "
                    f"{s['min']:>8.2f} {s['max']:>8.2f}")
    return "\n".join(rows)


def breakdown_table(phases: Mapping[str, Sequence[float]]) -> str:
    rows = [f"{'phase of a NeuroFlow spawn':<30} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"]
    for name, values in phases.items():
        if values:
            s = summary(values)
            rows.append(f"{name:<30} {s['p50']:>8.3f} {s['p99']:>8.3f} {s['mean']:>8.3f}")
    return "\n".join(rows)


def memory_lines(memory: Mapping[str, Any]) -> tuple[list[str], dict[str, float]]:
    workers = memory["workers"]
    uss = statistics.median(w["uss_kib"] for w in workers) / 1024
    pss = statistics.median(w["pss_kib"] for w in workers) / 1024
    rss = statistics.median(w["rss_kib"] for w in workers) / 1024
    delta = (memory["pss_total_after_kib"] - memory["pss_total_before_kib"]) / memory["count"] / 1024
    zygote = memory["zygote"]
    lines = [
        f"idle NeuroFlow worker ({memory['count']} extra workers, each after one request; median): "
        f"USS {uss:.2f} MiB, PSS {pss:.2f} MiB, RSS {rss:.2f} MiB",
        f"sandbox total PSS (launcher + zygote + workers) grew by {delta:.2f} MiB per added worker; "
        f"the zygote itself: USS {zygote['uss_kib'] / 1024:.2f} MiB, PSS {zygote['pss_kib'] / 1024:.2f} MiB",
    ]
    return lines, {"uss_mib": uss, "pss_mib": pss, "rss_mib": rss, "pss_total_delta_mib": delta}


def checks(stats: Mapping[str, Mapping[str, float]], mem: Mapping[str, float] | None) -> list[Check]:
    nf = stats.get(NEUROFLOW)

    def ratio(peer: str) -> float | None:
        return stats[peer]["p50"] / nf["p50"] if nf and peer in stats else None

    return [
        Check("neuroflow cold spawn p50", nf["p50"] if nf else None, P50_MAX_MS, True, " ms"),
        Check("neuroflow cold spawn p99", nf["p99"] if nf else None, P99_MAX_MS, True, " ms"),
        Check("new worker with a spare, p50", stats[SPARE]["p50"] if SPARE in stats else None, P50_MAX_MS, True,
              " ms"),
        Check("new worker with a spare, p99", stats[SPARE]["p99"] if SPARE in stats else None, P99_MAX_MS, True,
              " ms"),
        Check("bwrap/neuroflow p50 ratio", ratio("bwrap"), PEER_RATIO_MIN, False, "x"),
        Check("firejail/neuroflow p50 ratio", ratio("firejail"), PEER_RATIO_MIN, False, "x"),
        Check("idle worker USS (median)", mem["uss_mib"] if mem else None, IDLE_MIB_MAX, True, " MiB"),
        Check("idle worker PSS (median)", mem["pss_mib"] if mem else None, IDLE_MIB_MAX, True, " MiB"),
    ]
