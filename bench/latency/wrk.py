"""Run ``wrk`` against one URL and parse the result line ``post.lua`` prints."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post.lua")
_MARK = "NFBENCH "
_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


class WrkError(RuntimeError):
    """wrk could not run, overran its time bound, or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: latencies in milliseconds, error counts as wrk reported them."""

    connections: int
    duration_s: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non200: int
    socket_errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> bool:
        """Every reply was a 200 and no socket failed (a valid measurement)."""
        return self.requests > 0 and self.non200 == 0 and not any(self.socket_errors.values())

    def problems(self) -> str:
        """The error counts in words, or "" when :attr:`ok`."""
        parts = [f"{self.non200} non-200"] if self.non200 else []
        parts += [f"{n} {kind} errors" for kind, n in self.socket_errors.items() if n]
        if self.requests == 0:
            parts.append("no request completed")
        return ", ".join(parts)


def run_wrk(url: str, *, connections: int, duration_s: int, timeout_s: int) -> WrkResult:
    """Drive ``url`` with one wrk thread and ``connections`` connections.

    wrk stops itself after ``duration_s``; the process is also killed if it
    overruns that by more than ``timeout_s`` + 15 s.
    """
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s",
        "-s", str(LUA_SCRIPT), url,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=duration_s + timeout_s + 15
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk overran its time bound: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if not lines:
        raise WrkError(f"wrk printed no {_MARK.strip()} line:\n{done.stdout}{done.stderr}")
    raw: dict[str, float] = json.loads(lines[-1][len(_MARK) :])
    return WrkResult(
        connections=connections,
        duration_s=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        # wrk's own "status" count (>= 400) is a subset of the script's non-200 count.
        non200=int(max(raw["non200"], raw["status"])),
        socket_errors={kind: int(raw[kind]) for kind in _SOCKET_ERRORS},
    )
