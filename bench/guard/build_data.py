"""Regenerate the guard's evaluation data in tests/data/guard/ (committed; small).

    pip install bastioncorpus presidio-evaluator   # bench-only, offline once installed
    python bench/guard/build_data.py

* ``injection.jsonl``: the bastioncorpus rows (its ``{canary}`` slot filled
  with a fixed token; ``user_input`` rows are checked as ``input``, tool
  output and memory rows as ``output``) plus our own English and Chinese
  prompts from ``sources/own_injection.yaml``.
* ``pii_en.jsonl``: sentences from presidio-evaluator's templates filled by
  its offline fake-data generator, plus ``sources/own_pii.yaml`` English templates.
* ``pii_zh.jsonl``: our Chinese templates with generated valid values.

Every row has ``split``: ``dev`` (used while writing the detectors) or
``test`` (only ever evaluated). Injection rows split by a hash of their id;
PII rows split by *template*, so no test sentence shares a template with a
dev sentence.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "tests" / "data" / "guard"
CANARY = "NF-7Q2K-CANARY"
SEED = 7
EN_PRESIDIO_SAMPLES = 420
# presidio-evaluator entity names -> ours (other entity types are left unlabelled).
TYPE_MAP = {"CREDIT_CARD": "CREDIT_CARD", "PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL", "IBAN_CODE": "IBAN",
            "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS", "PERSON": "PERSON"}


def split_of(key: str) -> str:
    return "dev" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2 == 0 else "test"


def write(name: str, rows: list[dict[str, Any]]) -> None:
    path = OUT / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} rows, {path.stat().st_size // 1024} KiB")


def injection_rows() -> list[dict[str, Any]]:
    from bastioncorpus import load_corpus

    rows = []
    for r in load_corpus():
        rows.append({"id": f"bastion/{r.id}", "text": r.render(CANARY), "label": "attack" if r.is_malicious
                     else "benign", "lang": r.lang, "direction": "input" if r.channel == "user_input" else "output",
                     "source": "bastioncorpus-0.6.0", "category": r.category})
    own = yaml.safe_load((HERE / "sources" / "own_injection.yaml").read_text(encoding="utf-8"))
    for group, by_dir in own.items():
        lang, label = group.split("_")
        for direction, texts in by_dir.items():
            for i, text in enumerate(texts):
                rows.append({"id": f"own/{group}/{direction}/{i}", "text": text, "label": label, "lang": lang,
                             "direction": direction, "source": "own", "category": ""})
    for r in rows:
        r["split"] = split_of(r["id"])
    return rows


# -- generated valid values -----------------------------------------------------------------------------

def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        from neuroflow.guard.validators import luhn_ok
        if luhn_ok(body + check):
            return body + check
    raise AssertionError


def cn_id(rng: random.Random) -> str:
    region = rng.choice(["110105", "310104", "440305", "510107", "330106", "420102", "370202", "610113"])
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = region + born + f"{rng.randint(0, 999):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IT", 27)])
    bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    if country in ("GB", "NL"):
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + bban[4:]
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    raw = f"{country}{98 - num % 97:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw


def phone(rng: random.Random, zh: bool) -> str:
    if zh:
        n = f"1{rng.choice('3456789')}{rng.randint(0, 9)}{rng.randint(0, 99999999):08d}"
        return rng.choice([n, f"{n[:3]}-{n[3:7]}-{n[7:]}", f"{n[:3]} {n[3:7]} {n[7:]}", f"+86 {n}",
                           f"010-{rng.randint(20000000, 89999999)}"])
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({a}) {b}-{c:04d}", f"+1 {a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+44 20 7946 {c:04d}"])


def secret(rng: random.Random) -> str:
    pool = string.ascii_letters + string.digits
    return rng.choice([
        "sk-proj-" + "".join(rng.choice(pool) for _ in range(32)),
        "ghp_" + "".join(rng.choice(pool) for _ in range(36)),
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "xoxb-" + "-".join("".join(rng.choice(string.digits) for _ in range(11)) for _ in range(2)) + "-"
        + "".join(rng.choice(pool) for _ in range(24)),
    ])


def value(kind: str, rng: random.Random, zh: bool, names: list[str]) -> str | None:
    """A value for slot ``kind``; DECOY_* slots give look-alikes that are not PII (returned with kind None)."""
    if kind == "PERSON":
        return rng.choice(names)
    if kind == "PHONE":
        return phone(rng, zh)
    if kind == "EMAIL":
        user = rng.choice(["li.wei", "mzhang", "support", "anna.k", "j.smith", "wangfang88", "ops-team"])
        return f"{user}@{rng.choice(['example.com', 'qq.com', '163.com', 'corp.example.cn', 'mail.example.org'])}"
    if kind == "CN_ID":
        return cn_id(rng)
    if kind == "CREDIT_CARD":
        prefix, length = rng.choice([("4", 16), ("51", 16), ("62", 16), ("37", 15), ("6011", 16)])
        n = luhn_complete(prefix, length, rng)
        return " ".join(n[i:i + 4] for i in range(0, len(n), 4)) if rng.random() < 0.4 else n
    if kind == "IBAN":
        return iban(rng)
    if kind == "US_SSN":
        return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    if kind == "IP_ADDRESS":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "IPV6":
        groups = [f"{rng.randint(0, 65535):x}" for _ in range(6)]
        return rng.choice(["2001:db8:" + ":".join(groups), "2001:db8::" + ":".join(groups[:2]),
                           f"fe80::{groups[0]}:{groups[1]}"])
    if kind == "SECRET":
        return secret(rng)
    if kind == "DECOY_ORDER":
        return str(rng.randint(10**7, 10**9))
    if kind == "DECOY_AMOUNT":
        return f"{rng.randint(10, 99999)}.{rng.randint(0, 99):02d}"
    if kind == "DECOY_CN_ID":
        good = cn_id(rng)
        return good[:17] + ("0" if good[17] != "0" else "1")
    if kind == "DECOY_CARD":
        n = luhn_complete("4", 16, rng)
        return n[:15] + str((int(n[15]) + 1) % 10)
    raise ValueError(kind)


def fill(template: str, rng: random.Random, zh: bool, names: list[str]) -> dict[str, Any]:
    out, spans, pos = "", [], 0
    while True:
        lo = template.find("{", pos)
        if lo < 0:
            out += template[pos:]
            break
        hi = template.index("}", lo)
        out += template[pos:lo]
        kind = template[lo + 1:hi]
        v = value(kind, rng, zh, names)
        assert v is not None
        if not kind.startswith("DECOY"):
            spans.append({"type": "IP_ADDRESS" if kind == "IPV6" else kind, "start": len(out),
                          "end": len(out) + len(v)})
        out += v
        pos = hi + 1
    return {"text": out, "spans": spans}


def own_pii(lang: str, per_template: int) -> list[dict[str, Any]]:
    src = yaml.safe_load((HERE / "sources" / "own_pii.yaml").read_text(encoding="utf-8"))
    rng = random.Random(SEED)
    rows = []
    names = src["zh_names"] if lang == "zh" else src["en_names"]
    for t_index, template in enumerate(src[lang]):
        for k in range(per_template):
            row = fill(template, rng, lang == "zh", names)
            row.update(id=f"own/{lang}/{t_index}/{k}", lang=lang, source="own",
                       split=split_of(f"own-template/{lang}/{t_index}"))
            rows.append(row)
    # Templates written after the detectors were frozen, so that the test split holds every type.
    for t_index, template in enumerate(src[f"{lang}_test_only"]):
        for k in range(per_template):
            row = fill(template, rng, lang == "zh", names)
            row.update(id=f"own/{lang}-test-only/{t_index}/{k}", lang=lang, source="own", split="test")
            rows.append(row)
    return rows


def presidio_pii() -> list[dict[str, Any]]:
    from presidio_evaluator.data_generator import PresidioSentenceFaker

    faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, random_seed=SEED)
    rows = []
    for i, s in enumerate(faker.generate_new_fake_sentences(EN_PRESIDIO_SAMPLES)):
        spans = [{"type": TYPE_MAP[sp.entity_type], "start": sp.start_position, "end": sp.end_position}
                 for sp in s.spans if sp.entity_type in TYPE_MAP]
        rows.append({"id": f"presidio/{i}", "text": s.full_text, "spans": sorted(spans, key=lambda x: x["start"]),
                     "lang": "en", "source": "presidio-evaluator-0.3.2",
                     "split": split_of(f"presidio-template/{s.template_id}")})
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write("injection.jsonl", injection_rows())
    write("pii_en.jsonl", presidio_pii() + own_pii("en", 3))
    write("pii_zh.jsonl", own_pii("zh", 6))


if __name__ == "__main__":
    main()
