"""Child spans for agents, recorded inside the sandbox without OpenTelemetry.

A worker has no network, and importing the OpenTelemetry SDK would cost every
worker memory and start-up time, so the harness records spans itself: each
finished span becomes a ``neuroflow.v1.Span`` message and the request's spans
travel back to the supervisor inside its ``InvokeResult``. The supervisor turns them into real OpenTelemetry spans with
the same ids and times and exports them with its own.

The API is the small part of OpenTelemetry's that agents need::

    with context.tracer.start_as_current_span("search", attributes={"k": 3}) as span:
        hits = await search(query)
        span.set_attribute("hits", len(hits))

Spans nest: a span started inside another is its child; the outermost ones are
children of the worker's ``worker handle`` span.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from neuroflow.v1 import worker_pb2 as wpb

#: Spans one request may record; later ones are dropped (and counted on the root span).
MAX_SPANS = 512
#: Attributes per span, and characters per string attribute.
MAX_ATTRIBUTES = 64
MAX_STRING = 4096

AttributeValue = str | bool | int | float

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("neuroflow_span", default=None)


def _new_span_id() -> str:
    # Not the random module: every worker is forked from one zygote and would
    # share its generator's state, so siblings would draw the same ids.
    return os.urandom(8).hex()


def _value(value: Any) -> wpb.AttributeValue:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return wpb.AttributeValue(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return wpb.AttributeValue(int_value=value)
    if isinstance(value, float):
        return wpb.AttributeValue(double_value=value)
    return wpb.AttributeValue(string_value=str(value)[:MAX_STRING])


class Span:
    """One timed operation. Use it through :meth:`Tracer.start_as_current_span`."""

    __slots__ = ("_message", "_tracer", "name", "parent_span_id", "span_id", "trace_id")

    def __init__(self, tracer: Tracer, name: str, parent_span_id: str,
                 attributes: Mapping[str, Any] | None) -> None:
        self._tracer = tracer
        self.name = name
        self.trace_id = tracer.trace_id
        self.span_id = _new_span_id()
        self.parent_span_id = parent_span_id
        self._message = wpb.Span(trace_id=self.trace_id, span_id=self.span_id, parent_span_id=parent_span_id,
                                 name=str(name)[:256], start_unix_nano=time.time_ns())
        if attributes:
            self.set_attributes(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Attach ``key=value`` (str, bool, int or float; anything else is stored as its str())."""
        attrs = self._message.attributes
        if key in attrs or len(attrs) < MAX_ATTRIBUTES:
            attrs[str(key)].CopyFrom(_value(value))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, ok: bool, message: str = "") -> None:
        """Mark the span failed (``ok=False``) with a short description, or clear that."""
        self._message.error = not ok
        self._message.status_message = "" if ok else str(message)[:MAX_STRING]

    def record_exception(self, exc: BaseException) -> None:
        """Fail the span with the exception's type and message."""
        self.set_status(False, f"{type(exc).__name__}: {exc}")
        self.set_attribute("exception.type", type(exc).__name__)

    def end(self) -> None:
        if not self._message.end_unix_nano:
            self._message.end_unix_nano = time.time_ns()
            self._tracer._finished(self._message)


class Tracer:
    """Per-request tracer (``context.tracer``); records nothing when the request is not traced."""

    __slots__ = ("dropped", "parent_span_id", "recording", "spans", "trace_id")

    def __init__(self, trace_id: str, parent_span_id: str, sampled: bool = True) -> None:
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.recording = bool(trace_id) and sampled
        self.spans: list[wpb.Span] = []
        self.dropped = 0

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        """Time the ``with`` block as a child of the current span; an exception fails the span."""
        if not self.recording:  # not sampled: nothing to time, nothing to send
            yield _NOOP
            return
        parent = _current.get()
        parent_id = parent.span_id if parent is not None and parent._tracer is self else self.parent_span_id
        span = Span(self, name, parent_id, attributes)
        token = _current.set(span)
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            _current.reset(token)
            span.end()

    def current_span(self) -> Span | None:
        """The innermost span open in this task for this request, if any."""
        span = _current.get()
        return span if span is not None and span._tracer is self else None

    def _finished(self, message: wpb.Span) -> None:
        if not self.recording:
            return
        if len(self.spans) >= MAX_SPANS and message.parent_span_id != self.parent_span_id:
            self.dropped += 1  # the request's own root span is always kept
            return
        self.spans.append(message)



class _NoopSpan(Span):
    """What an unsampled request's spans are: every call does nothing."""

    def __init__(self) -> None:
        self.name = self.trace_id = self.span_id = self.parent_span_id = ""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_status(self, ok: bool, message: str = "") -> None:
        pass

    def record_exception(self, exc: BaseException) -> None:
        pass

    def end(self) -> None:
        pass


_NOOP = _NoopSpan()
