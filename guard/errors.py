"""Domain exceptions of the guard."""

from __future__ import annotations

from pathlib import Path


class GuardError(Exception):
    """Base class of the guard's own errors."""


class GuardConfigError(GuardError):
    """A rules file is unreadable or invalid.

    ``str(err)`` is one sentence naming the file, the rule (when the fault is
    inside one) and the reason, e.g.
    ``/etc/neuroflow/guard.yaml: rule 'pii': action: expected one of block, redact, alert, log, got 'drop'``.
    """

    def __init__(self, path: Path | str, reason: str, rule: str | None = None) -> None:
        self.path = str(path)
        self.rule = rule
        self.reason = reason
        where = f"{self.path}: rule {rule!r}: " if rule is not None else f"{self.path}: "
        super().__init__(where + reason)
