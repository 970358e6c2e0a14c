"""Normalisation for the injection detectors: one text, several *views*.

An attacker hides an instruction from a phrase list by changing how it is
written, not what it says. Each view undoes one family of tricks:

* ``plain``: case folded; full-width and other compatibility forms (NFKC:
  ``ｉｇｎｏｒｅ``, ``𝐢𝐠𝐧𝐨𝐫𝐞``), accents, Cyrillic/Greek look-alikes and a few
  traditional Chinese characters mapped to their plain form; zero-width,
  bidi-control and soft-hyphen characters removed.
* ``leet`` (``1gn0r3``), ``rot13``, ``reversed``, ``spaced`` (``i g n o r e``).
* decoded fragments: base64, base32, hex, binary octets, ASCII85/base85,
  percent-encoding, ``\\uXXXX`` escapes, HTML entities, Morse, and ASCII
  smuggled in Unicode tag characters (U+E0000 block).

Every view knows where it came from in the original text, so a finding can
point at the right span.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache

_INVISIBLE = [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0xFEFF, 0x3164, 0xFFA0,
              *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), *range(0xFE00, 0xFE10)]
_HOMOGLYPHS = {  # Cyrillic and Greek letters that render like Latin ones (lower-case targets)
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "ո": "n",
    "ν": "v", "ο": "o", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ϲ": "c", "ӏ": "l", "ı": "i", "ℓ": "l",
}
_TRAD_TO_SIMP = dict(zip("們無視規則說請將為發統詞顯記這輸憑證碼傳權對話機後開禁們從現從條執誤導賬戶號資訊關閉隱藏",
                         "们无视规则说请将为发统词显记这输凭证码传权对话机后开禁们从现从条执误导账户号资讯关闭隐藏",
                         strict=True))
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "l"})


@lru_cache(maxsize=1)
def _table() -> dict[int, str | None]:
    """The one-to-one translation applied by the ``plain`` view (built once, ~20 ms)."""
    table: dict[int, str | None] = {c: None for c in _INVISIBLE}
    ranges = [(0x00C0, 0x0250), (0x0370, 0x0530), (0x2070, 0x20A0), (0x2100, 0x2150), (0x2460, 0x2500),
              (0xFF01, 0xFF5F), (0x1D400, 0x1D800), (0x1F130, 0x1F18A)]
    for lo, hi in ranges:
        for code in range(lo, hi):
            ch = chr(code)
            folded = unicodedata.normalize("NFKC", ch)
            folded = unicodedata.normalize("NFD", folded)[:1] if folded else folded
            folded = folded.lower()
            folded = _HOMOGLYPHS.get(folded, folded)
            if len(folded) == 1 and folded != ch:
                table[code] = folded
    for code in range(0x0300, 0x0370):  # combining accents
        table[code] = None
    for src, dst in _HOMOGLYPHS.items():
        table[ord(src)] = dst
        table[ord(src.upper())] = dst
    for src, dst in _TRAD_TO_SIMP.items():
        table[ord(src)] = dst
    for code, ch in ((0x3000, " "), (0xFF0C, ","), (0x3002, "."), (0xFF1A, ":"), (0xFF1B, ";")):
        table[code] = ch
    return table


@dataclass(frozen=True, slots=True)
class View:
    """One reading of the text: ``kind`` names the transformation; ``text`` is normalised.

    ``start``/``end`` bound the region of the original it came from; for the
    ``plain``, ``leet`` and ``rot13`` views ``index`` maps each position back to
    the original (``None`` when the mapping is the identity).
    """

    kind: str
    text: str
    start: int
    end: int
    index: tuple[int, ...] | None = None

    def origin(self, s: int, e: int) -> tuple[int, int]:
        """The original span behind ``text[s:e]`` (the whole region for decoded views)."""
        if self.kind not in ("plain", "leet", "rot13"):
            return self.start, self.end
        if self.index is None:
            return s, e
        if not self.index:
            return self.start, self.end
        return self.index[min(s, len(self.index) - 1)], self.index[max(s, e - 1)] + 1

    @property
    def hidden(self) -> bool:
        """True when the view exposes text a reader would not see as written."""
        return self.kind not in ("plain",)


def fold(text: str) -> tuple[str, tuple[int, ...] | None]:
    """The ``plain`` normalisation and, when characters were dropped, the index back to ``text``."""
    table = _table()
    folded = text.translate(table)
    lowered = folded.lower()
    if len(lowered) != len(folded):  # a rare multi-character lower-case form: drop the extras
        lowered = "".join(c.lower()[:1] for c in folded)
    if len(folded) == len(text):
        return lowered, None
    index = tuple(i for i, ch in enumerate(text) if table.get(ord(ch), "") is not None)
    return lowered, index


_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_B32 = re.compile(r"(?<![A-Z2-7])[A-Z2-7]{16,}=*")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])")
_BIN = re.compile(r"(?:[01]{8}[ ]?){4,}")
_A85 = re.compile(r"<~[\s\S]{8,}?~>")
_B85 = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{30,}")
_PCT = re.compile(r"(?:%[0-9A-Fa-f]{2}|[^\s%]){0,200}(?:%[0-9A-Fa-f]{2}(?:[^\s%]|%[0-9A-Fa-f]{2}){0,200}){3,}")
_UESC = re.compile(r"(?:\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}){4,}")
_ENT = re.compile(r"(?:&#x?[0-9A-Fa-f]+;){4,}")
_MORSE = re.compile(r"(?:[.\-]{1,7}[ /]{1,3}){6,}[.\-]{1,7}")
_SPACED = re.compile(r"\b(?:\w ){3,}\w\b")
_MORSE_TABLE = {v: k for k, v in {
    "a": ".-", "b": "-...", "c": "-.-.", "d": "-..", "e": ".", "f": "..-.", "g": "--.", "h": "....", "i": "..",
    "j": ".---", "k": "-.-", "l": ".-..", "m": "--", "n": "-.", "o": "---", "p": ".--.", "q": "--.-", "r": ".-.",
    "s": "...", "t": "-", "u": "..-", "v": "...-", "w": ".--", "x": "-..-", "y": "-.--", "z": "--..",
    "0": "-----", "1": ".----", "2": "..---", "3": "...--", "4": "....-", "5": ".....", "6": "-....",
    "7": "--...", "8": "---..", "9": "----."}.items()}


def _printable(raw: bytes) -> str | None:
    """Decoded bytes as text if they read as text (UTF-8, mostly printable, some letters)."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 6:
        return None
    good = sum(ch.isprintable() or ch in "\n\t" for ch in s)
    letters = sum(ch.isalpha() for ch in s)
    return s if good / len(s) > 0.95 and letters / len(s) > 0.5 else None


