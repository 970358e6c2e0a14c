"""The supervisor's telemetry: its instruments, request spans, alert rules.

The plumbing (sampling, light spans, export to OTLP or trace files, the
``/metrics`` handler) is :mod:`.otel`, shared with the gateway.

Spans of one request: ``neuroflow.v1.Supervisor/InvokeStream`` (SERVER, from
the gateway's ``traceparent`` in ``InvokeCall.metadata``) → ``supervisor queue``
(only when no worker was free) and ``supervisor dispatch`` → the worker's
``worker handle`` and the agent's own spans, which arrive in the request's
``InvokeResult`` and are exported here with their original ids and times;
and ``egress CONNECT host:port`` for the agent's upstream connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from neuroflow.v1 import worker_pb2 as wpb

from .kernel_counts import COUNTS
from .logs import UNSAMPLED_TRACE
from .otel import (
    DURATION_BUCKETS,
    NO_SPAN,
    Batched,
    NoSpan,
    Sampling,
    Span,
    TelemetryConfig,
    current_span,
    metrics_handler,
    start_span,
)
from .otel_export import Export, setup_export

if TYPE_CHECKING:
    from .alerts import Alerts
    from .pool import AgentPool
    from .worker import Worker

log = logging.getLogger("neuroflow.telemetry")

async def serve_metrics(registry: CollectorRegistry, listen: str) -> tuple[Any, str]:
    """Serve ``GET /metrics`` on ``listen`` (HOST:PORT); returns the runner and the URL it bound."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry, flush_metrics))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, f"http://{host}:{bound}/metrics"


