"""The gateway's use of the semantic router (neuroflow.router).

The model is loaded off the event loop at start (the gateway answers
``router_unavailable`` until then); the agents' skills and examples come from
the supervisor over gRPC and are re-read every few seconds, the index being
rebuilt off to the side when they changed. Every ``route()`` runs in a
one-thread executor: the model uses one onnxruntime thread, and the event
loop never waits for an embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import SupervisorClient, SupervisorUnavailable

log = logging.getLogger("neuroflow.gateway.routing")


@dataclass(frozen=True)
class RoutingConfig:
    enabled: bool = True
    model: str = "e5-small"
    model_cache_dir: Path | None = None
    default_agent: str | None = None
    threshold: float | None = None
    bad_case_log: Path | None = None
    refresh: float = 5.0


class RoutingUnavailable(Exception):
    """The router is off, still loading, or its model could not be loaded."""


class Routing:
    def __init__(self, config: RoutingConfig, client: SupervisorClient) -> None:
        self.config = config
        self.client = client
        self.router: Any = None
        self.problem = "the router is off (--no-router)" if not config.enabled else "the router is loading"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="router")
        self._task: asyncio.Task[None] | None = None
        self._agents_key: tuple[Any, ...] = ()

    async def start(self) -> None:
        if self.config.enabled:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.router = await loop.run_in_executor(self._executor, self._load)
        except Exception as exc:  # a missing model must not take the gateway down
            self.problem = f"cannot load the routing model: {exc}"
            log.error(self.problem)
            return
        while True:
            # Without the supervisor the invoke path reports the error; routing keeps its index.
            with contextlib.suppress(SupervisorUnavailable):
                await self._refresh()
            await asyncio.sleep(self.config.refresh)

    def _load(self) -> Any:
        from neuroflow.router import Router, RouterConfig

        kwargs: dict[str, Any] = {"model": self.config.model, "default_agent": self.config.default_agent,
                                  "bad_case_log": self.config.bad_case_log,
                                  "model_cache_dir": self.config.model_cache_dir}
        if self.config.threshold is not None:
            kwargs["threshold"] = self.config.threshold
        return Router(RouterConfig(**kwargs))

    async def _refresh(self) -> None:
        from neuroflow.router import AgentProfile

        reply = await self.client.list_agents()
        agents = [a for a in reply.agents if a.state in ("ready", "starting") and (a.skills or a.examples)]
        key = tuple((a.name, a.release, tuple(a.skills), tuple(a.examples), a.description) for a in agents)
        if key == self._agents_key:
            return
        profiles = [AgentProfile(name=a.name, description=a.description, skills=tuple(a.skills),
                                 examples=tuple(a.examples)) for a in agents]
        await asyncio.get_running_loop().run_in_executor(self._executor, self.router.update_agents, profiles)
        self._agents_key = key
        self.problem = ""
        log.info("routing index updated", extra={"agents": [a.name for a in agents]})

    async def route(self, query: str) -> Any:
        if self.router is None or self.problem:
            raise RoutingUnavailable(self.problem or "the router has no agents yet")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.router.route, query)

    def bad_cases(self, limit: int) -> list[dict[str, Any]]:
        from neuroflow.router import read_bad_cases

        if self.config.bad_case_log is None:
            return []
        return list(read_bad_cases(self.config.bad_case_log, limit))
