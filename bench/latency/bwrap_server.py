"""The "bwrap" target: a cold sandbox per request, the usual way to isolate agent code.

For every request the handler starts ``bwrap --unshare-all ... python -c
<program>``, where the program runs the same echo handler on the JSON it reads
from stdin (:func:`bench.latency.echo_call.main`) and prints the reply, which
the server returns. This pays an interpreter start, imports and namespace set-up
on every request (DESIGN.md measured ~41 ms), which is what NeuroFlow's warm,
forked workers avoid. The interpreter is this process's ``sys.executable``
unresolved: the venv's own path, never a pyenv shim (a shim adds ~60 ms), and
not its symlink target, which would lose the venv's site-packages.

Same route, reply shape, port handshake and shutdown as ``plain_server``.

    python -m bench.latency.bwrap_server      # from the repository root
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvloop
from aiohttp import web

from bench.latency.echo_call import REPO
from bench.latency.plain_server import make_app, serve

CHILD_PROGRAM = (
    f"import sys; sys.path.insert(0, {str(REPO)!r}); "
    "from bench.latency.echo_call import main; main()"
)
CHILD_TIMEOUT_S = 30.0


def bwrap_argv(python: str) -> list[str]:
    """The sandbox command line: everything unshared, read-only root, fresh /tmp."""
    return [
        "bwrap", "--unshare-all", "--die-with-parent",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        python, "-c", CHILD_PROGRAM,
    ]  # fmt: skip


async def answer_in_sandbox(argv: list[str], text: Any, request_id: str) -> dict[str, Any]:
    """Run one request in a fresh sandbox; a failure becomes an HTTP 5xx."""
    request = json.dumps({"input": text, "request_id": request_id}).encode()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CHILD_TIMEOUT_S):
            out, err = await proc.communicate(request)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise web.HTTPGatewayTimeout(text=f"sandbox took over {CHILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        raise web.HTTPInternalServerError(text=f"bwrap exited {proc.returncode}: {tail}")
    reply: dict[str, Any] = json.loads(out)
    return reply


def main() -> None:
    argv = bwrap_argv(sys.executable)

    async def answer_one(text: Any, request_id: str) -> dict[str, Any]:
        return await answer_in_sandbox(argv, text, request_id)

    uvloop.run(serve(make_app(answer_one)))


if __name__ == "__main__":
    main()