# -- the supervisor's instruments -----------------------------------------------------------------
class Instruments:
    """Every metric the supervisor records, created on ``meter``."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter("neuroflow.agent.requests", "{request}", "Requests per agent")
        self.duration = meter.create_histogram(
            "neuroflow.agent.request.duration", "s", "Time from the supervisor's receipt to its reply",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.errors = meter.create_counter("neuroflow.agent.errors", "{request}", "Failed requests by error code")
        self.tokens = meter.create_counter("neuroflow.agent.tokens", "{token}", "Tokens agents reported")
        self.execution = meter.create_histogram(
            "neuroflow.agent.execution.time", "s", "Time the agent's handle() ran, as the worker measured it",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.spawns = meter.create_counter("neuroflow.worker.spawns", "{worker}", "Workers started")
        self.kills = meter.create_counter("neuroflow.worker.kills", "{worker}", "Workers that died, by reason")
        self.agent_metric = meter.create_counter("neuroflow.agent.metric", "1",
                                                 "Values agents emitted with context.emit_metric, summed")
        self.egress_connect = meter.create_histogram(
            "neuroflow.agent.egress.connect.duration", "s",
            "DNS and connect time of the egress proxy's upstream connections, by agent, destination and outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)


INSTRUMENTS = Instruments(metrics.get_meter("neuroflow.supervisor"))


def watch_pools(pools: Callable[[], Iterable[AgentPool]], meter: metrics.Meter | None = None) -> None:
    """Observable gauges over the live pools: workers by state, cgroup usage per agent."""
    meter = meter or metrics.get_meter("neuroflow.supervisor")

    def workers(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for pool in list(pools()):
            for w in list(pool.workers):
                counts[(pool.name, w.state)] += 1
        for (agent, state), n in counts.items():
            yield metrics.Observation(n, {"agent": agent, "state": state})

    def usage(kind: str) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
        def observe(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
            totals: dict[str, float] = collections.defaultdict(float)
            for pool in list(pools()):
                for w in list(pool.workers):
                    if w.leaf is None or w.state == "dead":
                        continue
                    try:
                        u = w.leaf.usage()
                    except (OSError, ValueError):  # the worker died and its group went meanwhile
                        continue
                    totals[pool.name] += (u.cpu_usec / 1e6 if kind == "cpu" else
                                          u.memory_bytes if kind == "memory" else u.pids)
            for agent, value in totals.items():
                yield metrics.Observation(value, {"agent": agent})
        return observe

    def incidents(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        from .events import BUS

        for (agent, kind), n in list(BUS.counts.items()):
            yield metrics.Observation(n, {"agent": agent, "kind": kind})

    meter.create_observable_gauge("neuroflow.workers", [workers], "{worker}", "Workers by agent and state")
    meter.create_observable_counter("neuroflow.agent.incidents", [incidents], "{event}",
                                    "Sandbox incidents: limit breaches (memory, cpu_time, pids, timeout), seccomp")
    meter.create_observable_gauge("neuroflow.agent.cgroup.cpu.time", [usage("cpu")], "s",
                                  "CPU time used by the agent's live workers (their cgroups)")
    meter.create_observable_gauge("neuroflow.agent.cgroup.memory.usage", [usage("memory")], "By",
                                  "Memory charged to the agent's live workers (their cgroups)")
    meter.create_observable_gauge("neuroflow.agent.cgroup.pids", [usage("pids")], "{process}",
                                  "Processes in the agent's live workers' cgroups")


#: Where calls without a ``traceparent`` (nfctl, direct gRPC clients) start their trace.
SAMPLING = Sampling()


def server_span(metadata: Mapping[str, str], agent: str, request_id: str) -> contextlib.AbstractContextManager[
        Span | NoSpan]:
    """The supervisor's SERVER span for one call, child of the caller's ``traceparent`` if it sent one."""
    return start_span(
        "neuroflow.v1.Supervisor/InvokeStream", kind=SpanKind.SERVER, traceparent=metadata.get("traceparent"),
        sampling=SAMPLING,
        attributes={"rpc.system": "grpc", "rpc.service": "neuroflow.v1.Supervisor", "rpc.method": "InvokeStream",
                    "neuroflow.agent": agent, "neuroflow.request_id": request_id},
    )


def queue_span(agent: str) -> contextlib.AbstractContextManager[Span | NoSpan]:
    """Time spent waiting for a worker with a free slot."""
    return start_span("supervisor queue", attributes={"neuroflow.agent": agent})


def syscalls_before(span: Span | NoSpan, worker: Worker) -> int | None:
    """The worker's syscall count (from neuroflow-ebpf) as a sampled request is dispatched to it,
    if the worker has no other request in flight; else None."""
    if not isinstance(span, Span) or not COUNTS.active or worker.inflight or worker.leaf is None:
        return None
    return COUNTS.syscalls(worker.leaf.cgroup_id)


def syscalls_after(span: Span | NoSpan, worker: Worker, before: int, frame_id: int) -> None:
    """After the reply: the syscalls the worker made for this request, on its dispatch span.

    Only if nothing else reached the worker meanwhile (no other request, no health check):
    then every syscall in its cgroup since ``before`` was made for this request.
    """
    if worker.inflight or worker.last_frame_id != frame_id or worker.leaf is None:
        return
    after = COUNTS.syscalls(worker.leaf.cgroup_id)
    if after is None or after < before:
        return
    calls = after - before
    span.set_attribute("neuroflow.syscalls", calls)
    tel = _ACTIVE[0]
    threshold = (tel.config if tel is not None else TelemetryConfig()).syscall_burst
    if calls >= threshold and isinstance(span, Span):
        seconds = max(time.time_ns() - span.start_time, 1) / 1e9
        span.add_event("syscall burst", {"neuroflow.syscalls": calls,
                                         "neuroflow.syscalls_per_second": round(calls / seconds)})


def start_dispatch(agent: str, worker_id: str, request: wpb.InvokeRequest) -> Span | NoSpan:
    """Start the span of the request on its worker (the caller ends it); its ids go to the
    worker as the parent of ``worker handle``."""
    parent = current_span()
    if parent is None:
        if unsampled := UNSAMPLED_TRACE.get():  # the worker logs under it and records no span
            request.trace_id, request.sampled = unsampled, False
        return NO_SPAN
    span = parent.child("supervisor dispatch", attributes={"neuroflow.agent": agent, "neuroflow.worker": worker_id})
    request.trace_id, request.parent_span_id, request.sampled = span.trace_id_hex, f"{span.span_id:016x}", True
    return span


# -- the supervisor's telemetry, wired at start --------------------------------------------------
#: Kill reasons, from the words of Worker.kill() callers; the first match names the reason.
_KILL_REASONS = (("health check", "health_check"), ("invalid frame", "bad_frame"), ("deadline", "deadline"),
                 ("shutting down", "shutdown"), ("failed to start", "spawn_failed"),
                 ("channel closed", "channel_closed"), ("drain", "drained"))


def exit_reason(worker: Worker) -> str:
    """A short, stable label for why ``worker`` ended (memory, cpu_time, health_check, crashed, ...)."""
    if worker.breach is not None:  # found when it died
        return worker.breach[0]  # memory | cpu_time
    if worker.kill_reason is not None:
        text = worker.kill_reason
        return next((label for words, label in _KILL_REASONS if words in text), "killed")
    status = worker.exit_status.result() if worker.exit_status.done() else None
    if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "exited"
    return "crashed"


class SupervisorTelemetry:
    """Owns the export, the ``/metrics`` server and the alert rules of one supervisor process."""

    def __init__(self, config: TelemetryConfig, state_dir: Path, alerts: Alerts | None) -> None:
        self.config = config
        self.trace_dir = config.trace_dir or state_dir / "traces"
        self.alerts = alerts
        self.export: Export | None = None
        self.metrics_url = ""
        self._runner: Any = None
        self._incidents: asyncio.Task[None] | None = None
        self._window: dict[str, collections.deque[tuple[float, bool, float]]] = collections.defaultdict(
            collections.deque)
        self._breaches: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._fired: dict[tuple[str, str], float] = {}
        self._errors: collections.Counter[str] = collections.Counter()  # failures in each agent's window
        self._p99_checked: dict[str, float] = {}

    async def start(self, pools: Callable[[], Iterable[AgentPool]]) -> None:
        SAMPLING.ratio = self.config.sample_ratio
        self.export = setup_export("neuroflow-supervisor", self.config, self.trace_dir)
        watch_pools(pools)
        _ACTIVE[0] = self
        self._incidents = asyncio.create_task(self._watch_incidents())
        if self.config.metrics_listen:
            try:
                self._runner, self.metrics_url = await serve_metrics(self.export.registry, self.config.metrics_listen)
            except OSError as exc:  # metrics are not worth refusing to run agents for
                log.error("metrics endpoint disabled: cannot listen on %s: %s", self.config.metrics_listen,
                          exc.strerror, extra={"code": "metrics_unavailable"})
            else:
                log.info("metrics listening", extra={"url": self.metrics_url})

    async def close(self) -> None:
        _ACTIVE[0] = None
        if self._incidents is not None:
            self._incidents.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._incidents
        if self._runner is not None:
            await self._runner.cleanup()
        if self.export is not None:
            await asyncio.to_thread(self.export.shutdown)

    async def _watch_incidents(self) -> None:
        from .events import BUS

        async for event in BUS.watch_incidents(limit=1, follow=True):
            if event.kind in LIMIT_KINDS:
                self.limit_breach(event.agent, event.release, event.detail or event.kind)

    # -- events ------------------------------------------------------------------------------
    def spans(self, worker: Worker, spans: Sequence[wpb.Span], trace_id: str) -> None:
        if self.export is not None and self.export.recorder is not None:
            self.export.recorder.worker_spans(spans, trace_id, worker.pool.name, worker.id)

    def request_done(self, agent: str, ok: bool, seconds: float, release: str) -> None:
        now = time.monotonic()
        window = self._window[agent]
        window.append((now, ok, seconds))
        self._errors[agent] += not ok
        while window and window[0][0] < now - self.config.alerts.window:
            self._errors[agent] -= not window.popleft()[1]
        rules = self.config.alerts
        if len(window) < rules.min_requests:
            return
        if rules.error_rate is not None:  # O(1) per request: failures are counted as they come and go
            rate = self._errors[agent] / len(window)
            if rate > rules.error_rate:
                self._fire("error_rate", agent, release, f"{rate:.0%} of the last {len(window)} requests failed "
                           f"(threshold {rules.error_rate:.0%} over {rules.window:g} s)")
        if rules.p99 is not None and now - self._p99_checked.get(agent, 0.0) >= 1.0:  # a sort: once a second
            self._p99_checked[agent] = now
            durations = sorted(d for _, _, d in window)
            p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
            if p99 > rules.p99:
                self._fire("latency_p99", agent, release, f"p99 {p99 * 1000:.0f} ms over the last {len(window)} "
                           f"requests (threshold {rules.p99 * 1000:.0f} ms over {rules.window:g} s)")

    def recent_p99(self, agent: str, seconds: float) -> float | None:
        """p99 duration (s) of the agent's requests that ended in the last ``seconds`` (None: none did).

        Read from the alert window, so it looks back at most ``alerts.window``.
        """
        since = time.monotonic() - seconds
        durations = sorted(d for _, _, d in itertools.takewhile(lambda e: e[0] >= since,
                                                                reversed(self._window.get(agent, ()))))
        return durations[min(len(durations) - 1, int(len(durations) * 0.99))] if durations else None

    def limit_breach(self, agent: str, release: str, reason: str) -> None:
        rules = self.config.alerts
        if rules.limit_breaches is None:
            return
        now = time.monotonic()
        events = self._breaches[agent]
        events.append(now)
        while events and events[0] < now - rules.window:
            events.popleft()
        if len(events) >= rules.limit_breaches:
            self._fire("limit_breach", agent, release, f"{len(events)} workers stopped by a resource limit "
                       f"in {rules.window:g} s (last: {reason})")

    def _fire(self, rule: str, agent: str, release: str, reason: str) -> None:
        """Alert once per (rule, agent) per window."""
        now = time.monotonic()
        last = self._fired.get((rule, agent))
        if last is not None and now - last < self.config.alerts.window:
            return
        self._fired[(rule, agent)] = now
        if self.alerts is not None:
            self.alerts.alert(rule, agent, release, reason)


#: Incident kinds that count as limit breaches for the alert rule.
LIMIT_KINDS = frozenset({"memory", "cpu_time", "pids", "timeout"})

#: The running supervisor's telemetry (None in unit tests and before start).
_ACTIVE: list[SupervisorTelemetry | None] = [None]


def active() -> SupervisorTelemetry | None:
    return _ACTIVE[0]


def _record_reply(agent: str, version: str, error_code: str, seconds: float, prompt_tokens: int,
                  completion_tokens: int) -> None:
    attrs = {"agent": agent, "version": version}
    INSTRUMENTS.requests.add(1, attrs)
    INSTRUMENTS.duration.record(seconds, attrs)
    if error_code:
        INSTRUMENTS.errors.add(1, {**attrs, "code": error_code})
    if prompt_tokens:
        INSTRUMENTS.tokens.add(prompt_tokens, {**attrs, "kind": "prompt"})
    if completion_tokens:
        INSTRUMENTS.tokens.add(completion_tokens, {**attrs, "kind": "completion"})


_REPLIES = Batched(_record_reply)
_EXECUTIONS = Batched(lambda agent, version, seconds: INSTRUMENTS.execution.record(
    seconds, {"agent": agent, "version": version}))


def record_reply(agent: str, version: str, release: str, error_code: str, seconds: float,
                 prompt_tokens: int, completion_tokens: int) -> None:
    """Metrics (batched) and alert windows for one finished call."""
    _REPLIES.add(agent, version, error_code, seconds, prompt_tokens, completion_tokens)
    tel = _ACTIVE[0]
    if tel is not None and agent:
        tel.request_done(agent, not error_code, seconds, release)


def recent_p99(agent: str, seconds: float = 10.0) -> float | None:
    """p99 request duration (s) of ``agent`` over the last ``seconds`` (``nfctl top``)."""
    tel = _ACTIVE[0]
    return tel.recent_p99(agent, seconds) if tel is not None else None


def record_execution(agent: str, version: str, duration_ms: float) -> None:
    _EXECUTIONS.add(agent, version, duration_ms / 1000)


def flush_metrics() -> None:
    """Record every batched call (before a scrape)."""
    _REPLIES.flush()
    _EXECUTIONS.flush()


def worker_spawned(agent: str) -> None:
    INSTRUMENTS.spawns.add(1, {"agent": agent})


def worker_exited(pool: AgentPool, worker: Worker) -> None:
    INSTRUMENTS.kills.add(1, {"agent": pool.name, "reason": exit_reason(worker)})


def worker_spans(worker: Worker, spans: Sequence[wpb.Span], trace_id: str) -> None:
    tel = _ACTIVE[0]
    if tel is not None:
        tel.spans(worker, spans, trace_id)


def egress_connected(agent: str, parent: Span | NoSpan | None, method: str, dest: str, address: str,
                     started_ns: int, code: str) -> None:
    """One upstream connection attempt of an agent's egress proxy (DNS + connect), ending now."""
    ended_ns = time.time_ns()
    INSTRUMENTS.egress_connect.record((ended_ns - started_ns) / 1e9,
                                      {"agent": agent, "destination": dest, "outcome": code or "ok"})
    if not isinstance(parent, Span):
        return
    host, _, port = dest.rpartition(":")
    attributes: dict[str, Any] = {"server.address": host.strip("[]"), "server.port": int(port),
                                  "neuroflow.agent": agent, "neuroflow.egress.method": method}
    if address:
        attributes["network.peer.address"] = address
    span = parent.child(f"egress {method} {dest}", SpanKind.CLIENT, attributes)
    span.start_time = started_ns
    if code:
        span.set_status(StatusCode.ERROR, code)
    span.end()


def agent_metric(agent: str, metric: wpb.Metric) -> None:
    if metric.value >= 0:  # a counter only adds up: negative values have no place in it
        INSTRUMENTS.agent_metric.add(metric.value, {"agent": agent, "name": metric.name})
