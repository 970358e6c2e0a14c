"""The values an agent receives and returns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """One request to an agent.

    ``input`` is the JSON value the client sent (a string, a number, an object, ...).
    """

    input: Any
    request_id: str
    session: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Monotonic-clock time (``time.monotonic()``) after which the supervisor
    #: gives up on this request; None when unbounded.
    deadline: float | None = None

    def time_left(self) -> float | None:
        """Seconds until the deadline, or None if the request has none."""
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage, summed over every model call made for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Response:
    """An agent's answer: any JSON-serialisable ``output``."""

    output: Any = None


#: Codes the platform itself answers with; an agent cannot raise them.
RESERVED_CODES = frozenset({
    "bad_request", "not_found", "agent_not_found", "method_not_allowed", "payload_too_large",
    "agent_error", "internal", "worker_crashed", "resource_exhausted", "output_too_large",
    "cancelled", "agent_unavailable", "supervisor_unavailable", "overloaded", "shutting_down",
    "deadline_exceeded", "no_agent_fits", "router_unavailable", "guard_blocked",
})


class AgentError(Exception):
    """Raise from ``handle`` to fail a request with your own stable error code.

    The client receives ``{"error": {"code": code, "message": message}}`` with
    HTTP status 422: the request was understood but the agent refused it
    (bad arithmetic, missing field, ...). Any other exception is reported as
    ``agent_error`` with status 500 and the worker keeps serving.
    """

    def __init__(self, code: str, message: str) -> None:
        if not code or not code.replace("_", "").isalnum():
            raise ValueError(f"error code must be a snake_case word, got {code!r}")
        if code in RESERVED_CODES:
            raise ValueError(f"error code {code!r} is reserved for NeuroFlow itself")
        super().__init__(message)
        self.code = code
        self.message = message
