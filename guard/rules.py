"""The rules file: schema, validation and the immutable :class:`RuleSet`.

```yaml
settings:                      # all optional
  injection_threshold: 0.5     # score above which `injection: true` matches
  alerts: {webhook: "https://hooks.example/guard", rate_per_minute: 30, dedup_seconds: 300}
rules:                         # evaluated in this order; the first `block` wins
  - name: block-injection      # unique
    direction: both            # input | output | both (default both)
    agents: ["*"]              # fnmatch patterns of agents the rule applies to (default all)
    users: ["*"]               # same for users
    when:                      # every condition must hold (at least one)
      injection: true          # or  injection_score_above: 0.8
      # regex: "(?i)secret project"        (str or list)
      # keywords: [wire transfer, 汇款]       (case-insensitive)
      # pii: [EMAIL, PHONE] | any
      # size_above: 64KiB                   (UTF-8 bytes; int or "<n>KiB/MiB")
      # agent: {allow: [a, b]} | {deny: [c]}   (allow: matches agents NOT listed)
      # user:  {allow: [...]}  | {deny: [...]}
      # domain: {allow: [example.com]} | {deny: [evil.example]}  (domains named in the text)
    action: block              # block | redact | alert | log
    message: "…"               # shown to the client on block (default: a sentence naming the rule)
    style: mask                # redact only: mask (digits masked) | label (<TYPE>)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import GuardConfigError
from .pii import PII_TYPES

ACTIONS = ("block", "redact", "alert", "log")
DIRECTIONS = ("input", "output", "both")
CONDITIONS = ("regex", "keywords", "pii", "injection", "injection_score_above", "size_above", "agent", "user",
              "domain")
_SPAN_CONDITIONS = ("regex", "keywords", "pii", "domain")  # conditions that point at what to redact
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2}
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class ListCondition:
    """An allow or deny list: ``allow`` matches values *not* listed, ``deny`` matches listed ones."""

    mode: str
    values: tuple[str, ...]

    def violated_by(self, value: str | None) -> bool:
        listed = value is not None and value.lower() in self.values
        return not listed if self.mode == "allow" else listed


@dataclass(frozen=True, slots=True)
class Condition:
    """The parsed ``when`` block of a rule (absent conditions are ``None``)."""

    regex: tuple[re.Pattern[str], ...] = ()
    keywords: tuple[str, ...] = ()
    keyword_rx: re.Pattern[str] | None = None
    pii: frozenset[str] | None = None
    injection_above: float | None = None     # resolved threshold (``injection: true`` → the deployment's)
    size_above: int | None = None
    agent: ListCondition | None = None
    user: ListCondition | None = None
    domain: ListCondition | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule."""

    name: str
    directions: frozenset[str]
    agents: tuple[str, ...]
    users: tuple[str, ...]
    when: Condition
    action: str
    message: str
    style: str = "mask"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """The ``settings.alerts`` block (webhook off when ``webhook`` is None)."""

    webhook: str | None = None
    rate_per_minute: float = 30.0
    dedup_seconds: float = 300.0
    retries: int = 3
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything a rules file says, validated; immutable so it can be swapped atomically."""

    path: str
    rules: tuple[Rule, ...]
    injection_threshold: float
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @property
    def pii_types(self) -> frozenset[str]:
        """Every PII type some rule asks for (detection is skipped when empty)."""
        out: set[str] = set()
        for r in self.rules:
            out |= r.when.pii or set()
        return frozenset(out)

    @property
    def needs_injection(self) -> bool:
        return any(r.when.injection_above is not None for r in self.rules)


def _fail(path: Path, reason: str, rule: str | None = None) -> GuardConfigError:
    return GuardConfigError(path, reason, rule)


def _str_list(value: Any, key: str, path: Path, rule: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, f"{key}: expected a non-empty string or list of strings, got {value!r}", rule)
    return tuple(value)


def _list_condition(value: Any, key: str, path: Path, rule: str) -> ListCondition:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("allow", "deny"):
        raise _fail(path, f"when.{key}: expected {{allow: [...]}} or {{deny: [...]}}, got {value!r}", rule)
    mode, values = next(iter(value.items()))
    return ListCondition(mode, tuple(v.lower() for v in _str_list(values, f"when.{key}.{mode}", path, rule)))


def _size(value: Any, path: Path, rule: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise _fail(path, f"when.size_above: expected bytes like 65536 or '64KiB', got {value!r}", rule)
    return int(m.group(1)) * _UNITS[m.group(2)]


def _score(value: Any, key: str, path: Path, rule: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise _fail(path, f"{key}: expected a number between 0 and 1, got {value!r}", rule)
    return float(value)


def _condition(when: Any, path: Path, rule: str, threshold: float) -> Condition:
    if not isinstance(when, dict) or not when:
        raise _fail(path, f"when: expected a mapping with at least one of {', '.join(CONDITIONS)}", rule)
    unknown = sorted(set(when) - set(CONDITIONS))
    if unknown:
        raise _fail(path, f"when: unknown condition {unknown[0]!r} (expected one of {', '.join(CONDITIONS)})", rule)
    kw: dict[str, Any] = {}
    if "regex" in when:
        patterns = _str_list(when["regex"], "when.regex", path, rule)
        compiled = []
        for p in patterns:
            try:
                compiled.append(re.compile(p))
            except re.error as exc:
                raise _fail(path, f"when.regex: invalid pattern {p!r}: {exc}", rule) from None
        kw["regex"] = tuple(compiled)
    if "keywords" in when:
        words = tuple(w.lower() for w in _str_list(when["keywords"], "when.keywords", path, rule))
        kw["keywords"] = words
        kw["keyword_rx"] = re.compile("|".join(
            (rf"(?<!\w){re.escape(w)}(?!\w)" if w.isascii() else re.escape(w)) for w in words), re.I)
    if "pii" in when:
        value = when["pii"]
        types = frozenset(PII_TYPES) if value == "any" else frozenset(
            t.upper() for t in _str_list(value, "when.pii", path, rule))
        bad = sorted(types - set(PII_TYPES))
        if bad:
            raise _fail(path, f"when.pii: unknown type {bad[0]!r} (expected any or {', '.join(PII_TYPES)})", rule)
        kw["pii"] = types
    if "injection" in when:
        if when["injection"] is not True:
            raise _fail(path, f"when.injection: expected true, got {when['injection']!r}", rule)
        kw["injection_above"] = threshold
    if "injection_score_above" in when:
        kw["injection_above"] = _score(when["injection_score_above"], "when.injection_score_above", path, rule)
    if "size_above" in when:
        kw["size_above"] = _size(when["size_above"], path, rule)
    for key in ("agent", "user", "domain"):
        if key in when:
            kw[key] = _list_condition(when[key], key, path, rule)
    return Condition(**kw)


def _rule(raw: Any, index: int, path: Path, threshold: float, seen: set[str]) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(path, f"rules[{index}]: expected a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, f"rules[{index}]: name: expected a non-empty string, got {name!r}")
    if name in seen:
        raise _fail(path, "name: duplicate rule name", name)
    seen.add(name)
    unknown = sorted(set(raw) - {"name", "direction", "agents", "users", "when", "action", "message", "style"})
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r}", name)
    action = raw.get("action")
    if action not in ACTIONS:
        raise _fail(path, f"action: expected one of {', '.join(ACTIONS)}, got {action!r}", name)
    direction = raw.get("direction", "both")
    if direction not in DIRECTIONS:
        raise _fail(path, f"direction: expected one of {', '.join(DIRECTIONS)}, got {direction!r}", name)
    when = _condition(raw.get("when"), path, name, threshold)
    if action == "redact" and not any(getattr(when, k) for k in ("regex", "keyword_rx", "pii", "domain")):
        raise _fail(path, f"action redact needs a condition that marks spans ({', '.join(_SPAN_CONDITIONS)})", name)
    style = raw.get("style", "mask")
    if style not in ("mask", "label"):
        raise _fail(path, f"style: expected mask or label, got {style!r}", name)
    message = raw.get("message", f"request refused by guard rule {name!r}")
    if not isinstance(message, str):
        raise _fail(path, f"message: expected a string, got {message!r}", name)
    return Rule(name=name, directions=frozenset(("input", "output") if direction == "both" else (direction,)),
                agents=_str_list(raw.get("agents", ["*"]), "agents", path, name),
                users=_str_list(raw.get("users", ["*"]), "users", path, name),
                when=when, action=action, message=message, style=style)


def _alerts(raw: Any, path: Path) -> AlertSettings:
    if raw is None:
        return AlertSettings()
    if not isinstance(raw, dict):
        raise _fail(path, f"settings.alerts: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - {"webhook", "rate_per_minute", "dedup_seconds", "retries", "timeout_seconds"})
    if unknown:
        raise _fail(path, f"settings.alerts: unknown key {unknown[0]!r}")
    webhook = raw.get("webhook")
    if webhook is not None and (not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))):
        raise _fail(path, f"settings.alerts.webhook: expected an http(s) URL, got {webhook!r}")
    out = AlertSettings(webhook=webhook)
    for key in ("rate_per_minute", "dedup_seconds", "timeout_seconds", "retries"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise _fail(path, f"settings.alerts.{key}: expected a non-negative number, got {value!r}")
            out = AlertSettings(**{**{f: getattr(out, f) for f in out.__dataclass_fields__}, key: value})
    return out


def parse_rules(text: str, path: Path, injection_threshold: float | None = None) -> RuleSet:
    """Validate a rules document; raise :class:`GuardConfigError` naming file, rule and reason."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, dict):
        raise _fail(path, "expected a mapping with a 'rules' list")
    unknown = sorted(set(doc) - {"settings", "rules", "version"})
    if unknown:
        raise _fail(path, f"unknown top-level key {unknown[0]!r} (expected settings, rules)")
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise _fail(path, f"settings: expected a mapping, got {settings!r}")
    threshold = injection_threshold
    if threshold is None:
        threshold = (_score(settings["injection_threshold"], "settings.injection_threshold", path, None)
                     if "injection_threshold" in settings else DEFAULT_THRESHOLD)
    rules = doc.get("rules")
    if not isinstance(rules, list):
        raise _fail(path, f"rules: expected a list, got {type(rules).__name__}")
    seen: set[str] = set()
    parsed = tuple(_rule(r, i, path, threshold, seen) for i, r in enumerate(rules))
    return RuleSet(str(path), parsed, threshold, _alerts(settings.get("alerts"), path))


def load_rules(path: Path, injection_threshold: float | None = None) -> RuleSet:
    """Read and validate a rules file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text: {exc}") from None
    return parse_rules(text, path, injection_threshold)
