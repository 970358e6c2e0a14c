"""What a check returns: findings, alerts and the verdict that carries them.

All three are immutable values, safe to hand to another thread or to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["allow", "block", "redact", "alert", "log"]
Direction = Literal["input", "output"]

# How strongly each action acts; the verdict's action is the strongest one matched.
SEVERITY: dict[str, int] = {"allow": 0, "log": 1, "alert": 2, "redact": 3, "block": 4}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected thing: ``type`` is a PII type (``EMAIL``…), ``INJECTION``,
    ``REGEX``, ``KEYWORD``, ``DOMAIN``, ``SIZE``, ``AGENT`` or ``USER``.

    ``start``/``end`` are offsets into the checked text (Python string indices);
    ``rule`` is the rule whose condition produced it, ``score`` a confidence
    (injection score, or PII confidence) where there is one.
    """

    type: str
    start: int
    end: int
    rule: str | None = None
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "start": self.start, "end": self.end, "rule": self.rule}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """A block or alert to report: the rule, where it happened and a redacted excerpt.

    ``excerpt`` never holds raw PII: every PII span in it is replaced by its label.
    """

    rule: str
    action: Action
    direction: Direction
    message: str
    excerpt: str
    finding_types: tuple[str, ...]
    agent: str | None = None
    user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "action": self.action, "direction": self.direction, "message": self.message,
                "excerpt": self.excerpt, "findings": list(self.finding_types), "agent": self.agent,
                "user": self.user}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :meth:`Guard.check`.

    ``action`` is the strongest action of the matched rules (``block`` >
    ``redact`` > ``alert`` > ``log`` > ``allow``); rules run in file order and
    the first ``block`` ends the evaluation. ``rule`` names the rule that set
    the action, ``redacted`` is the text with every span of the matched
    ``redact`` rules replaced (equal to the input when nothing was redacted).
    """

    action: Action
    rule: str | None
    message: str
    findings: list[Finding]
    redacted: str
    alerts: list[Alert] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def to_json(self) -> dict[str, Any]:
        """The wire form used by the gateway's ``/v1/guard/check``."""
        out: dict[str, Any] = {"action": self.action, "findings": [f.to_json() for f in self.findings],
                               "redacted": self.redacted}
        if self.rule is not None:
            out["rule"] = self.rule
        if self.message:
            out["message"] = self.message
        return out
