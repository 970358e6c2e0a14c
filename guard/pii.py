"""PII detection: candidate patterns confirmed by validators.

Every type but ``PERSON`` is found by a pattern and then *validated*
(checksums, registries, plausibility rules in :mod:`.validators`); a
candidate that fails validation is dropped. Boundaries are ASCII-only
(``[0-9A-Za-z]``) because Python's ``\\w`` also matches Chinese characters,
and Chinese text often writes digits straight after a word (``手机13812345678``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import validators as v
from .names import find_person_names
from .redact import redact

PII_TYPES: tuple[str, ...] = ("SECRET", "EMAIL", "CN_ID", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS",
                              "PHONE", "PERSON")
# On overlap the type listed first wins (a card number is not also a phone number).
_PRIORITY = {t: i for i, t in enumerate(PII_TYPES)}


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One PII occurrence: ``text[start:end]`` is of ``type``; ``score`` is the detector's confidence."""

    type: str
    start: int
    end: int
    score: float




def _left(excluded: str) -> str:
    """A left boundary: no ``excluded`` character before, except the letter of a JSON escape (``\\n``, ``\\t``).

    The gateway checks JSON text, where a newline is the two characters ``\\n``: a phone number at the start
    of a line follows an ``n``.
    """
    return rf"(?:(?<![{excluded}])|(?<=\\[nrt]))"


_B = _left("0-9A-Za-z")   # ASCII word boundaries, see module docstring
_E = r"(?![0-9A-Za-z])"

_EMAIL = re.compile(_B + r"[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}" + _E)
_CN_ID = re.compile(_B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _E)
_IBAN = re.compile(_B + r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?" + _E)
_CARD = re.compile(_B + r"\d{4}(?:[ -]?\d{2,4}){2,4}(?:[ -]?\d{1,3})?" + _E)
_SSN = re.compile(_left("0-9A-Za-z-") + r"\d{3}([- ])\d{2}\1\d{4}(?![0-9A-Za-z-])")
_SSN_BARE = re.compile(_B + r"\d{9}" + _E)
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security|soc\.? sec)\b")
_IPV4 = re.compile(_left("0-9A-Za-z.") + r"(?:\d{1,3}\.){3}\d{1,3}(?![0-9A-Za-z]|\.\d)")
_IPV6 = re.compile(_left("0-9A-Za-z:.") + r"(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:)?"
                   r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![0-9A-Za-z:])")
# A phone number: optional + or 00 country prefix, then digit groups joined by one separator
# (space, dot, dash) or wrapped in parentheses, optional extension.
# Digit runs are matched possessively (\d++): a run is never split between groups, so a long number that
# fails the boundary cannot make the engine try every split (that backtracking cost ms on digit-heavy text).
_PHONE = re.compile(_left("0-9A-Za-z+") + r"(?:\+|00)?\(?\d++\)?(?:[ .\-]?\(?\d++\)?){0,6}"
                    r"(?:\s?(?:x|ext\.?|#)\s?\d{1,5})?" + _E)
_PHONE_CONTEXT = re.compile(r"(?i)(?:phone|tel\b|mobile|cell|call|text|sms|whatsapp|fax|contact|reach|answer|"
                            r"registered|dial|ring|number|"
                            r"电话|手机|联系|致电|号码|座机|微信)")
_DATE_LIKE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
_DATE_PREFIX = re.compile(r"^(?:19|20)\d{2}[-./](?:0?[1-9]|1[0-2])[-./]\d{1,2}\b")
_CN_MOBILE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$")

