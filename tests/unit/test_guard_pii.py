"""PII validators (valid and invalid checksums), detection in English and Chinese, redaction."""

from __future__ import annotations

import pytest

from neuroflow.guard import detect_pii, redact
from neuroflow.guard.redact import mask
from neuroflow.guard.validators import (
    cn_id_ok,
    credit_card_ok,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    looks_random,
    luhn_ok,
    shannon_entropy,
    us_ssn_ok,
)


def found(text: str, kind: str | None = None) -> list[tuple[str, str]]:
    return [(s.type, text[s.start:s.end]) for s in detect_pii(text) if kind is None or s.type == kind]


@pytest.mark.parametrize("number", ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004",
                                    "378282246310005", "6011111111111117", "3530111333300000",
                                    "6200000000000005"])
def test_credit_card_valid(number: str) -> None:
    assert credit_card_ok(number)


@pytest.mark.parametrize("number", ["4111111111111112", "1234567812345678", "0000000000000000", "41111111111",
                                    "9111111111111111"])
def test_credit_card_invalid(number: str) -> None:
    assert not credit_card_ok(number)


def test_luhn() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert not luhn_ok("7992a398713")


@pytest.mark.parametrize("number", ["11010519491231002X", "110105194912310029"[:17] + "X", "440305199001015432"])
def test_cn_id(number: str) -> None:
    # Only the first is a real checksum; check the function against a computed one for the others.
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    expected = "10X98765432"[sum(int(c) * w for c, w in zip(number[:17], weights, strict=True)) % 11]
    assert cn_id_ok(number) == (number[17] == expected)
    assert cn_id_ok(number[:17] + expected)


@pytest.mark.parametrize("number", ["11010519491231002", "11010519491331002X", "99010519491231002X",
                                    "11010518001231002X", "110105194912310021"])
def test_cn_id_invalid(number: str) -> None:
    assert not cn_id_ok(number)


@pytest.mark.parametrize("iban", ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
                                  "FR1420041010050500013M02606", "NL91ABNA0417164300"])
def test_iban_valid(iban: str) -> None:
    assert iban_ok(iban)


@pytest.mark.parametrize("iban", ["DE89370400440532013001", "GB82WEST1234569876543", "XX89370400440532013000",
                                  "DE8937040044053201300"])
def test_iban_invalid(iban: str) -> None:
    assert not iban_ok(iban)


def test_ssn() -> None:
    assert us_ssn_ok("219-45-6789")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000", "078-05-1120"):
        assert not us_ssn_ok(bad), bad


def test_ip() -> None:
    assert ipv4_ok("192.168.1.10") and ipv4_ok("0.0.0.0")
    assert not ipv4_ok("256.1.1.1") and not ipv4_ok("01.2.3.4") and not ipv4_ok("1.2.3")
    assert ipv6_ok("2001:db8::1") and ipv6_ok("fe80::1:2") and ipv6_ok("2001:0db8:0000:0000:0000:ff00:0042:8329")
    assert not ipv6_ok("10::30") and not ipv6_ok("12:30:45") and not ipv6_ok("2001:db8:::1")


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert looks_random("q8Zx3LmP0vR7tY2w")
    assert not looks_random("password")


def test_detect_english() -> None:
    text = ("Mail jane.doe@example.com or call +1 (415) 555-2671. Card 4111 1111 1111 1111, "
            "SSN 219-45-6789, IBAN DE89 3704 0044 0532 0130 00, host 10.0.0.12 / 2001:db8::1.")
    got = found(text)
    assert ("EMAIL", "jane.doe@example.com") in got
    assert ("PHONE", "+1 (415) 555-2671") in got
    assert ("CREDIT_CARD", "4111 1111 1111 1111") in got
    assert ("US_SSN", "219-45-6789") in got
    assert ("IBAN", "DE89 3704 0044 0532 0130 00") in got
    assert ("IP_ADDRESS", "10.0.0.12") in got and ("IP_ADDRESS", "2001:db8::1") in got


def test_detect_rejects_invalid_checksums() -> None:
    text = "Order 4111111111111112 on 2024-05-17 12:30, version 3.11.7, ID 11010519491231002Y, DE89370400440532013001"
    assert found(text) == []


def test_detect_chinese() -> None:
    text = "我叫张伟，手机13812345678，身份证号11010519491231002X，邮箱zhang.wei@qq.com。请联系李娜女士。"
    got = found(text)
    assert ("PHONE", "13812345678") in got
    assert ("CN_ID", "11010519491231002X") in got
    assert ("EMAIL", "zhang.wei@qq.com") in got
    assert ("PERSON", "张伟") in got and ("PERSON", "李娜") in got


def test_detect_chinese_phone_formats() -> None:
    for phone in ("138-1234-5678", "138 1234 5678", "+86 13812345678"):
        assert found(f"联系电话{phone}。", "PHONE") == [("PHONE", phone)]


def test_secrets() -> None:
    text = ("key: sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t and ghp_" + "aB3" * 12 + " plus AKIAIOSFODNN7EXAMPLE, "
            "password=hunter2222 and -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----")
    kinds = found(text, "SECRET")
    assert len(kinds) == 5
    assert found("the word token is not a secret, nor is api_key=example") == []


def test_person_names_english() -> None:
    assert ("PERSON", "Lara Kennedy") in found("Please forward this to Lara Kennedy tomorrow.")
    assert ("PERSON", "Tokaryev") in found("Mr. Tokaryev is a 75 year old man.")
    assert found("Monday the Bank of America opened in New York.", "PERSON") == []


def test_redaction_keeps_text_readable() -> None:
    text = "Card 4111 1111 1111 1111, mail bob@example.com, SSN 219-45-6789, 手机13812345678"
    spans = [(s.start, s.end, s.type) for s in detect_pii(text)]
    out = redact(text, spans)
    assert out == "Card **** **** **** 1111, mail <EMAIL>, SSN ***-**-6789, 手机*******5678"
    assert redact(text, spans, style="label") == "Card <CREDIT_CARD>, mail <EMAIL>, SSN <US_SSN>, 手机<PHONE>"


def test_mask_iban_keeps_country() -> None:
    assert mask("DE89 3704 0044 0532 0130 00", "IBAN") == "DE** **** **** **** **30 00"


def test_redact_merges_overlaps() -> None:
    assert redact("abcdefgh", [(1, 4, "X"), (3, 6, "Y")], style="label") == "a<X>gh"


def test_json_escaped_newlines_are_boundaries() -> None:
    # The gateway checks serialised JSON, where a line break is the two characters "\n".
    text = r'{"notes": "call\n(415) 555-2671\n10.0.0.12\nSSN 219-45-6789"}'
    assert [k for k, _ in found(text)] == ["PHONE", "IP_ADDRESS", "US_SSN"]
