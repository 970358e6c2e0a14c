"""Answers with the code's own version; the hot-update tests rewrite VERSION and MODE."""

from neuroflow.sdk import Agent, Context, Request, Response

VERSION = "v1"
MODE = "ok"  # ok | raise | unhealthy


class Versioned(Agent):
    async def handle(self, request: Request, context: Context) -> Response:
        if MODE == "raise" and request.input != "smoke test":
            raise RuntimeError(f"{VERSION} fails every request")
        return Response(output={"version": VERSION, "input": request.input})

    async def on_health_check(self) -> bool:
        return MODE != "unhealthy"
