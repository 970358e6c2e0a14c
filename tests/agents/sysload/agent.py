"""Known system work for the eBPF tests and bench/ebpf.

``{"op": "getppid", "n": N}``  exactly N getppid(2) calls (os.getppid is not cached)
``{"op": "work", "items": K}``  realistic: parse JSON, a file in /tmp, a socket round trip, answer JSON
"""

import hashlib
import json
import os
import socket
import time

from neuroflow.sdk import Agent, AgentError, Context, Request, Response


class SysLoad(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        cmd = request.input if isinstance(request.input, dict) else {}
        op = cmd.get("op")
        if op == "getppid":
            n = int(cmd.get("n", 1000))
            started = time.perf_counter()
            for _ in range(n):
                os.getppid()
            return Response(output={"n": n, "pid": os.getpid(), "seconds": time.perf_counter() - started})
        if op == "work":
            return Response(output=work(cmd))
        raise AgentError("bad_op", f"unknown op {op!r}")

    async def on_health_check(self) -> bool:
        return True


def work(cmd: dict) -> dict:
    count = int(cmd.get("items", 50))
    items = [{"id": i, "text": f"item {i} " * 8, "tags": ["a", "b", str(i % 7)]} for i in range(count)]
    blob = json.dumps(items).encode()
    # Socket I/O: AF_INET is denied in the sandbox (its egress is a Unix socket), so a Unix socket pair.
    left, right = socket.socketpair()
    with left, right:
        left.sendall(blob[:4096])
        right.recv(4096)
    path = f"/tmp/sysload-{os.getpid()}.json"
    with open(path, "wb") as f:
        f.write(blob)
    with open(path, "rb") as f:
        back = json.loads(f.read())
    os.unlink(path)
    digest = hashlib.sha256(blob).hexdigest()
    return {"count": len(back), "sha256": digest, "tags": sorted({t for it in back for t in it["tags"]})}
