"""The router: configuration, decisions, the cache, and atomic index swaps."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuroflow.router.badcases import BadCaseLog
from neuroflow.router.embedding import DEFAULT_MODEL, Embedder, load_embedder
from neuroflow.router.errors import RouterError
from neuroflow.router.index import AgentIndex, Reference
from neuroflow.router.lexical import clean
from neuroflow.router.negatives import NEGATIVES
from neuroflow.router.profiles import AgentProfile

#: Calibrated default (bench/router): confidence is P(right agent), fitted per index build.
DEFAULT_THRESHOLD = 0.5
MAX_QUERY_CHARS = 4000


@dataclass(frozen=True)
class RouterConfig:
    """How a Router is built; one object, built once and passed down.

    model: ``e5-small`` (default), ``minilm``, or a path (see neuroflow.router.embedding).
    default_agent: where low-confidence requests go; None means "no agent fits".
    threshold: minimum calibrated confidence to trust the top agent.
    cache_size: decisions kept for identical (normalised) requests; 0 disables the cache.
    bad_case_log: JSONL file that receives every low-confidence decision, or None.
    negatives: generic off-topic requests for calibration (default: neuroflow.router.negatives).
    model_cache_dir: where the e5-small model is built on first use (default: $NEUROFLOW_MODEL_CACHE,
        else ~/.cache/neuroflow/models).
    candidates: how many ranked agents a decision lists.
    """

    model: str = DEFAULT_MODEL
    default_agent: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    cache_size: int = 1024
    bad_case_log: Path | None = None
    negatives: tuple[str, ...] | None = None
    model_cache_dir: Path | None = None
    candidates: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise RouterError(f"threshold must be within [0, 1], got {self.threshold}")
        if self.cache_size < 0 or self.candidates < 1:
            raise RouterError("cache_size must be >= 0 and candidates >= 1")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a request goes. ``agent`` is None only when confidence is low and there is no default agent."""

    agent: str | None
    confidence: float
    fallback: bool
    candidates: list[tuple[str, float]]

    def to_json(self) -> dict[str, Any]:
        """``{"agent", "confidence", "fallback", "candidates": [{"agent", "score"}, ...]}``."""
        return {"agent": self.agent, "confidence": self.confidence, "fallback": self.fallback,
                "candidates": [{"agent": a, "score": s} for a, s in self.candidates]}


class _LRU:
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[int, str], RouteDecision] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str]) -> RouteDecision | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[int, str], value: RouteDecision) -> None:
        if self._size == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class Router:
    """Routes requests to agents. Thread-safe; ``route`` never waits for ``update_agents``.

    Building one loads the embedding model and embeds the reference set
    (a few seconds on first use of e5-small, which builds the model).
    """

    def __init__(self, config: RouterConfig | None = None, embedder: Embedder | None = None) -> None:
        self.config = config or RouterConfig()
        self.embedder = embedder or load_embedder(self.config.model, self.config.model_cache_dir)
        self._reference = Reference.build(self.config.negatives or NEGATIVES, self.embedder)
        self._snapshot: tuple[int, AgentIndex] = (0, AgentIndex([], self.embedder, self._reference))
        self._update_lock = threading.Lock()
        self._cache = _LRU(self.config.cache_size)
        self._log = BadCaseLog(self.config.bad_case_log) if self.config.bad_case_log else None

    @property
    def agents(self) -> list[str]:
        """Names of the agents in the current index."""
        return list(self._snapshot[1].names)

    def update_agents(self, profiles: Iterable[AgentProfile]) -> None:
        """Replace the agent set: build a new index off to the side, then swap it in atomically.

        Concurrent calls are serialised (the last one wins); ``route`` keeps
        using the previous index until the swap.
        """
        profiles = list(profiles)
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise RouterError(f"duplicate agent names: {sorted({n for n in names if names.count(n) > 1})}")
        with self._update_lock:
            index = AgentIndex(profiles, self.embedder, self._reference)
            self._snapshot = (self._snapshot[0] + 1, index)  # one reference assignment: atomic
            self._cache.clear()

    def route(self, query: str) -> RouteDecision:
        """Decide which agent should answer ``query``. Raises RouterError for an empty query."""
        text = clean(query[:MAX_QUERY_CHARS])
        if not text:
            raise RouterError("query is empty")
        generation, index = self._snapshot
        key = (generation, text.casefold())  # requests differing only in case share a decision
        decision = self._cache.get(key)
        if decision is None:
            scored = index.score(self.embedder.embed([text])[0], text, self.config.candidates)
            low = scored.confidence < self.config.threshold or not scored.ranked
            agent = self.config.default_agent if low else scored.ranked[0][0]
            decision = RouteDecision(agent=agent, confidence=scored.confidence, fallback=low, candidates=scored.ranked)
            self._cache.put(key, decision)
        if decision.fallback and self._log is not None:
            self._log.append({"query": query[:MAX_QUERY_CHARS], "chosen": decision.agent,
                              "confidence": decision.confidence, "threshold": self.config.threshold,
                              "model": self.embedder.name,
                              "candidates": [{"agent": a, "score": s} for a, s in decision.candidates]})
        return RouteDecision(decision.agent, decision.confidence, decision.fallback, list(decision.candidates))

    def close(self) -> None:
        """Close the bad-case log."""
        if self._log is not None:
            self._log.close()