def _decode_b64(s: str) -> bytes:
    s = s.rstrip("=")
    s += "=" * (-len(s) % 4)
    if "-" in s or "_" in s:
        return base64.urlsafe_b64decode(s)
    return base64.b64decode(s, validate=True)


def _decoders(text: str) -> list[tuple[str, int, int, str]]:
    """``(kind, start, end, decoded)`` for every fragment that decodes to readable text."""
    out: list[tuple[str, int, int, str]] = []

    def attempt(kind: str, m: re.Match[str], fn: object) -> None:
        try:
            decoded = fn(m.group(0))  # type: ignore[operator]
        except (ValueError, binascii.Error, UnicodeDecodeError, KeyError):
            return
        s = _printable(decoded) if isinstance(decoded, bytes) else decoded
        if s and s.strip() != m.group(0).strip():
            out.append((kind, m.start(), m.end(), s))

    for m in _B64.finditer(text):
        if not m.group(0).isdigit() and not m.group(0).isalpha():
            attempt("base64", m, _decode_b64)
    for m in _B32.finditer(text):
        attempt("base32", m, lambda s: base64.b32decode(s + "=" * (-len(s) % 8)))
    for m in _HEX.finditer(text):
        attempt("hex", m, bytes.fromhex)
    for m in _BIN.finditer(text):
        attempt("binary", m, lambda s: bytes(int(b, 2) for b in s.split()))
    for m in _A85.finditer(text):
        attempt("ascii85", m, lambda s: base64.a85decode(s, adobe=True))
    for m in _B85.finditer(text):
        attempt("base85", m, base64.b85decode)
    if "%" in text:
        for m in _PCT.finditer(text):
            attempt("percent", m, urllib.parse.unquote)
    if "\\" in text:
        for m in _UESC.finditer(text):
            attempt("escape", m, lambda s: s.encode("ascii").decode("unicode_escape"))
    if "&#" in text:
        for m in _ENT.finditer(text):
            attempt("entity", m, html.unescape)
    for m in _MORSE.finditer(text):
        attempt("morse", m, lambda s: " ".join("".join(_MORSE_TABLE[c] for c in word.split())
                                               for word in re.split(r"\s*/\s*|\s{3,}", s.strip())))
    tags = [(i, ch) for i, ch in enumerate(text) if 0xE0000 <= ord(ch) <= 0xE007F]
    if len(tags) >= 4:
        out.append(("tags", tags[0][0], tags[-1][0] + 1, "".join(chr(ord(ch) - 0xE0000) for _, ch in tags)))
    return out


def views(text: str, max_decoded: int = 8) -> list[View]:
    """Every view of ``text`` worth scanning; the first is always ``plain``."""
    plain, index = fold(text)
    n = len(text)
    out = [View("plain", plain, 0, n, index)]
    if re.search(r"[a-z][0-9@$|!][a-z]|[0-9][a-z]{2}", plain):
        out.append(View("leet", plain.translate(_LEET), 0, n, index))
    ascii_letters = sum("a" <= ch <= "z" for ch in plain)
    if ascii_letters >= 12:
        out.append(View("rot13", codecs.encode(plain, "rot13"), 0, n, index))
        out.append(View("reversed", plain[::-1], 0, n))
    if _SPACED.search(plain):
        out.append(View("spaced", _SPACED.sub(lambda m: m.group(0).replace(" ", ""), plain), 0, n))
    for kind, start, end, decoded in _decoders(text)[:max_decoded]:
        out.append(View(kind, fold(decoded)[0], start, end))
    return out