# Secrets: well-known key formats first, then "key = value" assignments, then PEM blocks.
_SECRET_PREFIXED = re.compile(
    _B + r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}" + _E
    + r"|" + _B + r"gh[pousr]_[A-Za-z0-9]{36,255}" + _E
    + r"|" + _B + r"github_pat_[A-Za-z0-9_]{40,255}" + _E
    + r"|" + _B + r"glpat-[A-Za-z0-9_-]{20,}" + _E
    + r"|" + _B + r"sk-(?:ant-|proj-|live-)?[A-Za-z0-9_-]{20,}" + _E
    + r"|" + _B + r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}" + _E
    + r"|" + _B + r"xox[abposr]-[A-Za-z0-9-]{10,}" + _E
    + r"|" + _B + r"AIza[0-9A-Za-z_-]{35}" + _E
    + r"|" + _B + r"hf_[A-Za-z0-9]{30,}" + _E
    + r"|" + _B + r"npm_[A-Za-z0-9]{36}" + _E
    + r"|" + _B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}" + _E)
_SECRET_ASSIGNED = re.compile(
    r"(?i)(?:api[_ -]?key|api[_ -]?secret|secret(?:[_ -]?key)?|access[_ -]?key(?:[_ -]?id)?|auth[_ -]?token|"
    r"access[_ -]?token|bearer|token|password|passwd|pwd|private[_ -]?key|client[_ -]?secret|密码|密钥|令牌)"
    r"[\"']?\s*(?:[:=：]|is|为|是)\s*[\"']?([^\s\"',;，。]{6,200})")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")


def _json_number(full: str, start: int, end: int) -> bool:
    """Whether ``full[start:end]`` is a JSON number value (not inside a string)."""
    before = full[:start].rstrip()[-1:]
    after = full[end:].lstrip()[:1]
    return before in (":", "[", ",") and after in (",", "]", "}", "") and full[start - 1:start] != '"'


def _phone_ok(text: str, full: str, start: int) -> float:
    """Confidence that a phone-shaped match is a phone number (0 = not one)."""
    digits = "".join(ch for ch in text if ch.isdigit())
    n = len(digits)
    plain = digits == text
    if _DATE_LIKE.match(text) or _DATE_PREFIX.match(text) or len(set(digits)) < 3:
        return 0.0
    if full[start + len(text):start + len(text) + 1] == ":":  # a time, e.g. "2017-11-13 21:11"
        return 0.0
    if _CN_MOBILE.match(text.replace(" ", "").replace("-", "")):
        return 0.95
    context = bool(_PHONE_CONTEXT.search(full, max(0, start - 40), start))
    if text.startswith(("+", "00")):
        return 0.9 if 8 <= n <= 15 else 0.0
    if plain and not context and _json_number(full, start, start + len(text)):
        return 0.0  # a bare JSON number ("result": 4294967295) is a number, not a phone
    if plain:
        if n == 10 and (digits[0] == "0" or (digits[0] in "23456789" and digits[3] in "23456789")):
            return 0.75 if not context else 0.9
        if n == 11 and digits[0] in "01":
            return 0.75 if not context else 0.9
        return 0.6 if context and 7 <= n <= 12 else 0.0
    groups = re.findall(r"\d+", text)
    if len(groups) < 2 or (max(len(g) for g in groups) > 5 and n < 10):
        return 0.0
    if 10 <= n <= 13:
        return 0.85
    if 7 <= n <= 9:
        return 0.8 if context or text.startswith("(") else 0.0
    return 0.0


def _spans(rx: re.Pattern[str], text: str, kind: str, check: Callable[[str], bool], score: float,
           group: int = 0) -> Iterable[PiiSpan]:
    for m in rx.finditer(text):
        if check(m.group(group)):
            yield PiiSpan(kind, m.start(group), m.end(group), score)


_PREFIX_MARKERS = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                   "glpat-", "sk-", "sk_", "rk_", "pk_", "xox", "AIza", "hf_", "npm_", "eyJ")
_ASSIGN_MARKERS = ("key", "secret", "token", "bearer", "pass", "pwd", "密码", "密钥", "令牌")


