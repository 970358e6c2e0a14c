"""HTTP API.

``POST /v1/agents/{name}/invoke``  ``{"input": ..., "session"?: str, "timeout_ms"?: int}``
``POST /v1/route``  ``{"query": str}`` → the router's decision, nothing invoked
``POST /v1/invoke``  ``{"query": str, "input"?: ..., ...}`` → route, then invoke (plus ``"route"``)
``GET  /v1/route/log?limit=N``  the router's low-confidence decisions
``POST /v1/guard/check``  ``{"text": str, "direction": "input"|"output"}`` → the guard's verdict

The guard checks every input before routing/invoking and every output before
it leaves (403 ``guard_blocked`` with the rule; ``redact`` rules rewrite it).
``GET  /v1/agents``  ·  ``GET /healthz`` (the process is up)  ·  ``GET /readyz`` (it can serve)

Every response carries ``X-Request-Id`` (the client's, if it sent a sane one).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from neuroflow.v1 import supervisor_pb2 as pb

from .client import SupervisorClient, SupervisorUnavailable
from .errors import error_body, status_for
from .guarding import Blocked, Guarding, GuardingConfig
from .routing import Routing, RoutingConfig, RoutingUnavailable
from .telemetry import Export, add_metrics_route, guard_blocked, route_fallback, span, supervisor_call, traced

log = logging.getLogger("neuroflow.gateway")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_AGENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_JSON = "application/json"
_BACKSTOP = 5.0  # seconds past the deadline before the gateway stops waiting itself

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class GatewayConfig:
    supervisor: str = "unix:/run/neuroflow/supervisor.sock"
    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = 1024 * 1024
    default_timeout: float = 30.0
    max_timeout: float = 300.0
    access_log: bool = False


CONFIG = web.AppKey("config", GatewayConfig)
CLIENT = web.AppKey("client", SupervisorClient)
ROUTING = web.AppKey("routing", Routing)
GUARDING = web.AppKey("guarding", Guarding)
REQUEST_ID = web.RequestKey("request_id", str)


class ApiError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


def _json_response(body: bytes, status: int, request_id: str) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON,
                        headers={"X-Request-Id": request_id})


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id on every response; every error as JSON with a stable code."""
    rid = request.headers.get("X-Request-Id", "")
    if not _REQUEST_ID_RE.match(rid):
        rid = uuid.uuid4().hex
    request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _json_response(error_body(exc.code, exc.message, rid, **exc.extra), status_for(exc.code), rid)
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "bad_request")
        message = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body is larger than {request.app[CONFIG].max_body} bytes",
        }.get(exc.status, exc.reason)
        response = _json_response(error_body(code, message, rid), exc.status, rid)
    except Exception:  # a bug: report it, answer JSON; cancellation is not an Exception
        log.exception("unhandled error", extra={"request_id": rid, "path": request.path})
        response = _json_response(error_body("internal", "internal error in the gateway", rid), 500, rid)
    response.headers["X-Request-Id"] = rid
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("bad_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", "request body must be a JSON object")
    return body


def _call_options(body: dict[str, Any], config: GatewayConfig) -> tuple[str, int]:
    session = body.get("session")
    if session is not None and not isinstance(session, str):
        raise ApiError("bad_request", '"session" must be a string')
    timeout = body.get("timeout_ms")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or not 0 < timeout <= config.max_timeout * 1000):
        raise ApiError("bad_request", f'"timeout_ms" must be an integer in 1..{int(config.max_timeout * 1000)}')
    return session or "", timeout or 0


