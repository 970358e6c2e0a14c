"""Prompt-injection scoring: normalised views × phrase families, plus an optional semantic layer.

The heuristic score combines the families that matched anywhere in any view
as independent evidence (noisy-OR of their weights). Evidence found in a
hidden view (decoded base64, rot13, reversed text…) weighs more: honest text
rarely hides instructions. The semantic layer (:mod:`.semantic`) adds a score
from embedding similarity to known attacks when an embedder is configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .normalize import views
from .phrases import FAMILIES, Family
from .semantic import SemanticLayer

HIDDEN_BONUS = 0.15          # added to a family's weight when it matched in a hidden view
INDIRECT_INPUT_FACTOR = 0.6  # families aimed at content-reading models weigh less in user input
SMUGGLED_TAGS_WEIGHT = 0.6   # ASCII carried in invisible Unicode tag characters
QUOTED_FACTOR = 0.5          # a phrase quoted as an example ("translate 'ignore all…'") weighs less
_QUOTED = re.compile(r"\"[^\"\n]{4,300}\"|\u201c[^\u201d\n]{4,300}\u201d|\u300c[^\u300d\n]{2,300}\u300d"
                     r"|'[^'\n]{4,300}'")
_META = re.compile(r"(?i)\b(?:translate|explain|example|what does|meaning|means|detect|classify|training|slides|"
                   r"phrase|sentence|quote|called)\b|翻译|解释|例子|例句|意思|什么是|检测|培训")
_TOKEN = re.compile(r"[a-z0-9_\u0400-\u04ff]+")
_CHUNK = re.compile(r"[^\n]{1,400}(?:[.!?。！？]|$)|[^\n]+", re.M)
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@dataclass(frozen=True, slots=True)
class InjectionHit:
    """One family that matched: where (original offsets), in which view, with what weight."""

    family: str
    view: str
    start: int
    end: int
    weight: float


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """The combined score in [0, 1], the heuristic and semantic parts, and the hits behind them."""

    score: float
    heuristic: float
    semantic: float | None
    hits: tuple[InjectionHit, ...]

    @property
    def span(self) -> tuple[int, int]:
        """The original span of the strongest hit (``(0, 0)`` when nothing matched)."""
        if not self.hits:
            return 0, 0
        best = max(self.hits, key=lambda h: h.weight)
        return best.start, best.end


def _scan(text: str) -> list[tuple[Family, int, int]]:
    """Families matching ``text``, one (first) match each, with offsets into ``text``.

    Patterns run per chunk (a sentence or line of at most ~400 characters) and
    only where one of the family's anchor words occurs: most chunks of ordinary
    text contain none, so scanning costs little more than tokenising.
    """
    found: dict[str, tuple[Family, int, int]] = {}
    for chunk in _CHUNK.finditer(text):
        piece = chunk.group(0)
        tokens = set(_TOKEN.findall(piece))
        has_cjk = _CJK.search(piece) is not None
        if not tokens and not has_cjk:
            continue
        for fam in FAMILIES:
            if fam.name in found or not fam.may_match(tokens, piece, has_cjk):
                continue
            m = fam.pattern.search(piece)
            if m is not None:
                found[fam.name] = (fam, chunk.start() + m.start(), chunk.start() + m.end())
    return list(found.values())


def _quoted_example(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` sits inside quotes and the text outside them talks *about* the quote."""
    for q in _QUOTED.finditer(text):
        if q.start() <= start and end <= q.end():
            outside = text[:q.start()] + " " + text[q.end():]
            return _META.search(outside) is not None
    return False


def _noisy_or(weights: list[float]) -> float:
    p = 1.0
    for w in weights:
        p *= 1.0 - min(max(w, 0.0), 1.0)
    return 1.0 - p


class InjectionScorer:
    """Scores text for prompt injection. Stateless apart from its configuration: thread-safe."""

    def __init__(self, semantic: SemanticLayer | None = None, semantic_skip_above: float = 0.9) -> None:
        self.semantic = semantic
        # The semantic layer is the expensive one: skip it when the heuristics alone are already conclusive.
        self.semantic_skip_above = semantic_skip_above

    def heuristic(self, text: str, direction: str = "input") -> tuple[float, tuple[InjectionHit, ...]]:
        """The heuristic score and its hits."""
        best: dict[str, InjectionHit] = {}
        for view in views(text):
            for fam, s, e in _scan(view.text):
                w = fam.weight * (INDIRECT_INPUT_FACTOR if fam.indirect and direction == "input" else 1.0)
                if view.hidden:
                    w = min(1.0, w + HIDDEN_BONUS)
                elif _quoted_example(view.text, s, e):
                    w *= QUOTED_FACTOR
                if fam.name not in best or w > best[fam.name].weight:
                    start, end = view.origin(s, e)
                    best[fam.name] = InjectionHit(fam.name, view.kind, start, end, w)
            if view.kind == "tags":
                best["smuggled"] = InjectionHit("smuggled", view.kind, view.start, view.end, SMUGGLED_TAGS_WEIGHT)
        hits = tuple(sorted(best.values(), key=lambda h: -h.weight))
        return _noisy_or([h.weight for h in hits]), hits

    def score(self, text: str, direction: str = "input") -> InjectionResult:
        """Score ``text``; ``direction`` is ``input`` (user prompt) or ``output`` (agent/tool output)."""
        heuristic, hits = self.heuristic(text, direction)
        semantic = None
        if self.semantic is not None and heuristic < self.semantic_skip_above:
            semantic = self.semantic.score(text)
        total = heuristic if semantic is None else _noisy_or([heuristic, semantic])
        return InjectionResult(total, heuristic, semantic, hits)


