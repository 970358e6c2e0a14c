"""NeuroFlow guard: YAML rules over PII detection, prompt-injection scoring and allow/deny lists.

The gateway applies it to every request before routing (``direction="input"``)
and to every response before it leaves (``direction="output"``)::

    from neuroflow.guard import Guard
    guard = Guard.load(path, embedder=router_embedder)
    verdict = guard.check(text, "input", agent="calc", user="alice")
    if verdict.blocked: ...                     # 403 guard_blocked, verdict.rule, verdict.message
    text = verdict.redacted                     # PII masked by `redact` rules
    for alert in verdict.alerts: sink.submit(alert)

The library knows nothing of HTTP; :class:`AlertSink` posts alerts to a webhook.
"""

from .alerts import AlertSink
from .engine import Guard
from .errors import GuardConfigError, GuardError
from .injection import InjectionResult, InjectionScorer
from .pii import PII_TYPES, PiiSpan, detect_pii
from .redact import redact
from .rules import AlertSettings, Rule, RuleSet, load_rules
from .semantic import Embedder, SemanticLayer
from .verdict import Action, Alert, Direction, Finding, Verdict

__all__ = [
    "PII_TYPES",
    "Action",
    "Alert",
    "AlertSettings",
    "AlertSink",
    "Direction",
    "Embedder",
    "Finding",
    "Guard",
    "GuardConfigError",
    "GuardError",
    "InjectionResult",
    "InjectionScorer",
    "PiiSpan",
    "Rule",
    "RuleSet",
    "SemanticLayer",
    "Verdict",
    "detect_pii",
    "load_rules",
    "redact",
]
