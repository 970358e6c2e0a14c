"""Structured JSON log lines on stderr (journald keeps them under systemd)."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points

#: The trace id of the request being handled when it is not sampled: no span is
#: recorded for it, but its log lines and response still name its trace.
UNSAMPLED_TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("neuroflow_unsampled_trace", default="")

#: A log redactor: text in, the same text with what must not be logged masked.
Redactor = Callable[[str], str]
REDACTORS = "neuroflow.log_redactors"

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _current_trace_id() -> str:
    from .otel import current_trace_id  # otel imports this module

    return current_trace_id()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if "trace_id" not in line and (trace_id := _current_trace_id()):  # inside a request: its trace
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup(level: str, component: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("neuroflow").info("starting", extra={"component": component})


@functools.cache
def load_redactor(name: str | None) -> Redactor | None:
    """The redactor installed as entry point ``name`` of ``neuroflow.log_redactors`` (None: none).

    Raises :class:`LookupError` naming the installed ones if there is no such redactor.
    """
    if name is None:
        return None
    found = entry_points(group=REDACTORS, name=name)
    if not found:
        installed = ", ".join(sorted(ep.name for ep in entry_points(group=REDACTORS))) or "none"
        raise LookupError(f"log_redactor: no redactor named {name!r} is installed (installed: {installed})")
    return next(iter(found)).load()


def redact_all(redact: Redactor, message: str, fields: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``message`` and the values of ``fields`` redacted; a redactor that fails logs nothing raw."""
    try:
        return redact(message), {key: redact(value) for key, value in fields.items()}
    except Exception as exc:  # a bug in a plug-in must not leak the line, nor stop the worker's logs
        return f"<log line withheld: the redactor failed ({type(exc).__name__})>", {}
