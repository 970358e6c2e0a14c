"""Spawn benchmark (issue #4): from "need a worker" to "the worker answered its first request".

Three sandboxes, side by side in one run, interleaved round-robin (the order
rotates every round) with a random 20-60 ms pause after every spawn, so spawns
are spread out in time and the machine's noise hits all three alike:

- ``neuroflow``: the real supervisor code (``neuroflow_side.py``) for
  ``examples/echo`` with every isolation step on — the zygote inside the
  release's sandbox (pid/mnt/net/ipc/uts namespaces, read-only minimal root,
  unprivileged uid, no capabilities, seccomp), and per worker a fork, its own
  cgroup leaf with memory/cpu/pids limits, pdeathsig, non-dumpable, RLIMIT_CPU.
  One spawn = ``AgentPool.invoke()`` on a pool with no worker, to its reply;
  the worker is then closed and its leaf removed;
- ``bwrap``: ``bwrap --unshare-all`` (read-only ``/``, own ``/dev``, ``/proc``,
  ``/tmp``) running a tiny Python handler, Popen to its first answer;
- ``firejail``: ``firejail --noprofile --net=none`` running the same handler.

Then it spawns ``--idle-workers`` more NeuroFlow workers, lets each answer one
request and reads every worker's USS (Private_Clean + Private_Dirty) and PSS
from ``/proc/PID/smaps_rollup``.

    sudo .venv/bin/python bench/spawn/run.py [--spawns 200] [--idle-workers 8] [--json PATH]

Targets: NeuroFlow p50 <= 5 ms and p99 <= 15 ms; bwrap and firejail p50 >= 8x
NeuroFlow's; an idle worker adds <= 10 MiB (USS and PSS, median). Under
systemd the run re-executes itself in a ``Delegate=yes`` scope, as the
supervisor runs. Exit status: 0 all targets met, 1 the run failed, 2 usage,
3 a target was missed. JSON goes to ``bench/results/spawn-<time>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make `bench.spawn` and `tests.stack` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import tempfile
import time
from typing import Any

import uvloop

from bench.spawn import report
from bench.spawn.neuroflow_side import PHASES, EchoPool, phases_of
from bench.spawn.peers import PEERS, PYTHON, PeerError, spawn_once
from tests.stack import delegated_scope

ROOT = Path(__file__).resolve().parents[2]
SCOPED_ENV = "NEUROFLOW_BENCH_SPAWN_SCOPED"
PAUSE_S = (0.020, 0.060)


def log(message: str) -> None:
    print(f"[bench.spawn] {message}", file=sys.stderr, flush=True)


def favordynmods() -> bool:
    """Whether a cgroup mount shows ``favordynmods`` (cheap cgroup moves; see README.md)."""
    return any("cgroup" in line and "favordynmods" in line for line in Path("/proc/mounts").read_text().splitlines())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/spawn/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawns", type=int, default=200, help="measured spawns per sandbox (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured spawns per sandbox first (default 5)")
    parser.add_argument("--idle-workers", type=int, default=8,
                        help="extra NeuroFlow workers for the memory figures (default 8; 0 skips)")
    parser.add_argument("--peers", default="bwrap,firejail", help="comma list of bwrap, firejail ('' for none)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random pauses")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write every sample here (default bench/results/spawn-<time>.json)")
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := [p for p in args.peers if p not in PEERS]:
        parser.error(f"--peers: unknown {unknown}; choose from {', '.join(PEERS)}")
    if args.spawns < 1 or args.warmup < 0 or args.idle_workers < 0:
        parser.error("--spawns must be >= 1, --warmup and --idle-workers >= 0")
    return args


async def measure(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    echo = EchoPool(state_dir, max_workers=max(args.idle_workers, 1) + 1)
    await echo.start()
    log(f"echo sandbox ready (cgroups: {echo.cgroups.backend}; {echo.cgroups.reason})")
    samples: dict[str, list[float]] = {"neuroflow": [], **{p: [] for p in args.peers}}
    records: list[dict[str, Any]] = []

    async def one(name: str, seq: int, keep: bool) -> None:
        if name == "neuroflow":
            ms, record = await echo.spawn_once()
            if keep:
                records.append(record)
        else:
            ms = spawn_once(PEERS[name], seq)  # blocking on purpose: nothing else runs meanwhile
        if keep:
            samples[name].append(ms)
        await asyncio.sleep(rng.uniform(*PAUSE_S))

    try:
        names = list(samples)
        started = time.monotonic()
        for rnd in range(args.warmup + args.spawns):
            keep = rnd >= args.warmup
            shift = rnd % len(names)
            for name in names[shift:] + names[:shift]:
                await one(name, rnd, keep)
            if keep and (rnd - args.warmup + 1) % 50 == 0:
                log(f"{rnd - args.warmup + 1}/{args.spawns} rounds, {time.monotonic() - started:.0f} s")
        memory = await echo.idle_memory(args.idle_workers) if args.idle_workers else None
        # The pool's default: one worker spawned ahead of demand. Same pauses between demands;
        # each worker that answers is retired, so every demand needs a new one (the worst case).
        spare: list[float] = []
        for rnd in range(args.warmup + args.spawns):
            ms = await echo.spare_once()
            if rnd >= args.warmup:
                spare.append(ms)
            await asyncio.sleep(rng.uniform(*PAUSE_S))
        samples[report.SPARE] = spare
        return {"samples": samples, "records": records, "memory": memory, "cgroup_backend": echo.cgroups.backend}
    finally:
        await echo.stop()


def print_report(result: dict[str, Any]) -> tuple[dict[str, Any], list[report.Check]]:
    stats = {name: report.summary(values) for name, values in result["samples"].items()}
    print(report.spawn_table(stats))
    print()
    phase_values: dict[str, list[float]] = {}
    for record in result["records"]:
        for name, ms in phases_of(record).items():
            phase_values.setdefault(name, []).append(ms)
    ordered = {k: phase_values.get(k, []) for k in (*PHASES, "cgroup_procs_writes", "cgroup_limit_writes",
                                                      "cgroup_mkdir_etc")}
    ordered |= {k: v for k, v in sorted(phase_values.items()) if k.startswith("move_into:")}
    print(report.breakdown_table(ordered))
    print()
    mem = None
    if result["memory"] is not None:
        lines, mem = report.memory_lines(result["memory"])
        print("\n".join(lines))
        print()
    checks = report.checks(stats, mem)
    for check in checks:
        print(check.line())
    summary = {"stats": stats, "phases": {k: report.summary(v) for k, v in ordered.items() if v}, "memory": mem}
    return summary, checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("needs root: NeuroFlow's side creates cgroups and namespaces (run with sudo)")
        return 1
    scope = delegated_scope("neuroflow-bench-spawn")
    if scope and not os.environ.get(SCOPED_ENV):
        os.environ[SCOPED_ENV] = "1"
        os.execvp(scope[0], [*scope, sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
    missing = [f"{p} (apt-get install {PEERS[p].package})" for p in args.peers if not shutil.which(PEERS[p].argv()[0])]
    if missing:
        log(f"missing tools: {', '.join(missing)}")
        return 1
    log(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.spawns} spawns per sandbox "
        f"(+{args.warmup} warm-up), peers run {PYTHON}; cgroup favordynmods in /proc/mounts: {favordynmods()}")
    state = Path(tempfile.mkdtemp(prefix="neuroflow-bench-spawn-"))
    try:
        result = uvloop.run(measure(args, state))
    except (PeerError, RuntimeError, OSError) as exc:
        log(f"RUN FAILED: {type(exc).__name__}: {exc}")
        return 1
    finally:
        shutil.rmtree(state, ignore_errors=True)
    summary, checks = print_report(result)
    path = args.json or ROOT / "bench" / "results" / f"spawn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"spawns": args.spawns, "warmup": args.warmup, "idle_workers": args.idle_workers, "peers": args.peers,
            "pause_s": PAUSE_S, "python": PYTHON, "cpus": os.cpu_count(), "kernel": platform.release(),
            "cgroup_backend": result["cgroup_backend"], "favordynmods_mounted": favordynmods()}
    checks_json = [{"label": c.label, "value": c.value, "limit": c.limit, "status": c.status} for c in checks]
    path.write_text(json.dumps({"meta": meta, **summary, "checks": checks_json, "samples": result["samples"],
                                "memory_raw": result["memory"],
                                "records": [{k: v for k, v in r.items() if k != "asked"} | {"phases": phases_of(r)}
                                            for r in result["records"]]}, indent=1) + "\n")
    log(f"wrote {path}")
    return 3 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
