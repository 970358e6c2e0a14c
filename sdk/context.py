"""What an agent can do besides answering: log, measure, report token usage."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from neuroflow.v1 import common_pb2, worker_pb2 as wpb

from .http import EgressHttp
from .tracing import Tracer

if TYPE_CHECKING:
    import httpx

_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


class Context:
    """Per-request handle passed to :meth:`Agent.handle`.

    Everything it records travels back to the supervisor as frames (a worker
    has no network) and is tagged there with the agent, worker, request and
    trace ids.
    """

    __slots__ = (
        "_egress",
        "_emit",
        "_id",
        "_usage",
        "agent",
        "config",
        "request_id",
        "session",
        "tracer",
        "version",
        "worker_id",
    )

    def __init__(
        self,
        *,
        emit: Callable[[wpb.FromWorker], None],
        frame_id: int,
        request_id: str,
        session: str | None,
        agent: str,
        version: str,
        worker_id: str,
        config: Mapping[str, Any],
        tracer: Tracer | None = None,
        egress: EgressHttp | None = None,
    ) -> None:
        self._emit = emit
        self._id = frame_id
        self._usage: list[int | str] = [0, 0, ""]
        #: Session id the client sent, or None.
        self.session = session
        #: Gateway-assigned request id (also in every log line of this request).
        self.request_id = request_id
        self.agent = agent
        self.version = version
        self.worker_id = worker_id
        #: The ``config:`` mapping of the agent's manifest, read-only.
        self.config: Mapping[str, Any] = MappingProxyType(dict(config))
        #: Child spans of this request's trace: ``with context.tracer.start_as_current_span("name"): ...``
        self.tracer = tracer if tracer is not None else Tracer("", "", sampled=False)
        self._egress = egress if egress is not None else EgressHttp(agent, "")

    @property
    def http(self) -> httpx.AsyncClient:
        """This worker's ``httpx.AsyncClient``; every connection goes through the egress proxy.

        Only the destinations in the agent's ``network`` allowlist are reachable;
        a refusal raises an ``httpx`` error whose message starts with the proxy's
        code (``egress_denied: ...``). Without an allowlist this raises
        ``AgentError("egress_disabled", ...)``.
        """
        return self._egress.client()

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """Write one structured log line for this request."""
        if level not in _LEVELS:
            raise ValueError(f"log level must be one of {sorted(_LEVELS)}, got {level!r}")
        record = wpb.LogRecord(
            id=self._id,
            level=level,
            message=str(message),
            fields={k: str(v) for k, v in fields.items()},
            time_unix=time.time(),
            stream="log",
        )
        self._emit(wpb.FromWorker(log=record))

    def emit_metric(self, name: str, value: float, **attributes: Any) -> None:
        """Record one measurement (exported by the supervisor as ``agent.<name>``)."""
        if not name or not all(c.isalnum() or c in "._" for c in name):
            raise ValueError(f"metric name must be letters, digits, '.' or '_', got {name!r}")
        metric = wpb.Metric(
            id=self._id,
            name=name,
            value=float(value),
            attributes={k: str(v) for k, v in attributes.items()},
        )
        self._emit(wpb.FromWorker(metric=metric))

    def report_usage(self, prompt_tokens: int = 0, completion_tokens: int = 0, model: str = "") -> None:
        """Add the tokens one model call consumed; summed into the response's ``usage``."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts cannot be negative")
        self._usage[0] = int(self._usage[0]) + int(prompt_tokens)
        self._usage[1] = int(self._usage[1]) + int(completion_tokens)
        if model:
            self._usage[2] = model

    def _usage_message(self) -> common_pb2.Usage | None:
        prompt, completion, model = self._usage
        if not prompt and not completion and not model:
            return None
        return common_pb2.Usage(
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            total_tokens=int(prompt) + int(completion),
            model=str(model),
        )
