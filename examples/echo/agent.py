"""The smallest useful agent: answers with its input."""

from neuroflow.sdk import Agent, Context, Request, Response


class Echo(Agent):
    metadata = {"name": "echo", "version": "1.0", "skills": ["repeat the input back"]}

    async def handle(self, request: Request, context: Context) -> Response:
        return Response(output=request.input)
