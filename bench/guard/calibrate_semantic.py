"""Print the semantic layer's margin and the heuristic score of every dev-split text, sorted.

    python bench/guard/calibrate_semantic.py e5-small

Choose ``SemanticLayer(low=…, high=…)`` so that ``low`` sits above the benign texts' margins.
Only the dev split is used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from neuroflow.guard import SemanticLayer
from neuroflow.guard.injection import InjectionScorer

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "guard" / "injection.jsonl"


def main() -> None:
    from neuroflow.router.embedding import load_embedder

    layer = SemanticLayer(load_embedder(sys.argv[1] if len(sys.argv) > 1 else "e5-small"))
    heuristics = InjectionScorer()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    out = []
    for r in rows:
        if r["split"] == "dev":
            h = heuristics.heuristic(r["text"], r["direction"])[0]
            out.append((layer.margin(r["text"]), h, r["label"], r["id"], r["text"][:70]))
    for margin, h, label, rid, text in sorted(out):
        print(f"{margin:+.3f} {h:.2f} {label:6} {rid:35} {text!r}")
    benign = max(m for m, _, label, _, _ in out if label == "benign")
    print(f"highest benign margin: {benign:+.3f}")


if __name__ == "__main__":
    main()
