"""The "plain" target: the echo handler in one unsandboxed aiohttp process on uvloop.

Serves ``POST /v1/agents/echo/invoke`` with the NeuroFlow reply shape
``{"output": ..., "agent": "echo"}``. Listens on an ephemeral port of
127.0.0.1, prints ``PORT <n>`` on stdout once listening, and stops cleanly on
SIGTERM or SIGINT. ``bwrap_server`` reuses :func:`make_app` and :func:`serve`.

    python -m bench.latency.plain_server      # from the repository root
"""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from aiohttp import web

from bench.latency.echo_call import answer, load_echo

#: Answers one request: (input, request id) -> reply body.
Answer = Callable[[Any, str], Awaitable[dict[str, Any]]]


def make_app(answer_one: Answer) -> web.Application:
    """An app with the one route the benchmark drives."""

    async def invoke(request: web.Request) -> web.Response:
        if request.match_info["agent"] != "echo":
            raise web.HTTPNotFound(text="only the echo agent is served here")
        try:
            payload = await request.json()
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from exc
        if not isinstance(payload, dict) or "input" not in payload:
            raise web.HTTPBadRequest(text='body must be a JSON object with an "input" key')
        return web.json_response(await answer_one(payload["input"], uuid.uuid4().hex))

    app = web.Application()
    app.router.add_post("/v1/agents/{agent}/invoke", invoke)
    return app


async def serve(app: web.Application) -> None:
    """Serve ``app`` on 127.0.0.1:<ephemeral> until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        # A short grace: on SIGTERM, in-flight requests get 2 s, not aiohttp's default 60 s.
        await web.SockSite(runner, sock, backlog=1024, shutdown_timeout=2.0).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        sock.close()


def main() -> None:
    agent = load_echo()

    async def answer_one(text: Any, request_id: str) -> dict[str, Any]:
        return await answer(agent, text, request_id, "plain")

    uvloop.run(serve(make_app(answer_one)))


if __name__ == "__main__":
    main()
