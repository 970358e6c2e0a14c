"""The base class every NeuroFlow agent derives from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .context import Context
    from .types import Request, Response


class Agent:
    """Subclass this and implement :meth:`handle`.

    One instance serves many requests, possibly several at once (each
    ``handle`` call is an asyncio task), so keep per-request state in locals.
    The instance is created once per agent release, before workers fork, so
    expensive set-up in ``__init__`` is paid once and shared by all workers.

    ``metadata`` is informative (name, version, skills); the manifest
    ``agent.yaml`` is authoritative for routing and limits.
    """

    metadata: ClassVar[dict[str, Any]] = {}

    async def handle(self, request: Request, context: Context) -> Response:
        """Answer one request. Raise :class:`~neuroflow.sdk.AgentError` to refuse it."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    async def on_health_check(self) -> bool:
        """Return False (or raise) when this worker should be replaced."""
        return True
