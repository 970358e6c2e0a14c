"""A tiny HTTP client for tests (the product's own dependencies only)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit


def request(url: str, method: str = "GET", body: Any = None, raw: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, Any, dict[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, parts.path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload.decode(errors="replace")
        return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def invoke(base: str, agent: str, value: Any, **extra: Any) -> tuple[int, Any]:
    status, body, _ = request(f"{base}/v1/agents/{agent}/invoke", "POST", {"input": value, **extra})
    return status, body
