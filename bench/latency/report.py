"""Turn wrk results into the table, the ratios and the PASS/FAIL checks."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.latency.wrk import WrkResult

LOW_C, HIGH_C = 1, 32
#: results[target][connections]
Results = Mapping[str, Mapping[int, WrkResult]]
Metric = Callable[[WrkResult], float]

P50: Metric = operator.attrgetter("p50_ms")
P99: Metric = operator.attrgetter("p99_ms")
RPS: Metric = operator.attrgetter("rps")


@dataclass(frozen=True, slots=True)
class Check:
    """One number compared with its target; ``value`` is None when not measured."""

    label: str
    value: float | None
    limit: float
    at_most: bool  # True: value <= limit passes; False: value >= limit passes
    unit: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        ok = self.value <= self.limit if self.at_most else self.value >= self.limit
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        shown = "n/a (not measured)" if self.value is None else f"{self.value:.2f}{self.unit}"
        sign = "<=" if self.at_most else ">="
        return f"{self.label}: {shown}  [target {sign} {self.limit:g}{self.unit}: {self.status}]"


def _get(results: Results, target: str, connections: int, metric: Metric) -> float | None:
    run = results.get(target, {}).get(connections)
    return None if run is None else metric(run)


def _ratio(results: Results, a: str, b: str, connections: int, metric: Metric) -> float | None:
    top, bottom = _get(results, a, connections, metric), _get(results, b, connections, metric)
    return None if top is None or not bottom else top / bottom


def checks(results: Results) -> list[Check]:
    """NeuroFlow's latency targets: relative to plain and bwrap, and absolute."""
    return [
        Check(
            f"neuroflow/plain p50 ratio at c={LOW_C}",
            _ratio(results, "neuroflow", "plain", LOW_C, P50),
            2.5,
            at_most=True,
            unit="x",
        ),
        Check(
            f"bwrap/neuroflow p50 ratio at c={LOW_C}",
            _ratio(results, "bwrap", "neuroflow", LOW_C, P50),
            20,
            at_most=False,
            unit="x",
        ),
        Check(
            f"neuroflow p50 at c={LOW_C}",
            _get(results, "neuroflow", LOW_C, P50),
            1.5,
            at_most=True,
            unit=" ms",
        ),
        Check(
            f"neuroflow p99 at c={LOW_C}",
            _get(results, "neuroflow", LOW_C, P99),
            5,
            at_most=True,
            unit=" ms",
        ),
        Check(
            f"neuroflow throughput at c={HIGH_C}",
            _get(results, "neuroflow", HIGH_C, RPS),
            2500,
            at_most=False,
            unit=" req/s",
        ),
    ]


def ratios(results: Results) -> dict[str, float]:
    """Every ratio between the measured targets (first name over second)."""
    pairs = [("neuroflow", "plain"), ("bwrap", "neuroflow"), ("bwrap", "plain")]
    metrics = [("p50", LOW_C, P50), ("p99", LOW_C, P99), ("req/s", HIGH_C, RPS)]
    out: dict[str, float] = {}
    for a, b in pairs:
        for name, connections, metric in metrics:
            value = _ratio(results, a, b, connections, metric)
            if value is not None:
                out[f"{a}/{b} {name} ratio at c={connections}"] = value
    return out


def table(results: Results) -> str:
    """The results as a fixed-width text table."""
    head = f"{'target':<10} {'conc':>4} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'requests':>9}"
    rows = [head, "-" * len(head)]
    for target, runs in results.items():
        for c, r in sorted(runs.items()):
            row = (
                f"{target:<10} {c:>4} {r.p50_ms:>9.3f} {r.p99_ms:>9.3f} {r.rps:>9.1f}"
                f" {r.requests:>9}"
            )
            rows.append(row + (f"  ERRORS: {r.problems()}" if not r.ok else ""))
    return "\n".join(rows)


def to_json(results: Results, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Everything printed, as one JSON-serialisable document."""
    return {
        "settings": dict(settings),
        "results": [
            {"target": target, **asdict(run), "rps": run.rps, "ok": run.ok}
            for target, runs in results.items()
            for run in runs.values()
        ],
        "ratios": ratios(results),
        "checks": [
            {
                "label": c.label,
                "value": c.value,
                "limit": c.limit,
                "at_most": c.at_most,
                "status": c.status,
            }
            for c in checks(results)
        ],
    }