async def invoke(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not _AGENT_RE.match(name):
        raise ApiError("agent_not_found", f"no agent named {name!r}")
    body = await _json_body(request)
    if "input" not in body:
        raise ApiError("bad_request", 'request body must be a JSON object with an "input" field')
    session, timeout = _call_options(body, request.app[CONFIG])
    return await _call_agent(request, name, body["input"], session, timeout)


async def _call_agent(request: web.Request, name: str, value: Any, session: str, timeout: int,
                      extra: dict[str, Any] | None = None) -> web.Response:
    """Invoke ``name`` through the supervisor; ``extra`` fields join the JSON answer."""
    rid = request[REQUEST_ID]
    config = request.app[CONFIG]
    client = request.app[CLIENT]
    guarding = request.app[GUARDING]
    user = request.headers.get("X-User")
    payload = _screen(guarding, json.dumps(value, ensure_ascii=False).encode(), "input", name, user)
    call = pb.InvokeCall(agent=name, input_json=payload, session=session, request_id=rid, timeout_ms=timeout)
    wait = (timeout / 1000 if timeout else config.max_timeout) + _BACKSTOP
    started = time.perf_counter()
    try:
        with supervisor_call(config.supervisor, name, call.metadata):
            reply = await client.invoke(call, wait)
    except SupervisorUnavailable as exc:
        raise ApiError("supervisor_unavailable", str(exc)) from None
    except TimeoutError:
        raise ApiError("deadline_exceeded", f"no answer from the supervisor within {wait:g} s") from None
    if reply.HasField("error"):
        code = reply.error.code
        log.warning("request failed", extra={"request_id": rid, "agent": name, "code": code,
                                             "error": reply.error.message})
        return _json_response(error_body(code, reply.error.message, rid, agent=name, **(extra or {})),
                              status_for(code), rid)
    output = _screen(guarding, reply.output_json or b"null", "output", name, user)
    # The agent's output is already JSON: splice it in rather than parse and re-encode it.
    meta = json.dumps({
        "agent": reply.agent, "version": reply.version, "release": reply.release, "request_id": rid,
        "usage": {"prompt_tokens": reply.usage.prompt_tokens,
                  "completion_tokens": reply.usage.completion_tokens,
                  "total_tokens": reply.usage.total_tokens},
        "worker": reply.worker_id,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        **(extra or {}),
    }, ensure_ascii=False).encode()
    return _json_response(b'{"output":' + output + b"," + meta[1:], 200, rid)


def _screen(guarding: Guarding, payload: bytes, direction: str, agent: str | None, user: str | None) -> bytes:
    if guarding.guard is None:  # off: no span either
        return guarding.screen_json(payload, direction, agent, user)
    with span(f"guard {direction}") as current:
        try:
            return guarding.screen_json(payload, direction, agent, user)
        except Blocked as exc:
            guard_blocked(current, exc.rule, direction)
            raise ApiError("guard_blocked", exc.message, rule=exc.rule) from None


async def _decide(request: web.Request, body: dict[str, Any]) -> Any:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError("bad_request", 'request body must have a non-empty string "query"')
    # The query is checked before routing (the input is checked again, for its agent, on invoke).
    _screen(request.app[GUARDING], json.dumps(query, ensure_ascii=False).encode(), "input", None,
            request.headers.get("X-User"))
    with span("route") as current:
        try:
            decision = await request.app[ROUTING].route(query)
        except RoutingUnavailable as exc:
            raise ApiError("router_unavailable", str(exc)) from None
        current.set_attributes({"neuroflow.route.agent": decision.agent or "",
                                "neuroflow.route.confidence": float(decision.confidence),
                                "neuroflow.route.fallback": bool(decision.fallback)})
        if decision.fallback or decision.agent is None:
            route_fallback(decision.agent)
        return decision


async def route(request: web.Request) -> web.Response:
    """Which agent would take this query, and how sure the router is; invokes nothing."""
    decision = await _decide(request, await _json_body(request))
    body = {**decision.to_json(), "request_id": request[REQUEST_ID]}
    return _json_response(json.dumps(body, ensure_ascii=False).encode(), 200, request[REQUEST_ID])


async def route_and_invoke(request: web.Request) -> web.Response:
    """Route ``query``, then invoke the chosen agent with ``input`` (default: the query)."""
    body = await _json_body(request)
    session, timeout = _call_options(body, request.app[CONFIG])
    decision = await _decide(request, body)
    if decision.agent is None:
        raise ApiError("no_agent_fits", "no agent is confident enough for this query and no default agent "
                                        "is configured", route=decision.to_json())
    value = body["input"] if "input" in body else body["query"]
    return await _call_agent(request, decision.agent, value, session, timeout,
                             extra={"route": decision.to_json()})


async def guard_check(request: web.Request) -> web.Response:
    """Try the guard's rules on a text: ``{"text": str, "direction": "input"|"output", "agent"?}``."""
    body = await _json_body(request)
    text, direction = body.get("text"), body.get("direction", "input")
    if not isinstance(text, str) or direction not in ("input", "output"):
        raise ApiError("bad_request", 'expected {"text": str, "direction": "input" | "output"}')
    guarding = request.app[GUARDING]
    if guarding.guard is None:
        raise ApiError("bad_request", "the guard is off (--no-guard)")
    verdict = guarding.check(text, direction, body.get("agent"), request.headers.get("X-User"))
    return _json_response(json.dumps(verdict.to_json(), ensure_ascii=False).encode(), 200, request[REQUEST_ID])


async def route_log(request: web.Request) -> web.Response:
    """The router's recent low-confidence decisions (the bad-case log)."""
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), 1000)
    except ValueError:
        raise ApiError("bad_request", "limit must be an integer") from None
    cases = request.app[ROUTING].bad_cases(limit)
    return _json_response(json.dumps({"cases": cases}, ensure_ascii=False).encode(), 200, request[REQUEST_ID])


