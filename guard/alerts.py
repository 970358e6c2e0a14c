"""Alert delivery to a webhook: queued, deduplicated, rate-limited, retried with backoff.

The guard itself is synchronous; it returns :class:`~.verdict.Alert` values
(and writes a structured log line for each). The gateway hands them to an
:class:`AlertSink`, which posts them from a background task::

    async with AlertSink.from_settings(guard.rules.alerts) as sink:
        ...
        for alert in verdict.alerts:
            sink.submit(alert)        # never blocks; safe from any thread

An alert carries the rule name and a redacted excerpt, never raw PII (see
:func:`~.engine.excerpt`). The same rule with the same excerpt within
``dedup_seconds`` is sent once; at most ``rate_per_minute`` alerts are sent
per rolling minute; the rest are counted in :attr:`AlertSink.stats`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp

from .rules import AlertSettings
from .verdict import Alert

log = logging.getLogger("neuroflow.guard.alerts")


class AlertSink:
    """Posts alerts as JSON to ``webhook``; a sink without a webhook only counts them."""

    def __init__(self, webhook: str | None, *, rate_per_minute: float = 30, dedup_seconds: float = 300,
                 retries: int = 3, backoff_seconds: float = 0.5, timeout_seconds: float = 5.0,
                 queue_size: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.webhook = webhook
        self.rate_per_minute = rate_per_minute
        self.dedup_seconds = dedup_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._sent_times: collections.deque[float] = collections.deque()
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group: asyncio.TaskGroup | None = None
        self._session: aiohttp.ClientSession | None = None
        self.stats: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_settings(cls, settings: AlertSettings, **kw: Any) -> AlertSink:
        """A sink configured by a rules file's ``settings.alerts``."""
        args: dict[str, Any] = {"rate_per_minute": settings.rate_per_minute, "dedup_seconds": settings.dedup_seconds,
                                "retries": int(settings.retries), "timeout_seconds": settings.timeout_seconds}
        return cls(settings.webhook, **{**args, **kw})

    # -- submission (any thread) ---------------------------------------------------------------------------

    def _admit(self, alert: Alert) -> str:
        now = self._clock()
        with self._lock:
            key = (alert.rule, alert.excerpt)
            last = self._seen.get(key)
            if last is not None and now - last < self.dedup_seconds:
                return "duplicate"
            while self._sent_times and now - self._sent_times[0] >= 60.0:
                self._sent_times.popleft()
            if len(self._sent_times) >= self.rate_per_minute:
                return "rate_limited"
            self._seen[key] = now
            self._sent_times.append(now)
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.dedup_seconds}
            return "queued"

    def submit(self, alert: Alert) -> str:
        """Queue ``alert`` for the webhook. Returns what happened to it:
        ``queued``, ``duplicate``, ``rate_limited``, ``dropped`` (queue full or sink not running) or ``disabled``.
        """
        if self.webhook is None:
            self.stats["disabled"] += 1
            return "disabled"
        outcome = self._admit(alert)
        if outcome == "queued":
            loop = self._loop
            if loop is None or loop.is_closed():
                outcome = "dropped"
            else:
                try:
                    running = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is loop:
                    outcome = self._put(alert)
                else:
                    loop.call_soon_threadsafe(self._put, alert)
        self.stats[outcome] += 1
        return outcome

    def _put(self, alert: Alert) -> str:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            log.warning("alert queue full, dropping alert", extra={"rule": alert.rule})
            return "dropped"
        return "queued"

    # -- delivery (the sink's task) ------------------------------------------------------------------------

    async def __aenter__(self) -> AlertSink:
        self._loop = asyncio.get_running_loop()
        if self.webhook is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
            self._group = asyncio.TaskGroup()
            await self._group.__aenter__()
            self._group.create_task(self._run(), name="guard-alert-sink")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(exc_type, exc, tb)

    async def close(self, exc_type: type[BaseException] | None = None, exc: BaseException | None = None,
                    tb: TracebackType | None = None, drain_seconds: float = 2.0) -> None:
        """Deliver what is queued (for at most ``drain_seconds``), then stop."""
        if self._group is None:
            return
        try:
            async with asyncio.timeout(drain_seconds):
                await self._queue.join()
        except TimeoutError:
            log.warning("alert sink closed with %d alerts undelivered", self._queue.qsize())
        self._queue.put_nowait(_STOP)  # type: ignore[arg-type]
        group, self._group = self._group, None
        try:
            await group.__aexit__(exc_type, exc, tb)
        finally:
            if self._session is not None:
                await self._session.close()
            self._loop = None

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                if alert is _STOP:
                    return
                await self._deliver(alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        assert self._session is not None and self.webhook is not None
        body = {"source": "neuroflow.guard", "ts": datetime.now(UTC).isoformat(), "alert": alert.to_json()}
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                async with self._session.post(self.webhook, json=body) as resp:
                    if resp.status < 300:
                        self.stats["sent"] += 1
                        return
                    why = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in (408, 429):
                        break  # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            self.stats["retries"] += 1 if attempt < self.retries else 0
        self.stats["failed"] += 1
        log.warning("alert webhook failed: %s", why, extra={"rule": alert.rule, "webhook": self.webhook})


_STOP = object()
