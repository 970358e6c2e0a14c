"""The gateway's use of the guard layer (neuroflow.guard), both ways.

Inputs are checked before routing or invoking, outputs before they leave.
The text checked is the JSON the agent receives or returned, so offsets in
findings refer to that. A ``redact`` verdict replaces it with the redacted
JSON (kept only if it still parses; otherwise the request is blocked rather
than sent on corrupted). The rules file is re-read when it changes (a bad new
file keeps the old rules and logs why); alerts go to the rules file's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("neuroflow.gateway.guard")


@dataclass(frozen=True)
class GuardingConfig:
    enabled: bool = True
    rules: Path | None = None  # None: the guard's shipped default rules
    reload_every: float = 2.0


class Blocked(Exception):
    def __init__(self, rule: str | None, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


class Guarding:
    def __init__(self, config: GuardingConfig) -> None:
        self.config = config
        self.guard: Any = None
        self._sink: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.config.enabled:
            return
        from neuroflow.guard import AlertSink, Guard

        self.guard = Guard.load(self.config.rules)  # a bad file fails the start, naming file and rule
        self._sink = await self._stack.enter_async_context(AlertSink.from_settings(self.guard.rules.alerts))
        self._task = asyncio.create_task(self._reload())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    async def _reload(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_every)
            self.guard.reload_if_changed()  # logs and keeps the old rules on a bad file

    def check(self, text: str, direction: str, agent: str | None, user: str | None) -> Any:
        verdict = self.guard.check(text, direction, agent=agent, user=user)
        for alert in verdict.alerts:
            self._sink.submit(alert)
        return verdict

    def screen_json(self, payload: bytes, direction: str, agent: str | None, user: str | None) -> bytes:
        """The payload to pass on (possibly redacted); raises :class:`Blocked`."""
        if self.guard is None:
            return payload
        text = payload.decode()
        verdict = self.check(text, direction, agent, user)
        if verdict.blocked:
            raise Blocked(verdict.rule, verdict.message or f"blocked by guard rule {verdict.rule!r}")
        if verdict.redacted == text:
            return payload
        try:
            json.loads(verdict.redacted)
        except ValueError:
            raise Blocked(verdict.rule, "the text needed redaction that would have corrupted its JSON") from None
        return verdict.redacted.encode()
