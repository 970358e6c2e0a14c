"""Stable error codes → HTTP statuses, and the JSON error body.

Every failed request answers ``{"error": {"code": ..., "message": ...},
"request_id": ...}``. Codes an agent raises itself with ``AgentError`` (not
in this table) answer 422.
"""

from __future__ import annotations

import json

STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "agent_not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "guard_blocked": 403,
    "no_agent_fits": 422,
    "agent_error": 500,
    "internal": 500,
    "worker_crashed": 502,
    "resource_exhausted": 502,
    "output_too_large": 502,
    "cancelled": 502,
    "agent_unavailable": 503,
    "supervisor_unavailable": 503,
    "overloaded": 503,
    "shutting_down": 503,
    "router_unavailable": 503,
    "deadline_exceeded": 504,
}

#: What an agent's own AgentError codes answer with.
AGENT_REFUSED = 422


def status_for(code: str) -> int:
    return STATUS.get(code, AGENT_REFUSED)


def error_body(code: str, message: str, request_id: str, **extra: object) -> bytes:
    body = {"error": {"code": code, "message": message}, "request_id": request_id, **extra}
    return json.dumps(body, ensure_ascii=False).encode()
