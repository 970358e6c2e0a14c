"""eBPF overhead benchmark: the probes on vs off, interleaved in one run, as ratios.

Runs a real supervisor (tests/stack.py) with the ``sysload`` test agent and, per
round, each mode in a shuffled order — ``off`` (no daemon), ``counts`` (the
default probes: syscall counts, TCP, process events) and ``latency`` (plus
per-syscall latency histograms) — measuring:

a. syscall-bound agent: ns per ``getppid`` inside the worker (200k calls per request);
b. realistic agent: end-to-end ms per ``work`` request (JSON in, file + socket I/O, JSON out);
c. a process outside every sandbox: ns per ``getppid`` (the cost every host process pays once
   syscall tracepoints are attached);
d. lost events and map-full refusals during the run, and the syscall rate the probes kept up with.

    sudo .venv/bin/python bench/ebpf/run.py [--rounds 5] [--requests 200]

Targets: ≤ 5% on the realistic agent; ≤ 1.5× on the syscall-bound one; zero lost events at 100k syscalls/s.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from neuroflow.v1 import supervisor_pb2 as pb  # noqa: E402
from tests.stack import BIN, Stack  # noqa: E402

MODES = {"off": None, "counts": [], "latency": ["--syscall-latency"]}
OUTSIDE = "import os, time\nn = {n}\nt = time.perf_counter()\nfor _ in range(n): os.getppid()\n" \
          "print((time.perf_counter() - t) / n * 1e9)"


class Daemon:
    def __init__(self, workdir: Path, socket: Path, extra: list[str]) -> None:
        path = workdir / f"ebpf-{time.monotonic_ns()}.log"  # one per start: the port is new each time
        self.log = open(path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([str(BIN / "neuroflow-ebpf"), "--listen", "127.0.0.1:0", "--supervisor",
                                      str(socket), "--interval", "0.5", "--header-dir", str(workdir / "headers"),
                                      *extra], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (m := re.search(r"listening on (http://\S+)", path.read_text())):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"neuroflow-ebpf did not start:\n{path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.url = m.group(1)
        while not (self.status()["watched_cgroups"] >= 1 and self.status()["supervisor"]["connected"]):
            if time.monotonic() > deadline:
                raise SystemExit("neuroflow-ebpf never watched the sysload worker")
            time.sleep(0.1)

    def status(self) -> dict:
        with urllib.request.urlopen(self.url + "/status", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def invoke(stub, value: dict) -> tuple[dict, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    reply = stub.Invoke(pb.InvokeCall(agent="sysload", input_json=json.dumps(value).encode(),
                                      request_id=f"bench-{time.monotonic_ns()}"), timeout=120)
    elapsed = time.perf_counter() - started
    if reply.HasField("error"):
        raise SystemExit(f"sysload failed: {reply.error.code}: {reply.error.message}")
    return json.loads(reply.output_json), elapsed


def measure(stub, requests: int, calls: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out, _ = invoke(stub, {"op": "getppid", "n": calls})
    syscall_ns = out["seconds"] / calls * 1e9
    work = [invoke(stub, {"op": "work", "items": 100})[1] * 1e3 for _ in range(requests)]
    outside = float(subprocess.run([sys.executable, "-c", OUTSIDE.format(n=calls)], capture_output=True, text=True,
                                   check=True).stdout)
    return {"syscall_ns": syscall_ns, "work_ms": statistics.median(work), "outside_ns": outside,
            "rate": calls / out["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="work requests per round and mode")
    parser.add_argument("--calls", type=int, default=200_000, help="getppid calls per measurement")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    lost = map_full = 0
    with tempfile.TemporaryDirectory(prefix="nf-bench-ebpf-") as tmp, \
            Stack(agents=[ROOT / "tests/agents/sysload"], workdir=Path(tmp)) as stack:
        stub = stack.stub()
        for _ in range(20):  # warm the worker
            invoke(stub, {"op": "work", "items": 100})
        for r in range(args.rounds):
            order = random.sample(list(MODES), len(MODES))
            for mode in order:
                daemon = Daemon(Path(tmp), stack.socket, MODES[mode]) if MODES[mode] is not None else None
                try:
                    results[mode].append(measure(stub, args.requests, args.calls))
                    if daemon is not None:
                        time.sleep(0.6)  # one more map read
                        status = daemon.status()
                        lost += status["lost_events_total"]
                        map_full += status["map_full_total"]
                finally:
                    if daemon is not None:
                        daemon.stop()
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{m} {results[m][-1]['syscall_ns']:.0f} ns/{results[m][-1]['work_ms']:.2f} ms" for m in order),
                flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in results[mode])

    print(f"\n{'mode':<9}{'getppid in agent':>18}{'work request':>15}{'getppid outside':>18}{'agent syscalls/s':>18}")
    for mode in MODES:
        print(f"{mode:<9}{med(mode, 'syscall_ns'):>15.0f} ns{med(mode, 'work_ms'):>12.3f} ms"
              f"{med(mode, 'outside_ns'):>15.0f} ns{med(mode, 'rate'):>18,.0f}")
    print("\nratios to off (medians of interleaved rounds):")
    for mode in ("counts", "latency"):
        print(f"  {mode:<8} syscall-bound {med(mode, 'syscall_ns') / med('off', 'syscall_ns'):.2f}x  "
              f"realistic {med(mode, 'work_ms') / med('off', 'work_ms'):.3f}x  "
              f"outside {med(mode, 'outside_ns') / med('off', 'outside_ns'):.2f}x")
    print(f"lost events {lost}, map-full refusals {map_full} "
          f"(at {min(med(m, 'rate') for m in ('counts', 'latency')):,.0f} traced syscalls/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