def _secrets(text: str) -> Iterable[PiiSpan]:
    # Cheap substring checks first: the patterns are long alternations that cost ~0.1 ms per KB each.
    if any(p in text for p in _PREFIX_MARKERS):
        for m in _SECRET_PREFIXED.finditer(text):
            yield PiiSpan("SECRET", m.start(), m.end(), 0.95)
    if "-----BEGIN" in text:
        for m in _PEM.finditer(text):
            yield PiiSpan("SECRET", m.start(), m.end(), 1.0)
    lowered = text.lower()
    if not any(k in lowered for k in _ASSIGN_MARKERS):
        return
    for m in _SECRET_ASSIGNED.finditer(text):
        value = m.group(1)
        keyword = m.group(0)[: m.start(1) - m.start()].lower()
        is_password = any(k in keyword for k in ("pass", "pwd", "密码"))
        if (is_password and len(value) >= 6) or v.looks_random(value, 3.0):
            yield PiiSpan("SECRET", m.start(1), m.end(1), 0.85)


def _phones(text: str) -> Iterable[PiiSpan]:
    for m in _PHONE.finditer(text):
        s = m.group(0)
        # A trailing ")" or "(" belongs to the prose unless the number opened it.
        start, end = m.start(), m.end()
        if s.endswith(")") and s.count("(") < s.count(")"):
            end -= 1
            s = s[:-1]
        if s.startswith("(") and ")" not in s:
            start += 1
            s = s[1:]
        score = _phone_ok(s, text, start)
        if score:
            yield PiiSpan("PHONE", start, end, score)


def detect_pii(text: str, types: Iterable[str] | None = None, names: bool = True) -> list[PiiSpan]:
    """Find PII in ``text``: non-overlapping spans sorted by start.

    ``types`` limits the search to those types (all of :data:`PII_TYPES` by
    default); ``names=False`` skips the ``PERSON`` heuristic.
    """
    want = set(PII_TYPES if types is None else types)
    found: list[PiiSpan] = []
    if "SECRET" in want:
        found += _secrets(text)
    if "EMAIL" in want and "@" in text:
        found += (PiiSpan("EMAIL", m.start(), m.end(), 0.95) for m in _EMAIL.finditer(text))
    has_digit = any(ch.isdigit() for ch in text)
    if has_digit:
        if "CN_ID" in want:
            found += _spans(_CN_ID, text, "CN_ID", v.cn_id_ok, 1.0)
        if "IBAN" in want:
            found += _spans(_IBAN, text, "IBAN", v.iban_ok, 1.0)
        if "CREDIT_CARD" in want:
            found += _spans(_CARD, text, "CREDIT_CARD", v.credit_card_ok, 1.0)
        if "US_SSN" in want:
            found += _spans(_SSN, text, "US_SSN", v.us_ssn_ok, 0.9)
            if _SSN_CONTEXT.search(text):
                found += _spans(_SSN_BARE, text, "US_SSN", v.us_ssn_ok, 0.8)
        if "IP_ADDRESS" in want:
            if "." in text:
                found += _spans(_IPV4, text, "IP_ADDRESS", v.ipv4_ok, 0.9)
            if "::" in text or text.count(":") >= 5:
                found += _spans(_IPV6, text, "IP_ADDRESS", v.ipv6_ok, 0.95)
        if "PHONE" in want:
            found += _phones(text)
    if "PERSON" in want and names:
        found += (PiiSpan("PERSON", s, e, sc) for s, e, sc in find_person_names(text))
    return resolve_overlaps(found)


def resolve_overlaps(spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """Keep non-overlapping spans: higher-priority type first, then the longer one."""
    ordered = sorted(spans, key=lambda s: (_PRIORITY.get(s.type, 99), -(s.end - s.start), s.start))
    kept: list[PiiSpan] = []
    for s in ordered:
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.start)


def redact_pii(text: str) -> str:
    """``text`` with every PII span redacted (masked digits, ``<TYPE>`` labels).

    The supervisor finds it as the ``pii`` entry point of ``neuroflow.log_redactors``
    and runs agents' log lines through it, so no PII reaches its log raw.
    """
    spans = detect_pii(text)
    return redact(text, [(s.start, s.end, s.type) for s in spans]) if spans else text
