"""Latency benchmark of the NeuroFlow HTTP API against two reference servers.

What it measures
----------------
``POST /v1/agents/echo/invoke`` with ``{"input": "hello"}`` on three targets,
one after the other in the same run (only one server is up at a time):

- ``neuroflow``: the whole stack (aiohttp gateway on uvloop -> gRPC ->
  supervisor -> sandboxed worker running ``examples/echo``), started by
  ``tests/stack.py``;
- ``plain``: the same ``Echo`` handler in one unsandboxed aiohttp process on
  uvloop (``plain_server.py``): the floor any gateway pays;
- ``bwrap``: a cold ``bwrap --unshare-all`` sandbox running a fresh Python per
  request (``bwrap_server.py``): the usual way to isolate untrusted code.

Each target gets a correctness check (one request must return 200 with
``"output": "hello"``), a warm-up run at concurrency 32 (1 for bwrap), then a run at
concurrency 1 and one at concurrency 32. The load generator is ``wrk`` with
``post.lua``, which POSTs the body, counts every reply that is not a 200 and
prints p50/p90/p99 from wrk's ``done()`` hook. The output is a table (target,
concurrency, p50 ms, p99 ms, req/s), the ratios between targets and
NeuroFlow's targets, each marked PASS, FAIL or SKIP (not measured):

- neuroflow/plain p50 at c=1 <= 2.5x; bwrap/neuroflow p50 at c=1 >= 20x;
- neuroflow p50 <= 1.5 ms and p99 <= 5 ms at c=1; >= 2,500 req/s at c=32.

How to run (from the repository root; root is needed for the neuroflow target)
--------------------------------------------------------------------------------
::

    .venv/bin/python bench/latency/run.py                       # all three targets
    .venv/bin/python -m bench.latency --targets plain,bwrap     # same, as a module
    .venv/bin/python bench/latency/run.py --duration 20 --json /tmp/latency.json

Options: ``--targets`` (comma list of plain, bwrap, neuroflow), ``--duration``
(seconds per measured run of plain and neuroflow, default 10),
``--bwrap-duration`` (default 5), ``--warmup`` (default 2 s; 1 s for bwrap),
``--json PATH`` (write every number as JSON). Exit status: 0 when every
measured run was clean and no check failed; 1 when a target failed to start,
answered wrongly, or wrk saw any non-200 reply or socket error (the numbers
are then not trustworthy); 2 on a usage error; 3 when the measurements are
clean but a target FAILs.

Reading the numbers
-------------------
- The development machines have 2 cores and are noisy. wrk runs on the same
  machine and shares those cores with the server under test (and, for
  NeuroFlow, with the gateway, supervisor and worker), so absolute figures are
  pessimistic and vary by 10-20 % between runs; compare targets within one run,
  which is why they are measured side by side. wrk uses one thread (``-t1``) to
  take as little of the two cores as possible.
- ``post.lua`` checks every reply's status in wrk's ``response()`` hook, which
  costs wrk a little time per reply; all targets pay it alike.
- wrk measures closed-loop: a connection sends its next request only after the
  reply, so c=1 is pure per-request latency and c=32 is saturation throughput.
- bwrap plus a bare ``python -c pass`` takes ~30-40 ms here; running the echo
  handler also imports asyncio, the SDK (protobuf) and the agent, so a bwrap
  request costs ~85-95 ms, nearly all of it CPU. At c=32 it saturates both
  cores (~10 req/s, p50 over a second); it gets shorter runs, and wrk's timeout
  is 10 s so that no request is counted as a timeout. Its c=32 row rests on a
  few dozen requests: read it as "what it achieves", not as a precise tail.
- All traffic stays on 127.0.0.1; every wrk run and server start is bounded in
  time, and every server is stopped (SIGTERM, then SIGKILL) in a ``finally``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the `bench.latency` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

from bench.latency import report
from bench.latency.targets import INVOKE_PATH, TARGETS, Target, TargetError, check_reply
from bench.latency.wrk import WrkError, WrkResult, run_wrk

SETTLE_S = 2.0  # pause between runs so work still in flight (bwrap children) ends first
WRK_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class Settings:
    targets: tuple[str, ...]
    duration_s: int
    bwrap_duration_s: int
    warmup_s: int
    json_path: Path | None


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/latency/run.py", description="NeuroFlow HTTP latency benchmark (wrk)."
    )
    parser.add_argument(
        "--targets",
        default="plain,neuroflow,bwrap",
        help="comma-separated: plain, bwrap, neuroflow (default: all)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        help="seconds per measured run of plain and neuroflow (default 10)",
    )
    parser.add_argument(
        "--bwrap-duration",
        type=int,
        default=5,
        help="seconds per measured run of bwrap (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="warm-up seconds before measuring (default 2; bwrap: 1)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the results as JSON to PATH",
    )
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"--targets: unknown {unknown}; choose from {', '.join(TARGETS)}")
    if min(args.duration, args.bwrap_duration, args.warmup) < 1:
        parser.error("--duration, --bwrap-duration and --warmup must be at least 1 second")
    return Settings(targets, args.duration, args.bwrap_duration, args.warmup, args.json)


def log(message: str) -> None:
    print(f"[bench.latency] {message}", file=sys.stderr, flush=True)


def measure(target: Target, settings: Settings) -> dict[int, WrkResult]:
    """Start ``target``, check one reply, warm up, measure at c=1 and c=32, stop it."""
    duration = settings.bwrap_duration_s if target.short else settings.duration_s
    warmup = min(settings.warmup_s, 1) if target.short else settings.warmup_s
    # A cold sandbox has no pool to warm, and a c=32 warm-up would leave ~32
    # children (seconds of CPU) still running into the c=1 run.
    warm_c = report.LOW_C if target.short else report.HIGH_C
    results: dict[int, WrkResult] = {}
    with target.start() as base:
        url = base + INVOKE_PATH
        check_reply(url)
        log(f"{target.name}: {url} answers; warm-up {warmup} s at c={warm_c}")
        run_wrk(url, connections=warm_c, duration_s=warmup, timeout_s=WRK_TIMEOUT_S)
        for connections in (report.LOW_C, report.HIGH_C):
            time.sleep(SETTLE_S)
            log(f"{target.name}: c={connections} for {duration} s")
            run = run_wrk(
                url, connections=connections, duration_s=duration, timeout_s=WRK_TIMEOUT_S
            )
            results[connections] = run
            log(
                f"{target.name}: c={connections} p50 {run.p50_ms:.3f} ms p99 {run.p99_ms:.3f} ms "
                f"{run.rps:.0f} req/s {run.problems()}"
            )
    return results


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    missing = [tool for tool in ("wrk", "bwrap") if shutil.which(tool) is None]
    if missing:
        log(f"missing tools: {', '.join(missing)} (apt-get install wrk bubblewrap)")
        return 1
    log(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"targets {', '.join(settings.targets)}"
    )
    results: dict[str, dict[int, WrkResult]] = {}
    failures: list[str] = []
    for name in settings.targets:
        try:
            results[name] = measure(TARGETS[name], settings)
        except (TargetError, WrkError) as exc:
            failures.append(f"{name}: {exc}")
            log(f"{name} FAILED: {exc}")
    failures += [
        f"{name} c={c}: {run.problems()}"
        for name, runs in results.items()
        for c, run in runs.items()
        if not run.ok
    ]

    print(report.table(results))
    print()
    checks = report.checks(results)
    for check in checks:
        print(check.line())
    targeted = {check.label for check in checks}
    for label, value in report.ratios(results).items():
        if label not in targeted:
            print(f"{label}: {value:.3g}x")
    for failure in failures:
        print(f"RUN FAILED: {failure}")

    if settings.json_path is not None:
        meta = {
            **asdict(settings),
            "json_path": str(settings.json_path),
            "cpus": os.cpu_count(),
            "wrk_threads": 1,
            "wrk_timeout_s": WRK_TIMEOUT_S,
            "failures": failures,
        }
        settings.json_path.write_text(json.dumps(report.to_json(results, meta), indent=2) + "\n")
        log(f"wrote {settings.json_path}")
    if failures:
        return 1
    return 3 if any(check.status == "FAIL" for check in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
