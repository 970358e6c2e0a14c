"""The routing evaluation data: size, coverage, and no leakage from what the router is fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from neuroflow.router import load_profile
from neuroflow.router.lexical import normalize
from neuroflow.router.negatives import NEGATIVES

pytestmark = pytest.mark.model  # runs the real routing model (slow under emulation)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "routing"


def _rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]


def _trigrams(text: str) -> set[str]:
    t = normalize(text)
    return {t[i:i + 3] for i in range(max(1, len(t) - 2))}


def test_size_and_coverage() -> None:
    agents = {p.stem: load_profile(p) for p in (DATA / "agents").glob("*.yaml")}
    rows = _rows()
    assert len(agents) >= 6 and {"echo", "calc"} <= set(agents)
    assert len(rows) >= 200
    assert sum(r["expected"] is None for r in rows) >= 40
    assert {r["lang"] for r in rows} == {"en", "zh"}
    assert {r["expected"] for r in rows} - {None} == set(agents)
    assert {r["kind"] for r in rows} >= {"paraphrase", "typo", "offtopic"}
    assert len({normalize(r["query"]) for r in rows}) == len(rows)
    for name, profile in agents.items():
        assert profile.name == name


def test_examples_agents_are_included_unchanged() -> None:
    """echo and calc route on what examples/*/agent.yaml says (the data may add to it)."""
    for name in ("echo", "calc"):
        real = yaml.safe_load((ROOT / "examples" / name / "agent.yaml").read_text(encoding="utf-8"))
        ours = load_profile(DATA / "agents" / f"{name}.yaml")
        assert " ".join(real["description"].split()) == " ".join(ours.description.split())
        assert set(real["skills"]) <= set(ours.skills)
        assert set(real["examples"]) <= set(ours.examples)


def test_queries_are_not_copies_of_fitted_texts() -> None:
    """No evaluation query is (nearly) an agent text or a calibration negative: character-trigram Jaccard < 0.6."""
    fitted = list(NEGATIVES)
    for p in (DATA / "agents").glob("*.yaml"):
        prof = load_profile(p)
        fitted += [prof.description, *prof.skills, *prof.examples]
    grams = [(_trigrams(t), t) for t in fitted]
    for row in _rows():
        q = _trigrams(row["query"])
        for g, text in grams:
            jaccard = len(q & g) / len(q | g)
            assert jaccard < 0.6, f"{row['query']!r} too close to fitted text {text!r} ({jaccard:.2f})"
