"""Domain errors, each with a stable machine-readable code.

Raised inside the supervisor; turned into ``neuroflow.v1.Error`` messages only
at the gRPC boundary (``service.py``). The gateway maps the same codes to HTTP
statuses. Codes never change meaning; new ones may be added.
"""

from __future__ import annotations


class NeuroflowError(Exception):
    """Base class: ``code`` is stable, the message is a sentence for humans."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(NeuroflowError):
    code = "bad_request"


class AgentNotFound(NeuroflowError):
    code = "agent_not_found"


class AgentUnavailable(NeuroflowError):
    """The agent exists but cannot serve: failed to load, or its sandbox is down."""

    code = "agent_unavailable"


class Overloaded(NeuroflowError):
    code = "overloaded"


class DeadlineExceeded(NeuroflowError):
    code = "deadline_exceeded"


class WorkerCrashed(NeuroflowError):
    code = "worker_crashed"


class ResourceExhausted(NeuroflowError):
    """The worker hit one of its limits (memory, CPU time, pids) and was killed."""

    code = "resource_exhausted"


class ShuttingDown(NeuroflowError):
    code = "shutting_down"

