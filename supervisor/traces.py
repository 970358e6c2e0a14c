"""Trace files read back: every span of some folders, one trace as a tree (``nfctl trace``)."""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


# -- reading -------------------------------------------
def read_spans(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Every span in the ``*.jsonl*`` trace files of ``dirs`` (unreadable lines are skipped)."""
    spans = []
    for directory in dirs:
        for path in sorted(Path(directory).glob("*.jsonl*")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                with contextlib.suppress(ValueError):
                    span = json.loads(line)
                    if isinstance(span, dict) and "trace_id" in span:
                        spans.append(span)
    return spans


def last_trace_id(spans: Sequence[dict[str, Any]]) -> str | None:
    """The trace whose root (or earliest) span started last."""
    starts: dict[str, int] = {}
    for s in spans:
        starts[s["trace_id"]] = min(starts.get(s["trace_id"], s["start_unix_nano"]), s["start_unix_nano"])
    return max(starts, key=lambda t: starts[t]) if starts else None


def trace_tree(spans: Sequence[dict[str, Any]], trace_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The trace's spans depth-first as (depth, span), children by start time; orphans become roots."""
    mine = {s["span_id"]: s for s in spans if s["trace_id"] == trace_id}
    children: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    roots: list[dict[str, Any]] = []
    for s in mine.values():
        (children[s["parent_span_id"]] if s["parent_span_id"] in mine else roots).append(s)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        out.append((depth, span))
        for child in sorted(children[span["span_id"]], key=lambda c: c["start_unix_nano"]):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r["start_unix_nano"]):
        walk(root, 0)
    return out


def render_trace(spans: Sequence[dict[str, Any]], trace_id: str) -> str:
    """The span tree with each span's start offset from the trace's start and its duration."""
    tree = trace_tree(spans, trace_id)
    if not tree:
        return ""
    t0 = min(s["start_unix_nano"] for _, s in tree)
    lines = [f"trace {trace_id}"]
    for depth, s in tree:
        start = (s["start_unix_nano"] - t0) / 1e6
        took = (s["end_unix_nano"] - s["start_unix_nano"]) / 1e6
        status = f"  [{s['status'].lower()}: {s['status_message']}]" if s["status"] == "ERROR" else ""
        where = s.get("service") or ""
        calls = s["attributes"].get("neuroflow.syscalls")
        syscalls = f"  [{calls} syscalls]" if calls is not None else ""
        lines.append(f"{start:9.3f} ms {took:9.3f} ms  {'  ' * depth}{s['name']}  ({where}){syscalls}{status}")
        for event in s.get("events", ()):
            at = (event["time_unix_nano"] - t0) / 1e6
            detail = ", ".join(f"{k.removeprefix('neuroflow.')}={v}" for k, v in event["attributes"].items())
            detail = f" ({detail})" if detail else ""
            lines.append(f"{at:9.3f} ms {'':12}{'  ' * (depth + 1)}* {event['name']}{detail}")
    return "\n".join(lines)
