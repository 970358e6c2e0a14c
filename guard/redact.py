"""Redaction that keeps text readable: ``<EMAIL>`` labels, or digits masked.

Masking keeps separators and the last four characters of numbers people need
to recognise (``****-****-****-1234``, ``***-**-6789``); everything else is
replaced by its type label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Style = Literal["mask", "label"]

# Types masked digit by digit (keeping the last four); the rest become <TYPE>.
_MASKED = frozenset({"CREDIT_CARD", "PHONE", "CN_ID", "IBAN", "US_SSN"})
_KEEP_LAST = 4


def mask(value: str, kind: str) -> str:
    """``value`` with its letters and digits replaced by ``*`` except the last four (IBAN keeps its country)."""
    alnum = [i for i, ch in enumerate(value) if ch.isalnum()]
    keep = set(alnum[-_KEEP_LAST:])
    if kind == "IBAN":
        keep |= set(alnum[:2])
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(value))


def replacement(value: str, kind: str, style: Style = "mask") -> str:
    """What replaces one span of ``kind``: a mask for numeric PII in ``mask`` style, else ``<KIND>``."""
    if style == "mask" and kind in _MASKED:
        return mask(value, kind)
    return f"<{kind}>"


def redact(text: str, spans: Iterable[tuple[int, int, str] | tuple[int, int, str, Style]],
           style: Style = "mask") -> str:
    """Replace each ``(start, end, kind[, style])`` span of ``text``.

    Overlapping spans are merged into one replacement (the earliest span's kind
    wins); ``style`` is the default for spans that do not carry their own.
    """
    merged: list[tuple[int, int, str, Style]] = []
    for span in sorted(spans, key=lambda s: (s[0], -s[1])):
        start, end, kind = span[0], span[1], span[2]
        st: Style = span[3] if len(span) > 3 else style
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2], last[3])
            continue
        merged.append((start, end, kind, st))
    out: list[str] = []
    pos = 0
    for start, end, kind, st in merged:
        out.append(text[pos:start])
        out.append(replacement(text[start:end], kind, st))
        pos = end
    out.append(text[pos:])
    return "".join(out)
