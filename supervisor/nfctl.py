"""``nfctl``: the admin CLI. Talks to the supervisor's gRPC socket only.

    nfctl status            supervisor, cgroup backend, agents
    nfctl agents            one line per agent
    nfctl top               live per-agent requests/s, p99 (last 10 s), CPU, memory, syscalls/s, connect latency (eBPF)
    nfctl invoke NAME JSON  run one request (JSON is the agent's input)
    nfctl releases NAME     an agent's releases (current, standby)
    nfctl deploy NAME [PATH]  deploy PATH (default: the agent's folder) after validating it
    nfctl rollback NAME [ID]  back to release ID (default: the one before the current)
    nfctl history [NAME]    swaps, rejections, rollbacks
    nfctl events [NAME]     limit breaches and seccomp violations (``-f`` to follow)
    nfctl route "QUERY"     which agent the gateway's router picks, and why
    nfctl route-log         the router's recent low-confidence decisions
    nfctl guard check TEXT  what the gateway's guard rules do with TEXT
    nfctl trace TRACE_ID    a request's span tree with timings (``--last``: the latest trace)

Add ``--json`` for machine-readable output. Exit status: 0 ok, 1 the request
failed (the error code is printed), 2 usage, 3 supervisor unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from neuroflow.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
DEFAULT_SOCKET = os.environ.get("NEUROFLOW_SOCKET", "/run/neuroflow/supervisor.sock")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)}MiB" if n else "-"


def _agent_rows(agents: Any) -> list[list[str]]:
    return [[a.name, a.version or "-", a.state, a.release[:12] or "-", str(a.workers), str(a.busy),
             str(a.requests), str(a.failures), _mib(a.limits.memory_bytes),
             f"{a.limits.cpu:g}" if a.limits.cpu else "-", a.seccomp or "-", str(a.events), a.detail[:60]]
            for a in agents]


_AGENT_HEADER = ["agent", "version", "state", "release", "workers", "busy", "requests", "failed",
                 "memory", "cpu", "seccomp", "events", "detail"]


def cmd_status(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    st = stub.Status(pb.StatusRequest(), timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(st, preserving_proto_field_name=True))
        return 0
    print(f"supervisor  pid {st.pid}, version {st.version}, up {st.uptime_s:.0f} s, "
          f"{st.requests} requests ({st.failures} failed)")
    print(f"state       {st.state_dir}")
    print(f"cgroups     {st.cgroup.backend} ({', '.join(st.cgroup.controllers)}): {st.cgroup.reason}")
    print(f"            {st.cgroup.root}")
    print("\n".join(_ebpf_status_lines(args)))
    print()
    print(_table(_agent_rows(st.agents), _AGENT_HEADER))
    return 0


def _ebpf_status_lines(args: argparse.Namespace) -> list[str]:
    """The eBPF probes, on or off and why, from neuroflow-ebpf's local endpoint (never fails status)."""
    from neuroflow.ebpf import top as ebpf_top

    try:
        return ebpf_top.status_lines(ebpf_top.fetch_status(args.ebpf, timeout=min(args.timeout, 2)))
    except ebpf_top.EbpfUnreachable as exc:
        return ebpf_top.status_lines(None, str(exc))