async def list_agents(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    rid = request[REQUEST_ID]
    try:
        reply = await client.list_agents()
    except SupervisorUnavailable as exc:
        raise ApiError("supervisor_unavailable", str(exc)) from None
    agents = [{
        "name": a.name, "version": a.version, "description": a.description,
        "skills": list(a.skills), "examples": list(a.examples), "state": a.state,
        "detail": a.detail, "release": a.release, "workers": a.workers,
    } for a in reply.agents]
    return _json_response(json.dumps({"agents": agents}, ensure_ascii=False).encode(), 200, rid)


async def healthz(request: web.Request) -> web.Response:
    return _json_response(b'{"status":"ok"}', 200, request[REQUEST_ID])


async def readyz(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    rid = request[REQUEST_ID]
    if not client.connected.is_set():
        raise ApiError("supervisor_unavailable", f"not connected to the supervisor at {client.target}")
    try:
        status = await client.status()
    except SupervisorUnavailable as exc:
        raise ApiError("supervisor_unavailable", str(exc)) from None
    ready = [a.name for a in status.agents if a.state == "ready"]
    body = {"status": "ready", "agents_ready": ready, "supervisor_pid": status.pid}
    return _json_response(json.dumps(body).encode(), 200, rid)


def make_app(config: GatewayConfig, client: SupervisorClient, routing: Routing | None = None,
             guarding: Guarding | None = None, export: Export | None = None) -> web.Application:
    app = web.Application(client_max_size=config.max_body, middlewares=[traced, request_context])
    if export is not None:
        add_metrics_route(app, export)
    app[CONFIG] = config
    app[CLIENT] = client
    app[ROUTING] = routing or Routing(RoutingConfig(enabled=False), client)
    app[GUARDING] = guarding or Guarding(GuardingConfig(enabled=False))
    app.router.add_post("/v1/agents/{name}/invoke", invoke)
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/v1/route", route)
    app.router.add_post("/v1/invoke", route_and_invoke)
    app.router.add_get("/v1/route/log", route_log)
    app.router.add_post("/v1/guard/check", guard_check)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await app[GUARDING].start()
        await client.start()
        await app[ROUTING].start()
        yield
        await app[ROUTING].close()
        await client.close()
        await app[GUARDING].close()

    app.cleanup_ctx.append(lifecycle)
    return app
