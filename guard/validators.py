"""Checksum and plausibility checks behind the PII detectors.

Each function takes the matched text and answers whether it is a real
instance of its type, so that a pattern alone never makes a finding for the
validated types. References are in the docstrings.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from datetime import date

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"
# GB 2260 province-level prefixes (first two digits of a resident ID).
_CN_PROVINCES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
                           50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91})

# IBAN length per country (ISO 13616 registry; SWIFT IBAN registry release 2024).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers (ISO/IEC 7812-1)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(d: str) -> bool:
    """Issuer identification: American Express, Diners, JCB (3), Visa (4), Mastercard (51-55, 2221-2720),
    Maestro/Discover/UnionPay/RuPay (5, 6) and UnionPay 81. Luhn does the rest."""
    return d[0] in "3456" or 2221 <= int(d[:4]) <= 2720 or d.startswith("81")


def credit_card_ok(text: str) -> bool:
    """12-19 digits (separators allowed), a known issuer prefix, and the Luhn check."""
    digits = "".join(ch for ch in text if ch.isdigit())
    if not 12 <= len(digits) <= 19 or len(set(digits)) < 2:
        return False
    return _card_prefix_ok(digits) and luhn_ok(digits)


def cn_id_ok(text: str) -> bool:
    """Chinese resident identity number (GB 11643-1999): region, birth date, ISO 7064 MOD 11-2 check."""
    s = text.upper()
    if len(s) != 18 or not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
        return False
    if int(s[:2]) not in _CN_PROVINCES:
        return False
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if not date(1900, 1, 1) <= born <= date.today():
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _CN_ID_WEIGHTS, strict=True))
    return _CN_ID_CHECK[total % 11] == s[17]


def iban_ok(text: str) -> bool:
    """IBAN (ISO 13616): the country's length and the ISO 7064 mod 97-10 check (remainder 1)."""
    s = "".join(text.split()).upper()
    if len(s) < 15 or not s[:2].isalpha() or not s[2:4].isdigit() or not s.isalnum():
        return False
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


# Numbers the SSA never issued or that were published as examples.
_SSN_EXAMPLES = frozenset({"078051120", "219099999", "123456789"})


def us_ssn_ok(text: str) -> bool:
    """US Social Security number: area not 000/666/9xx, group not 00, serial not 0000, no known examples."""
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) != 9 or digits in _SSN_EXAMPLES:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ipv4_ok(text: str) -> bool:
    """Dotted quad with every octet 0-255 and no leading zeros."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    return all(p.isdigit() and not (len(p) > 1 and p[0] == "0") and int(p) <= 255 for p in parts)


def ipv6_ok(text: str) -> bool:
    """A valid IPv6 address (RFC 4291 text forms) that is not a clock time such as ``10::30``."""
    if text.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    groups = [g for g in text.split(":") if g]
    return len(groups) >= 3 or any(ch.isalpha() for ch in text)


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s`` (0 for an empty string)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def looks_random(token: str, min_entropy: float = 3.5) -> bool:
    """True for a token that looks machine-generated: high entropy and a mix of character classes."""
    classes = sum((any(c.islower() for c in token), any(c.isupper() for c in token),
                   any(c.isdigit() for c in token)))
    return classes >= 2 and shannon_entropy(token) >= min_entropy
