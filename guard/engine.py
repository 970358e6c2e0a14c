"""The :class:`Guard`: applies a rule set to one text, and reloads it when its file changes."""

from __future__ import annotations

import logging
import os
import re
import threading
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .errors import GuardConfigError
from .injection import InjectionResult, InjectionScorer
from .normalize import fold
from .pii import PiiSpan, detect_pii
from .redact import Style, redact
from .rules import Condition, Rule, RuleSet, load_rules
from .semantic import Embedder, SemanticLayer
from .verdict import SEVERITY, Action, Alert, Direction, Finding, Verdict

log = logging.getLogger("neuroflow.guard")

DEFAULT_RULES = Path(__file__).parent / "rules" / "default.yaml"
EXCERPT_CONTEXT = 80   # characters kept on each side of the first finding in an alert excerpt
EXCERPT_MAX = 240
_DOMAIN = re.compile(r"(?i)(?:https?://)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}(?![a-z0-9-])")


class _Context:
    """Per-check lazy results shared by the rules of one check (detectors run at most once)."""

    def __init__(self, guard: Guard, rules: RuleSet, text: str, direction: str) -> None:
        self.guard, self.rules, self.text, self.direction = guard, rules, text, direction
        self._pii: list[PiiSpan] | None = None
        self._injection: InjectionResult | None = None
        self._folded: tuple[str, tuple[int, ...] | None] | None = None

    def pii(self) -> list[PiiSpan]:
        if self._pii is None:
            self._pii = detect_pii(self.text, self.rules.pii_types)
        return self._pii

    def injection(self) -> InjectionResult:
        if self._injection is None:
            self._injection = self.guard.scorer.score(self.text, self.direction)
        return self._injection

    def folded(self) -> tuple[str, tuple[int, ...] | None]:
        if self._folded is None:
            self._folded = fold(self.text)
        return self._folded


