"""Reaches the network through ``context.http`` and tries every way around it."""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

from neuroflow.sdk import Agent, Context, Request, Response


class NetUser(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        op = request.input["op"]
        if op == "fetch":
            r = await context.http.get(request.input["url"])
            return Response(output={"status": r.status_code, "body": r.text})
        if op == "fetch_error":
            try:
                await context.http.get(request.input["url"])
            except Exception as exc:  # the httpx error that carries the proxy's reason
                return Response(output={"type": type(exc).__name__, "error": str(exc)})
            return Response(output={"error": None})
        if op == "dns":
            return Response(output=_attempt(lambda: socket.getaddrinfo("example.com", 443)))
        if op == "inet":
            return Response(output=_attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()))
        if op == "inet6":
            return Response(output=_attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()))
        if op == "socket":
            st = os.stat("/run/neuroflow/egress.sock")
            write = _attempt(lambda: open("/run/neuroflow/other", "w").close())
            return Response(output={"sock": stat.S_ISSOCK(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                                    "owner": st.st_uid == os.getuid(), "write": write})
        raise ValueError(f"unknown op {op!r}")


def _attempt(action: Any) -> dict[str, Any]:
    try:
        action()
    except OSError as exc:
        return {"ok": False, "type": type(exc).__name__, "errno": exc.errno, "error": str(exc)}
    return {"ok": True}
