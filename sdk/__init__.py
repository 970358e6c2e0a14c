"""NeuroFlow agent SDK: what an agent's code imports.

Runs inside the sandbox, so it depends on nothing but the protocol code,
protobuf and PyYAML.

    from neuroflow.sdk import Agent, Request, Response, Context

    class Echo(Agent):
        async def handle(self, request: Request, context: Context) -> Response:
            return Response(output=request.input)
"""

__version__ = "0.1.0"

from .agent import Agent
from .context import Context
from .types import AgentError, Request, Response, Usage

__all__ = ["Agent", "AgentError", "Context", "Request", "Response", "Usage", "__version__"]