def cmd_top(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    """Live per-agent table: requests/s from the supervisor, the rest from neuroflow-ebpf."""
    from neuroflow.ebpf import top as ebpf_top

    def sample() -> tuple[float, dict[str, Any]]:
        reply = stub.ListAgents(pb.ListAgentsRequest(), timeout=args.timeout)
        return time.monotonic(), {a.name: a for a in reply.agents}

    then, before = sample()
    shown = 0
    while args.count == 0 or shown < args.count:
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        now, agents = sample()
        rates = {name: {"workers": a.workers,
                        "requests_per_s": (a.requests - before[name].requests) / (now - then) if name in before
                        else None,
                        "p99_ms": a.p99_ms or None} for name, a in agents.items()}
        then, before = now, agents
        try:
            ebpf, note = ebpf_top.fetch_status(args.ebpf, timeout=min(args.timeout, 2)), ""
        except ebpf_top.EbpfUnreachable as exc:
            ebpf, note = None, str(exc)
        if args.json:
            print(json.dumps({"agents": rates, "ebpf": ebpf and ebpf.get("agents")}), flush=True)
        else:
            if sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            print(time.strftime("%H:%M:%S") + (f"  ({note})" if note else ""))
            print(_table(ebpf_top.top_rows(rates, ebpf), ebpf_top.TOP_HEADER), flush=True)
        shown += 1
    return 0


def cmd_agents(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    reply = stub.ListAgents(pb.ListAgentsRequest(), timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
    else:
        print(_table(_agent_rows(reply.agents), _AGENT_HEADER))
    return 0


def cmd_invoke(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.input)
    except ValueError:
        value = args.input  # plain text is a JSON string input
    call = pb.InvokeCall(agent=args.name, input_json=json.dumps(value).encode(),
                         request_id=f"nfctl-{uuid.uuid4().hex[:12]}", session=args.session or "",
                         timeout_ms=int(args.deadline * 1000) if args.deadline else 0)
    reply = stub.Invoke(call, timeout=(args.deadline or 300) + 10)
    if reply.HasField("error"):
        if args.json:
            print(json.dumps({"error": {"code": reply.error.code, "message": reply.error.message},
                              "request_id": reply.request_id}))
        else:
            print(f"error: {reply.error.code}: {reply.error.message}", file=sys.stderr)
        return EXIT_FAILED
    output = json.loads(reply.output_json or b"null")
    if args.json:
        print(json.dumps({"output": output, "agent": reply.agent, "version": reply.version,
                          "request_id": reply.request_id, "worker": reply.worker_id,
                          "duration_ms": round(reply.duration_ms, 3)}, ensure_ascii=False))
    else:
        print(json.dumps(output, ensure_ascii=False, indent=2))
    return 0


def _print_deploy(reply: pb.DeployReply, args: argparse.Namespace) -> int:
    if args.json:
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
    else:
        print(f"{reply.agent}: {reply.outcome} {reply.release}" + (f": {reply.detail}" if reply.detail else ""))
    return EXIT_FAILED if reply.outcome == "rejected" else 0


def cmd_deploy(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path) if args.path else ""
    return _print_deploy(stub.Deploy(pb.DeployRequest(agent=args.name, path=path), timeout=300), args)


def cmd_rollback(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    reply = stub.Rollback(pb.RollbackRequest(agent=args.name, release=args.release or ""), timeout=300)
    return _print_deploy(reply, args)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_releases(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    reply = stub.ListReleases(pb.ListReleasesRequest(agent=args.name), timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
        return 0
    rows = [[r.id, _when(r.created_unix), "current" if r.current else "standby" if r.standby else ""]
            for r in reply.releases]
    print(_table(rows, ["release", "created", "state"]))
    return 0


def cmd_history(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    reply = stub.History(pb.HistoryRequest(agent=args.name or "", limit=args.limit), timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
        return 0
    rows = [[_when(e.ts_unix), e.agent, e.event, e.release, e.detail[:80]] for e in reply.entries]
    print(_table(rows, ["time", "agent", "event", "release", "detail"]))
    return 0


def cmd_events(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    request = pb.EventsRequest(agent=args.name or "", limit=args.limit, follow=args.follow)
    stream = stub.Events(request, timeout=None if args.follow else args.timeout)
    rows = []
    for event in stream:
        if args.json:
            print(json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None), flush=True)
        elif args.follow:
            print(f"{_when(event.ts_unix)}  {event.agent}  {event.worker_id}  {event.kind}  {event.value}  "
                  f"{event.detail}", flush=True)
        else:
            rows.append([_when(event.ts_unix), event.agent, event.worker_id, event.kind, event.value,
                         event.request_id or "-", event.detail[:90]])
    if not args.json and not args.follow:
        print(_table(rows, ["time", "agent", "worker", "kind", "value", "request", "detail"]))
    return 0


def _trace_dirs(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> list[str]:
    """``--dir`` folders, else the supervisor's ``<state_dir>/traces`` and the gateway's default folder."""
    if args.dir:
        return list(args.dir)
    try:
        state_dir = stub.Status(pb.StatusRequest(), timeout=2).state_dir
    except grpc.RpcError:
        state_dir = "/var/lib/neuroflow"
    return [os.path.join(state_dir, "traces"), "/var/lib/neuroflow-gateway/traces"]


def cmd_trace(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    from .traces import last_trace_id, read_spans, render_trace, trace_tree

    dirs = _trace_dirs(stub, args)
    spans = read_spans(Path(d) for d in dirs)
    trace_id = last_trace_id(spans) if args.last else (args.trace_id or "").lower()
    if not trace_id:
        print("nfctl: give a TRACE_ID or --last" if not args.last else f"no traces in {', '.join(dirs)}",
              file=sys.stderr)
        return EXIT_USAGE if not args.last else EXIT_FAILED
    tree = trace_tree(spans, trace_id)
    if not tree:
        print(f"error: trace_not_found: no spans of trace {trace_id} in {', '.join(dirs)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps([{**s, "depth": depth} for depth, s in tree], ensure_ascii=False))
    else:
        print(render_trace(spans, trace_id))
    return 0


def _gateway(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None) -> Any:
    """The routing commands ask the gateway (the router lives there), over HTTP."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.gateway.rstrip("/") + path, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        raise GatewayError(f"{error.get('code', exc.code)}: {error.get('message', exc.reason)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {args.gateway}: {exc}") from None


class GatewayError(Exception):
    pass


class GatewayUnreachable(Exception):
    pass


def cmd_route(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    decision = _gateway(args, "/v1/route", {"query": args.query})
    if args.json:
        print(json.dumps(decision, ensure_ascii=False))
        return 0
    verdict = "fallback to" if decision["fallback"] else "routed to"
    print(f"{verdict} {decision['agent'] or '(no agent fits)'}  confidence {decision['confidence']:.2f}")
    print(_table([[c["agent"], f"{c['score']:.3f}"] for c in decision["candidates"]], ["candidate", "score"]))
    return 0


def cmd_route_log(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    cases = _gateway(args, f"/v1/route/log?limit={args.limit}")["cases"]
    if args.json:
        print(json.dumps(cases, ensure_ascii=False))
        return 0
    rows = [[_when(c["ts"]) if isinstance(c.get("ts"), int | float) else str(c.get("ts", ""))[:19],
             str(c.get("chosen")), f"{c.get('confidence', 0):.2f}",
             ", ".join(f"{x['agent']} {x['score']:.2f}" for x in c.get("candidates", [])[:3]),
             c.get("query", "")[:60]] for c in cases]
    print(_table(rows, ["time", "chosen", "conf", "candidates", "query"]))
    return 0


def cmd_guard_check(stub: pb_grpc.SupervisorStub, args: argparse.Namespace) -> int:
    verdict = _gateway(args, "/v1/guard/check", {"text": args.text, "direction": args.direction})
    if args.json:
        print(json.dumps(verdict, ensure_ascii=False))
        return 0
    rule = f" (rule {verdict['rule']})" if verdict.get("rule") else ""
    print(f"{verdict['action']}{rule}" + (f": {verdict['message']}" if verdict.get("message") else ""))
    rows = [[f["type"], f"{f['start']}-{f['end']}", f.get("rule") or "", f"{f['score']:.2f}" if f.get("score") else ""]
            for f in verdict["findings"]]
    if rows:
        print(_table(rows, ["finding", "span", "rule", "score"]))
    if verdict["redacted"] != args.text:
        print(f"redacted: {verdict['redacted']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help="supervisor socket (default: $NEUROFLOW_SOCKET or %(default)s)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=10, help="seconds for admin calls")
    parser.add_argument("--gateway", default=os.environ.get("NEUROFLOW_GATEWAY", "http://127.0.0.1:8080"),
                        help="gateway URL for route commands (default: $NEUROFLOW_GATEWAY or %(default)s)")
    parser.add_argument("--ebpf", default=os.environ.get("NEUROFLOW_EBPF", "http://127.0.0.1:9466"),
                        help="neuroflow-ebpf's local endpoint for status/top (default: $NEUROFLOW_EBPF or %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="supervisor and agents").set_defaults(func=cmd_status)
    sub.add_parser("agents", help="list agents").set_defaults(func=cmd_agents)
    top = sub.add_parser("top", help="live per-agent requests/s, CPU, memory, syscalls/s, connect latency")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--count", type=int, default=0, help="stop after N refreshes (default: run until Ctrl-C)")
    top.set_defaults(func=cmd_top)
    inv = sub.add_parser("invoke", help="run one request")
    inv.add_argument("name")
    inv.add_argument("input", help="the agent's input as JSON (plain text becomes a string)")
    inv.add_argument("--session")
    inv.add_argument("--deadline", type=float, help="seconds (default: the agent's timeout)")
    inv.set_defaults(func=cmd_invoke)
    rel = sub.add_parser("releases", help="an agent's releases")
    rel.add_argument("name")
    rel.set_defaults(func=cmd_releases)
    dep = sub.add_parser("deploy", help="validate and deploy a folder as the agent's new release")
    dep.add_argument("name")
    dep.add_argument("path", nargs="?", help="agent folder (default: the agent's own)")
    dep.set_defaults(func=cmd_deploy)
    rb = sub.add_parser("rollback", help="go back to an earlier release")
    rb.add_argument("name")
    rb.add_argument("release", nargs="?")
    rb.set_defaults(func=cmd_rollback)
    hist = sub.add_parser("history", help="swaps, rejections and rollbacks")
    hist.add_argument("name", nargs="?")
    hist.add_argument("--limit", type=int, default=50)
    hist.set_defaults(func=cmd_history)
    ev = sub.add_parser("events", help="limit breaches and seccomp violations in the sandboxes")
    ev.add_argument("name", nargs="?")
    ev.add_argument("--limit", type=int, default=100)
    ev.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    ev.set_defaults(func=cmd_events)
    rt = sub.add_parser("route", help="explain which agent a query goes to")
    rt.add_argument("query")
    rt.set_defaults(func=cmd_route)
    rl = sub.add_parser("route-log", help="recent low-confidence routing decisions")
    rl.add_argument("--limit", type=int, default=20)
    rl.set_defaults(func=cmd_route_log)
    guard = sub.add_parser("guard", help="the gateway's guard").add_subparsers(dest="guard_command", required=True)
    gc = guard.add_parser("check", help="apply the guard rules to a text")
    gc.add_argument("text")
    gc.add_argument("--direction", choices=["input", "output"], default="input")
    gc.set_defaults(func=cmd_guard_check)
    tr = sub.add_parser("trace", help="a request's span tree from the local trace files")
    tr.add_argument("trace_id", nargs="?")
    tr.add_argument("--last", action="store_true", help="the most recent trace")
    tr.add_argument("--dir", action="append",
                    help="trace folder (repeatable; default: <state_dir>/traces and /var/lib/neuroflow-gateway/traces)")
    tr.set_defaults(func=cmd_trace)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.socket if ":" in args.socket else f"unix:{args.socket}"
    with grpc.insecure_channel(target) as channel:
        try:
            return int(args.func(pb_grpc.SupervisorStub(channel), args))
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except GatewayUnreachable as exc:
            print(f"nfctl: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except grpc.RpcError as exc:
            code = dict(exc.trailing_metadata() or ()).get("nf-error-code")  # type: ignore[attr-defined]
            if code:  # the supervisor answered with a domain error
                print(f"error: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
                return EXIT_FAILED
            print(f"nfctl: cannot reach the supervisor at {args.socket}: {exc.details()}",  # type: ignore[attr-defined]
                  file=sys.stderr)
            return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
