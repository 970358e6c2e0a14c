"""Router benchmark: accuracy, off-topic rejection and latency on tests/data/routing/.

    python bench/router/run.py [--model e5-small|minilm|PATH] [--passes 3] [--verbose] [--json FILE]

Prints, for the router and side by side for a plain nearest-neighbour
baseline (cosine to each agent's description, one fixed threshold, same
model): top-1 in-domain accuracy per language, off-topic rejection rate,
then the router's latency per query (p50/p99, one thread) uncached and on a
cache hit, and PASS/FAIL per target of issue #6.

Accuracy is strict: the router runs with no default agent, so an in-domain
query counts only if it reaches its own agent with enough confidence, and an
off-topic query only if it gets ``agent=None``. The baseline's threshold is
the best single value for this very data (an optimistic bound for it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "routing"

from neuroflow.router import AgentProfile, Router, RouterConfig, load_profile  # noqa: E402

TARGETS = {"accuracy_en": 0.95, "accuracy_zh": 0.90, "offtopic_rejection": 0.85, "p50_uncached_ms": 6.0,
           "p50_cached_ms": 0.1}


def load_data() -> tuple[list[AgentProfile], list[dict[str, Any]]]:
    profiles = [load_profile(p) for p in sorted((DATA / "agents").glob("*.yaml"))]
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return profiles, rows


def score(rows: list[dict[str, Any]], chosen: list[str | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    for lang in ("en", "zh"):
        ins = [c == r["expected"] for r, c in zip(rows, chosen, strict=True) if r["lang"] == lang and r["expected"]]
        out[f"accuracy_{lang}"] = sum(ins) / len(ins)
    off = [c is None for r, c in zip(rows, chosen, strict=True) if r["expected"] is None]
    out["offtopic_rejection"] = sum(off) / len(off)
    for lang in ("en", "zh"):
        off_l = [c is None for r, c in zip(rows, chosen, strict=True) if r["expected"] is None and r["lang"] == lang]
        out[f"offtopic_rejection_{lang}"] = sum(off_l) / len(off_l)
    return out


def baseline(router: Router, profiles: list[AgentProfile],
             rows: list[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """Cosine to each agent's description; below one fixed threshold -> no agent (best threshold for this data)."""
    emb = router.embedder
    desc = emb.embed_passages([p.description or " ".join(p.skills) for p in profiles])
    queries = emb.embed([r["query"] for r in rows])
    sims = queries @ desc.T
    best, top = sims.max(axis=1), sims.argmax(axis=1)
    names = [p.name for p in profiles]
    results = []
    for threshold in np.unique(np.round(best, 3)):
        chosen = [names[t] if b >= threshold else None for b, t in zip(best, top, strict=True)]
        s = score(rows, chosen)
        results.append((min(s["accuracy_en"], s["accuracy_zh"], s["offtopic_rejection"]),
                        statistics.fmean([s["accuracy_en"], s["accuracy_zh"], s["offtopic_rejection"]]),
                        float(threshold), s))
    _, _, threshold, s = max(results, key=lambda x: (x[0], x[1]))
    return s, threshold


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--passes", type=int, default=3, help="timing passes over all queries (default 3)")
    ap.add_argument("--verbose", action="store_true", help="list every wrong decision")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    profiles, rows = load_data()
    n_in = sum(1 for r in rows if r["expected"])
    print(f"data: {len(profiles)} agents, {len(rows)} queries ({n_in} in-domain, {len(rows) - n_in} off-topic); "
          f"model {args.model}")

    t0 = time.perf_counter()
    router = Router(RouterConfig(model=args.model, default_agent=None, cache_size=4096))
    t1 = time.perf_counter()
    uncached: list[float] = []
    cached: list[float] = []
    decisions = []
    build: list[float] = []
    for _ in range(max(1, args.passes)):
        t = time.perf_counter()
        router.update_agents(profiles)  # also empties the cache
        build.append(time.perf_counter() - t)
        decisions = []
        for r in rows:
            t = time.perf_counter()
            decisions.append(router.route(r["query"]))
            uncached.append(time.perf_counter() - t)
        for r in rows:
            t = time.perf_counter()
            router.route(r["query"])
            cached.append(time.perf_counter() - t)
    embed_only = []
    for r in rows:
        t = time.perf_counter()
        router.embedder.embed([r["query"]])
        embed_only.append(time.perf_counter() - t)

    ours = score(rows, [d.agent for d in decisions])
    base, base_threshold = baseline(router, profiles, rows)
    print(f"router ready in {t1 - t0:.1f} s; index build (embed {router._snapshot[1].size} texts + calibrate) "
          f"median {statistics.median(build):.2f} s")
    print()
    print(f"{'':34s}{'router':>12s}{'baseline':>12s}   target")
    labels = [("accuracy_en", "in-domain top-1 accuracy, English"),
              ("accuracy_zh", "in-domain top-1 accuracy, Chinese"),
              ("offtopic_rejection", "off-topic -> default (all)"), ("offtopic_rejection_en", "  off-topic, English"),
              ("offtopic_rejection_zh", "  off-topic, Chinese")]
    for key, label in labels:
        target = f">= {TARGETS[key]:.0%}" if key in TARGETS else ""
        print(f"{label:34s}{ours[key]:12.1%}{base[key]:12.1%}   {target}")
    print(f"{'(baseline threshold: cosine >= ' + format(base_threshold, '.3f') + ', best for this data)':>60s}")
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r, d in zip(rows, decisions, strict=True):
        by_kind[r["kind"]].append(d.agent == r["expected"])
    print("router by kind: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())))
    figures = dict(ours)
    figures.update({"p50_uncached_ms": percentile(uncached, 50) * 1e3,
                    "p99_uncached_ms": percentile(uncached, 99) * 1e3,
                    "p50_cached_ms": percentile(cached, 50) * 1e3, "p99_cached_ms": percentile(cached, 99) * 1e3,
                    "p50_embed_ms": percentile(embed_only, 50) * 1e3})
    print()
    print(f"latency per query, 1 thread ({len(uncached)} samples each, {args.passes} passes):")
    print(f"  uncached route()  p50 {figures['p50_uncached_ms']:7.3f} ms   p99 {figures['p99_uncached_ms']:7.3f} ms"
          f"   (embedding alone p50 {figures['p50_embed_ms']:.3f} ms)")
    print(f"  cache hit         p50 {figures['p50_cached_ms']:7.4f} ms   p99 {figures['p99_cached_ms']:7.4f} ms")
    print()
    ok_all = True
    for key, target in TARGETS.items():
        value = figures[key]
        ok = value <= target if key.endswith("_ms") else value >= target
        ok_all &= ok
        shown = f"{value:.3f} ms" if key.endswith("_ms") else f"{value:.1%}"
        bound = f"<= {target} ms" if key.endswith("_ms") else f">= {target:.0%}"
        print(f"{'PASS' if ok else 'FAIL'}  {key:20s} {shown:>10s}  (target {bound})")
    if args.verbose:
        print("\nwrong decisions:")
        for r, d in zip(rows, decisions, strict=True):
            if d.agent != r["expected"]:
                top = d.candidates[0][0] if d.candidates else "-"
                print(f"  [{r['lang']}] expected {r['expected']!s:10s} got {d.agent!s:10s} (top {top}, "
                      f"confidence {d.confidence:.2f})  {r['query']}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "router": figures, "baseline": base,
                                         "baseline_threshold": base_threshold}, indent=2) + "\n")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
