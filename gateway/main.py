"""``neuroflow-gateway``: the HTTP front door (unprivileged)."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import pwd
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from neuroflow.guard import GuardConfigError
from neuroflow.supervisor import logs

from . import telemetry
from .app import GatewayConfig, make_app
from .client import SupervisorClient
from .guarding import Guarding, GuardingConfig
from .routing import Routing, RoutingConfig
from .telemetry import Export

log = logging.getLogger("neuroflow.gateway")


def parse_args(argv: list[str] | None) -> tuple[GatewayConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="neuroflow-gateway", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--supervisor", default="/run/neuroflow/supervisor.sock",
                        help="supervisor socket path, or grpc target (default %(default)s)")
    parser.add_argument("--max-body", type=int, default=1024 * 1024, help="bytes (default %(default)s)")
    parser.add_argument("--user", help="when started as root, switch to this user after binding")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--no-router", action="store_true", help="disable /v1/route and /v1/invoke")
    parser.add_argument("--no-guard", action="store_true", help="do not check inputs and outputs")
    parser.add_argument("--guard-rules", type=Path,
                        help="guard rules YAML (default: the shipped rules); re-read when it changes")
    parser.add_argument("--router-model", default="e5-small",
                        help="e5-small (default), minilm, or a folder with model.onnx + tokenizer.json")
    parser.add_argument("--model-cache", type=Path, default=_default_model_cache(),
                        help="where the e5-small model is (built by scripts/setup.sh; default %(default)s)")
    parser.add_argument("--default-agent", help="agent for queries no agent fits (default: answer 422)")
    parser.add_argument("--route-threshold", type=float, help="calibrated confidence needed (default 0.5)")
    parser.add_argument("--route-log", type=Path, help="JSONL file of low-confidence routing decisions")
    parser.add_argument("--trace-dir", type=Path,
                        help="write finished spans to rotating JSON-lines files here when no OTLP endpoint is set "
                             "(default: a traces folder beside --route-log, else none)")
    parser.add_argument("--otlp-endpoint", default=None,
                        help="OTLP collector URL for traces and metrics (default: $OTEL_EXPORTER_OTLP_ENDPOINT)")
    parser.add_argument("--otlp-protocol", choices=["grpc", "http/protobuf"],
                        help="OTLP transport (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
    parser.add_argument("--trace-sample", type=float, default=1.0, metavar="RATIO",
                        help="share of requests (without a sampled traceparent) whose spans are recorded, "
                             "0 to 1 (default 1: every request); unsampled ones still carry a trace id")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not 0.0 <= args.trace_sample <= 1.0:
        parser.error(f"--trace-sample: expected a ratio from 0 to 1, got {args.trace_sample:g}")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen: expected HOST:PORT, got {args.listen!r}")
    target = args.supervisor if ":" in args.supervisor else f"unix:{args.supervisor}"
    config = GatewayConfig(supervisor=target, host=host.strip("[]"), port=int(port),
                           max_body=args.max_body, access_log=args.access_log)
    args.routing = RoutingConfig(enabled=not args.no_router, model=args.router_model,
                                 model_cache_dir=args.model_cache, default_agent=args.default_agent,
                                 threshold=args.route_threshold, bad_case_log=args.route_log)
    args.guarding = GuardingConfig(enabled=not args.no_guard, rules=args.guard_rules)
    if args.trace_dir is None and args.route_log is not None:
        args.trace_dir = args.route_log.parent / "traces"
    return config, args


def _default_model_cache() -> Path:
    """``<virtualenv>/share/neuroflow/models``, where scripts/setup.sh builds the model."""
    return Path(sys.prefix) / "share" / "neuroflow" / "models"


def _hand_over(user: str, trace_dir: Path | None, route_log: Path | None) -> None:
    """What the gateway writes after dropping to ``user``: its trace folder and route log."""
    pw = pwd.getpwnam(user)
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        for path in (trace_dir, *trace_dir.iterdir()):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    if route_log is not None:
        route_log.parent.mkdir(parents=True, exist_ok=True)
        route_log.touch(mode=0o640, exist_ok=True)
        os.chown(route_log, pw.pw_uid, pw.pw_gid)


def drop_to(user: str) -> None:
    pw = pwd.getpwnam(user)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    os.setgroups(sorted({pw.pw_gid, *groups}))
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)


async def serve(config: GatewayConfig, routing: RoutingConfig, guarding: GuardingConfig, user: str | None,
                export: Export | None = None) -> int:
    client = SupervisorClient(config.supervisor)
    app = make_app(config, client, Routing(routing, client), Guarding(guarding), export)
    runner = web.AppRunner(app, access_log=log if config.access_log else None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    if user and os.geteuid() == 0:
        drop_to(user)
    port = runner.addresses[0][1] if runner.addresses else config.port
    log.info("listening", extra={"url": f"http://{config.host}:{port}", "supervisor": config.supervisor,
                                 "uid": os.geteuid()})
    print(f"neuroflow-gateway listening on http://{config.host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    if export is not None:
        await asyncio.to_thread(export.shutdown)  # flushes the last spans
    return 0


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    logs.setup(args.log_level, "gateway")
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            log.error("--user: no such user %r", args.user)
            return 2
    export = telemetry.setup(args.trace_dir, args.otlp_endpoint, args.otlp_protocol, args.trace_sample)
    if args.user and os.geteuid() == 0:
        _hand_over(args.user, args.trace_dir, args.route_log)
    try:
        return uvloop.run(serve(config, args.routing, args.guarding, args.user, export))
    except GuardConfigError as exc:
        log.error("guard rules: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
