"""Alerts on failed updates and rollbacks: a log line always, a webhook if configured."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

log = logging.getLogger("neuroflow.alerts")


class Alerts:
    """Posts ``{"event", "agent", "release", "reason", "ts"}`` to a webhook, retried."""

    def __init__(self, webhook: str | None, attempts: int = 3, timeout: float = 5.0) -> None:
        self.webhook = webhook
        self.attempts = attempts
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[dict[str, Any]] = []

    def alert(self, event: str, agent: str, release: str, reason: str) -> None:
        body = {"event": event, "agent": agent, "release": release, "reason": reason, "ts": time.time()}
        log.warning("alert: %s %s: %s", event, agent, reason, extra={"alert": event, "agent": agent,
                                                                      "release": release})
        self.sent.append(body)
        if self.webhook:
            task = asyncio.ensure_future(self._post(body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        assert self.webhook is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(self.attempts):
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session, \
                        session.post(self.webhook, json=body) as resp:
                    if resp.status < 300:
                        return
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
            await asyncio.sleep(0.5 * 2**attempt)
        log.error("alert webhook failed after %d attempts: %s", self.attempts, why,
                  extra={"webhook": self.webhook})

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout)
