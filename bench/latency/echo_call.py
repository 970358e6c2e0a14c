"""The echo agent's own handler, called the same way by the plain and bwrap targets.

``main()`` is the one-shot program run inside a bwrap sandbox: one JSON request
on stdin, one JSON reply on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from neuroflow.sdk import Agent, Request
from neuroflow.sdk.context import Context

REPO = Path(__file__).resolve().parents[2]
ECHO_DIR = REPO / "examples" / "echo"


def load_echo() -> Agent:
    """Import ``Echo`` from ``examples/echo/agent.py`` and make one instance."""
    if str(ECHO_DIR) not in sys.path:
        sys.path.insert(0, str(ECHO_DIR))
    from agent import Echo  # the example agent's module, found through ECHO_DIR

    agent: Agent = Echo()
    return agent


async def answer(agent: Agent, text: Any, request_id: str, worker_id: str) -> dict[str, Any]:
    """Run ``agent.handle`` on one input; return the HTTP API's reply body."""
    context = Context(
        emit=lambda frame: None,
        frame_id=1,
        request_id=request_id,
        session=None,
        agent="echo",
        version="1.0",
        worker_id=worker_id,
        config={},
    )
    response = await agent.handle(Request(input=text, request_id=request_id), context)
    return {"output": response.output, "agent": "echo"}


def main() -> None:
    """Answer the request ``{"input": ..., "request_id": ...}`` read from stdin."""
    payload = json.load(sys.stdin)
    reply = asyncio.run(answer(load_echo(), payload["input"], payload["request_id"], "bwrap"))
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
