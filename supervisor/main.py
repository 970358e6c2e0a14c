"""``neuroflow-supervisor``: the root process that owns the agents' sandboxes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
import uvloop

from neuroflow.sdk.manifest import ManifestError
from neuroflow.v1 import supervisor_pb2_grpc as pb_grpc

from . import logs
from .config import Config, load_config, runtime_paths, socket_gid
from .kernel_counts import COUNTS, SOCKET_NAME
from .registry import Registry
from .sandbox.cgroup_common import CgroupError
from .sandbox.cgroups import Cgroups
from .service import SupervisorService
from .telemetry import SupervisorTelemetry

log = logging.getLogger("neuroflow.supervisor")


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="neuroflow-supervisor", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML file (default: /etc/neuroflow/supervisor.yaml if present)")
    parser.add_argument("--state-dir", type=Path, help="releases, sandbox roots and runtime files")
    parser.add_argument("--agents", type=Path, action="append", help="folder of agent folders (repeatable)")
    parser.add_argument("--socket", type=Path, help="gRPC Unix socket path")
    parser.add_argument("--socket-group", help="group allowed to use the socket")
    parser.add_argument("--instance", help="name of this supervisor's cgroups (neuroflow.<instance>)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    config = load_config(args.config).with_overrides(
        state_dir=args.state_dir,
        agents_dirs=tuple(args.agents) if args.agents else None,
        socket=args.socket,
        socket_group=args.socket_group,
        instance=args.instance,
        log_level=args.log_level,
    )
    return config, args


async def serve(config: Config) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state_dir, 0o755)
    cgroups = Cgroups(config.instance)
    await asyncio.to_thread(cgroups.setup)
    log.info("cgroups ready", extra={"backend": cgroups.backend, "reason": cgroups.reason,
                                     "root": cgroups.root})
    registry = Registry(config, cgroups, runtime_paths())
    registry.discover()
    service = SupervisorService(registry, cgroups)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", config.max_frame_bytes),
        ("grpc.max_send_message_length", config.max_frame_bytes),
    ])
    pb_grpc.add_SupervisorServicer_to_server(service, server)
    config.socket.parent.mkdir(parents=True, exist_ok=True)
    if config.socket.exists() or config.socket.is_symlink():
        config.socket.unlink()  # a stale socket from a crash
    server.add_insecure_port(f"unix:{config.socket}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # handlers only enqueue; the loop below acts
    telemetry = SupervisorTelemetry(config.telemetry, config.state_dir, registry.alerts)
    try:
        await telemetry.start(lambda: [p for e in list(registry.agents.values())
                                       for p in (e.pool, e.previous) if p is not None])
        try:
            COUNTS.start(config.socket.parent / SOCKET_NAME)
        except OSError as exc:  # request spans go without syscall counts
            log.error("cannot listen for neuroflow-ebpf's syscall counts at %s: %s",
                      config.socket.parent / SOCKET_NAME, exc.strerror)
        await registry.start_all()
        if config.watch:
            registry.watch(config.debounce)
        await server.start()
        gid = socket_gid(config)
        os.chown(config.socket, 0, gid if gid is not None else 0)
        os.chmod(config.socket, config.socket_mode)
        log.info("listening", extra={"socket": str(config.socket),
                                     "agents": sorted(registry.agents)})
        _notify("READY=1")
        watchdog = asyncio.create_task(_watchdog())
        await stop.wait()
        watchdog.cancel()
        log.info("stopping: draining requests")
        _notify("STOPPING=1")
        service.stopping = True
        await registry.stop_all()
        await server.stop(grace=2)
    finally:
        await registry.stop_all()
        COUNTS.close()
        await telemetry.close()
        await asyncio.to_thread(cgroups.teardown)
        if config.socket.exists():
            config.socket.unlink()
    log.info("stopped")
    return 0


async def _watchdog() -> None:
    """Ping systemd's watchdog from the event loop: a stalled loop gets restarted."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return
    while True:
        _notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2_000_000)


def _notify(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    import socket

    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), path)


def main(argv: list[str] | None = None) -> int:
    try:
        config, _ = parse_args(argv)
    except ManifestError as exc:  # ConfigError and the size/duration parsers' errors
        print(f"neuroflow-supervisor: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, "supervisor")
    try:
        logs.load_redactor(config.log_redactor)
    except LookupError as exc:
        log.error("%s", exc)
        return 2
    if os.geteuid() != 0:
        log.error("must run as root: it creates cgroups and namespaces for the agents' sandboxes")
        return 1
    try:
        return uvloop.run(serve(config))
    except CgroupError as exc:
        log.error("cgroups: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
