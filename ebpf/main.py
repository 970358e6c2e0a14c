"""``neuroflow-ebpf``: BCC probes on the agents' workers, exported on a loopback HTTP port.

    neuroflow-ebpf [--supervisor SOCKET] [--listen 127.0.0.1:9466] [--probes syscalls,tcp,proc]
                   [--syscall-latency] [--watch AGENT=CGROUP_DIR ...] [--print-program NAME]

A separate root process so that LLVM's memory and any probe failure stay out
of the supervisor. It never exits because a probe cannot run: each probe is
on or off with a reason (``GET /status``, ``nfctl status``), and the rest keeps
working. Exit status: 0 stopped by a signal, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from neuroflow.ebpf._bcc import import_bcc
from neuroflow.ebpf.collector import ProbeSet
from neuroflow.ebpf.daemon import State, cost_sampler, make_app, poller
from neuroflow.ebpf.errors import ProbeOff
from neuroflow.ebpf.headers import prepare_kernel_source
from neuroflow.ebpf.probes import PROBES, print_program
from neuroflow.ebpf.registry import Registry, Worker
from neuroflow.ebpf.share import Sharing, offer, socket_beside
from neuroflow.ebpf.watch import Link, follow

log = logging.getLogger("neuroflow.ebpf")
DEFAULT_LISTEN = "127.0.0.1:9466"
DEFAULT_SOCKET = "/run/neuroflow/supervisor.sock"


@dataclass(frozen=True)
class Config:
    """Validated once at start (``from_args``), then passed down unchanged."""

    supervisor: str | None
    host: str
    port: int
    probes: tuple[str, ...]
    syscall_latency: bool
    probe_cost: bool
    probe_cost_sample: float
    interval: float
    header_dir: Path
    watch: tuple[tuple[str, Path], ...]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        host, _, port = args.listen.rpartition(":")
        host = host.strip("[]")
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
            port_number = int(port)
        except ValueError:
            raise SystemExit(f"neuroflow-ebpf: --listen: expected a loopback HOST:PORT such as {DEFAULT_LISTEN}, "
                             f"got {args.listen!r}") from None
        probes = tuple(p for p in args.probes.split(",") if p)
        unknown = [p for p in probes if p not in PROBES]
        if unknown:
            raise SystemExit(f"neuroflow-ebpf: --probes: unknown {', '.join(unknown)}; "
                             f"expected some of {','.join(PROBES)}")
        watch = []
        for item in args.watch:
            agent, sep, path = item.partition("=")
            if not sep or not agent or not Path(path).is_dir():
                raise SystemExit(f"neuroflow-ebpf: --watch: expected AGENT=CGROUP_V2_DIR, got {item!r}")
            watch.append((agent, Path(path)))
        if args.interval <= 0:
            raise SystemExit("neuroflow-ebpf: --interval: expected seconds > 0")
        if not 0 < args.probe_cost_sample <= 1:
            raise SystemExit("neuroflow-ebpf: --probe-cost-sample: expected a share > 0 and <= 1, "
                             f"got {args.probe_cost_sample}")
        return cls(supervisor=args.supervisor or None, host=host, port=port_number, probes=probes,
                   syscall_latency=args.syscall_latency, probe_cost=args.probe_cost,
                   probe_cost_sample=args.probe_cost_sample, interval=args.interval,
                   header_dir=Path(args.header_dir), watch=tuple(watch))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroflow-ebpf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supervisor", default=DEFAULT_SOCKET,
                        help="supervisor socket to follow workers on; '' for none (default %(default)s)")
    parser.add_argument("--listen", default=os.environ.get("NEUROFLOW_EBPF_LISTEN", DEFAULT_LISTEN),
                        help="loopback HOST:PORT for /metrics and /status (default %(default)s)")
    parser.add_argument("--probes", default=",".join(PROBES), help="probes to load (default %(default)s)")
    parser.add_argument("--syscall-latency", action=argparse.BooleanOptionalAction, default=False,
                        help="per-syscall latency histograms (~0.55 µs per traced syscall; default off)")
    parser.add_argument("--probe-cost", action=argparse.BooleanOptionalAction, default=True,
                        help="count the probes' own kernel CPU time (BPF run-time stats; default on)")
    parser.add_argument("--probe-cost-sample", type=float, default=1.0, metavar="SHARE",
                        help="share of the time those stats are on, the estimate scaled up (they cost two clock "
                             "reads per program run while on; each switch patches kernel code on every CPU; "
                             "default %(default)s: always on, exact)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between map reads")
    parser.add_argument("--header-dir", default=os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/neuroflow-ebpf"),
                                                             "kernel-headers"),
                        help="where to build the minimal header folder when the kernel's are missing")
    parser.add_argument("--watch", action="append", default=[], metavar="AGENT=CGROUP_DIR",
                        help="also watch this cgroup v2 directory as AGENT (debugging, tests)")
    parser.add_argument("--print-program", choices=sorted(PROBES), help="print a probe's C and flags, then exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


async def run(config: Config) -> None:
    try:
        kind, path = prepare_kernel_source(config.header_dir)
        headers = {"kind": kind, "path": str(path)}
    except ProbeOff as off:
        headers = {"kind": "none", "path": "", "error": off.message}
    probes = ProbeSet(config.probes if "error" not in headers else (), latency=config.syscall_latency,
                      probe_cost=config.probe_cost)
    await asyncio.to_thread(probes.load, import_bcc)
    if "error" in headers:
        for name in config.probes:
            probes._off(name, ProbeOff("no_headers", headers["error"]))
    registry = Registry()
    for agent, cgroup_dir in config.watch:
        registry.add(Worker(agent, "", f"static:{cgroup_dir}", 0, cgroup_dir.stat().st_ino))
        probes.watch(cgroup_dir.stat().st_ino, registry.index(agent))
    link = Link(config.supervisor) if config.supervisor else None
    syscalls = probes.loaded.get("syscalls")
    beside = socket_beside(config.supervisor)
    sharing = Sharing(beside) if syscalls is not None and beside is not None else None
    state = State(probes, registry, link, headers, sharing)
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    host, port = runner.addresses[0][:2]  # the real port when --listen asked for 0
    print(f"neuroflow-ebpf listening on http://{host}:{port} "
          f"(probes on: {', '.join(probes.loaded) or 'none'})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tasks:
            jobs = [tasks.create_task(poller(state, config.interval))]
            if probes.extras.get("probe_cost") and probes.extras["probe_cost"].on:
                probes.extras["probe_cost"].detail = (
                    "exact (stats always on)" if config.probe_cost_sample >= 1
                    else f"estimated: stats on {config.probe_cost_sample:.0%} of the time, scaled up")
                jobs.append(tasks.create_task(cost_sampler(probes, config.probe_cost_sample)))
            if link is not None:
                jobs.append(tasks.create_task(follow(link, registry, probes)))
            if sharing is not None and syscalls is not None:
                jobs.append(tasks.create_task(offer(sharing, syscalls.table("watched").map_fd)))
            await stop.wait()
            for job in jobs:
                job.cancel()
    finally:
        await runner.cleanup()
        probes.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_program:
        print(print_program(args.print_program, latency=args.syscall_latency))
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_args(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