def _domains(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _DOMAIN.finditer(text):
        host = m.group(0).lower().split("://", 1)[-1]
        start = m.end() - len(host)
        if start > 0 and text[start - 1] == "@":  # the domain of an e-mail address counts too
            pass
        out.append((start, m.end(), host))
    return out


def _under(host: str, listed: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in listed)


def _evaluate(cond: Condition, ctx: _Context, agent: str | None, user: str | None) -> list[Finding] | None:
    """The findings of a matching condition, or None when it does not match (all parts must hold)."""
    found: list[Finding] = []
    text = ctx.text
    if cond.agent is not None:
        if not cond.agent.violated_by(agent):
            return None
        found.append(Finding("AGENT", 0, 0))
    if cond.user is not None:
        if not cond.user.violated_by(user):
            return None
        found.append(Finding("USER", 0, 0))
    if cond.size_above is not None:
        if len(text.encode("utf-8", "surrogatepass")) <= cond.size_above:
            return None
        found.append(Finding("SIZE", 0, len(text)))
    if cond.regex:
        hits = [Finding("REGEX", m.start(), m.end())
                for rx in cond.regex for m in rx.finditer(text) if m.end() > m.start()]
        if not hits:
            return None
        found += hits
    if cond.keyword_rx is not None:
        folded, index = ctx.folded()
        hits = []
        for m in cond.keyword_rx.finditer(folded):
            s, e = (m.start(), m.end()) if index is None else (index[m.start()], index[m.end() - 1] + 1)
            hits.append(Finding("KEYWORD", s, e))
        if not hits:
            return None
        found += hits
    if cond.domain is not None:
        lst = cond.domain
        hits = [Finding("DOMAIN", s, e) for s, e, host in _domains(text)
                if (_under(host, lst.values) if lst.mode == "deny" else not _under(host, lst.values))]
        if not hits:
            return None
        found += hits
    if cond.pii is not None:
        hits = [Finding(p.type, p.start, p.end, score=p.score) for p in ctx.pii() if p.type in cond.pii]
        if not hits:
            return None
        found += hits
    if cond.injection_above is not None:
        result = ctx.injection()
        if result.score <= cond.injection_above:
            return None
        start, end = result.span
        found.append(Finding("INJECTION", start, end, score=result.score))
    return found


def excerpt(text: str, findings: list[Finding]) -> str:
    """A short piece of ``text`` around the first finding with every PII span replaced by its label."""
    spans = [f for f in findings if f.end > f.start]
    if spans and len(text) > EXCERPT_MAX:
        first = min(spans, key=lambda f: f.start)
        lo = max(0, first.start - EXCERPT_CONTEXT)
        piece = text[lo:lo + EXCERPT_MAX]
    else:
        piece = text[:EXCERPT_MAX]
    clean = redact(piece, [(p.start, p.end, p.type) for p in detect_pii(piece)], style="label")
    return clean if len(piece) == len(text) else clean + "…"


class Guard:
    """Applies a YAML rule set to texts going into and out of agents.

    Build it with :meth:`load`; call :meth:`check` from any thread; call
    :meth:`reload_if_changed` periodically to pick up edits of the rules file.
    """

    def __init__(self, rules: RuleSet, path: Path | None, scorer: InjectionScorer,
                 injection_threshold: float | None = None) -> None:
        self._rules = rules
        self.path = path
        self.scorer = scorer
        self._threshold_override = injection_threshold
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.last_error: str | None = None

    @classmethod
    def load(cls, path: Path | None = None, embedder: Embedder | None = None,
             injection_threshold: float | None = None) -> Guard:
        """Load a rules file (the shipped ``rules/default.yaml`` when ``path`` is None).

        ``embedder`` enables the semantic injection layer (any object with
        ``embed(list[str]) -> ndarray`` of L2-normalised rows, e.g. the router's);
        ``injection_threshold`` overrides the file's ``settings.injection_threshold``.
        Raises :class:`GuardConfigError` naming the file, rule and reason.
        """
        file = Path(path) if path is not None else DEFAULT_RULES
        rules = load_rules(file, injection_threshold)
        semantic = SemanticLayer(embedder) if embedder is not None else None
        return cls(rules, file, InjectionScorer(semantic), injection_threshold)

    @property
    def rules(self) -> RuleSet:
        """The rule set in force."""
        return self._rules

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload_if_changed(self) -> str | None:
        """Reload the rules file if it changed since the last load.

        Returns None when nothing changed or the reload worked; otherwise the
        error sentence (file, rule, reason) — the old rules stay in force. A
        broken file is reported once, when its change is first seen.
        """
        if self.path is None:
            return None
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                rules = load_rules(self.path, self._threshold_override)
            except GuardConfigError as exc:
                self.last_error = str(exc)
                log.error("guard rules not reloaded, keeping the previous ones: %s", exc,
                          extra={"path": str(self.path)})
                return self.last_error
            self._rules = rules
            self.last_error = None
            log.info("guard rules reloaded", extra={"path": str(self.path), "rules": len(rules.rules)})
            return None

    def check(self, text: str, direction: Direction = "input", agent: str | None = None,
              user: str | None = None) -> Verdict:
        """Apply the rules to ``text`` going in ``direction`` for ``agent`` on behalf of ``user``."""
        if direction not in ("input", "output"):
            raise ValueError(f"direction must be 'input' or 'output', not {direction!r}")
        rules = self._rules
        ctx = _Context(self, rules, text, direction)
        findings: list[Finding] = []
        spans: list[tuple[int, int, str, Style]] = []
        matched: list[tuple[Rule, list[Finding]]] = []
        for rule in rules.rules:
            if direction not in rule.directions or not _scoped(rule, agent, user):
                continue
            hits = _evaluate(rule.when, ctx, agent, user)
            if hits is None:
                continue
            hits = [Finding(f.type, f.start, f.end, rule.name, f.score) for f in hits]
            findings += hits
            matched.append((rule, hits))
            if rule.action == "redact":
                style: Style = "label" if rule.style == "label" else "mask"
                spans += [(f.start, f.end, f.type, style) for f in hits if f.end > f.start]
            if rule.action == "block":
                break
        action: Action = "allow"
        decided: Rule | None = None
        for rule, _ in matched:
            if SEVERITY[rule.action] > SEVERITY[action]:
                action, decided = rule.action, rule  # type: ignore[assignment]
        alerts = []
        for rule, hits in matched:
            if rule.action in ("block", "alert", "log"):
                alert = Alert(rule.name, rule.action, direction, rule.message, excerpt(text, hits),  # type: ignore[arg-type]
                              tuple(sorted({f.type for f in hits})), agent, user)
                _log(alert)
                if rule.action != "log":
                    alerts.append(alert)
        message = decided.message if decided is not None and action == "block" else ""
        redacted = redact(text, spans) if spans else text
        return Verdict(action, decided.name if decided else None, message, findings, redacted, alerts)


def _scoped(rule: Rule, agent: str | None, user: str | None) -> bool:
    def ok(patterns: tuple[str, ...], value: str | None) -> bool:
        if patterns == ("*",):
            return True
        return value is not None and any(fnmatchcase(value, p) for p in patterns)
    return ok(rule.agents, agent) and ok(rule.users, user)


def _log(alert: Alert) -> None:
    level = logging.WARNING if alert.action in ("block", "alert") else logging.INFO
    fields: dict[str, Any] = {"rule": alert.rule, "action": alert.action, "direction": alert.direction,
                              "agent": alert.agent, "user": alert.user, "finding_types": list(alert.finding_types),
                              "excerpt": alert.excerpt}
    log.log(level, "guard %s by rule %s", alert.action, alert.rule, extra=fields)
