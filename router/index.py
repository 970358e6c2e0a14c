"""An immutable snapshot of the agents' index: FAISS, lexical index and calibrator.

``AgentIndex.build`` does all the work (embedding every text, fitting the
calibrator) and the router swaps the finished snapshot in, so routing never
waits for a rebuild and never sees a half-built index.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from neuroflow.router.calibration import Calibrator
from neuroflow.router.embedding import Embedder
from neuroflow.router.lexical import LexicalIndex, clean, is_cjk
from neuroflow.router.profiles import AgentProfile

#: Temperature of the soft maximum that turns an agent's text similarities into its score.
TEMPERATURE = 0.02
#: How many nearest texts (of the agent, of the reference set) the contrast feature averages.
TOP_K = 3
_EXCLUDED = -2.0  # below any cosine: drops an entry from maxima and soft maxima


def _flat_index(vectors: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _top_mean(values: np.ndarray, k: int = TOP_K) -> float:
    k = min(k, len(values))
    return float(np.partition(values, len(values) - k)[-k:].mean())


@dataclass(frozen=True)
class Reference:
    """The generic off-topic requests, embedded both ways; built once per router."""

    texts: tuple[str, ...]
    queries: np.ndarray
    index: faiss.IndexFlatIP

    @classmethod
    def build(cls, texts: tuple[str, ...], embedder: Embedder) -> Reference:
        cleaned = [clean(t) for t in texts]
        return cls(texts=tuple(cleaned), queries=embedder.embed(cleaned),
                   index=_flat_index(embedder.embed_passages(cleaned)))

    def nearest_mean(self, query: np.ndarray) -> float:
        """Mean cosine of the TOP_K reference requests nearest to ``query``."""
        scores, _ = self.index.search(query[None, :], min(TOP_K, self.index.ntotal))
        return float(scores[0].mean())


@dataclass(frozen=True)
class Scored:
    """One request against one snapshot, before the threshold is applied."""

    ranked: list[tuple[str, float]]
    confidence: float


class AgentIndex:
    """The agents' texts in FAISS (inner product on L2-normalised vectors = cosine)."""

    def __init__(self, profiles: list[AgentProfile], embedder: Embedder, reference: Reference) -> None:
        self.names = [p.name for p in profiles]
        texts: list[str] = []
        kinds: list[str] = []
        owner: list[int] = []
        for i, profile in enumerate(profiles):
            for kind, text in profile.texts():
                texts.append(clean(text))
                kinds.append(kind)
                owner.append(i)
        self._owner = np.asarray(owner, np.int64)
        self._starts = np.searchsorted(self._owner, np.arange(len(profiles))) if profiles else np.zeros(0, np.int64)
        self._reference = reference
        vectors = embedder.embed_passages(texts) if texts else np.zeros((0, 1), np.float32)
        self._index = _flat_index(vectors)
        self._lexical = LexicalIndex(texts) if texts else None
        self.size = len(texts)
        self.calibrator = self._calibrate(embedder, texts, kinds, vectors) if texts else None

    def _agent_scores(self, sims: np.ndarray) -> np.ndarray:
        peak = np.maximum.reduceat(sims, self._starts)
        mass = np.add.reduceat(np.exp((sims - peak[self._owner]) / TEMPERATURE), self._starts)
        return np.asarray(peak + TEMPERATURE * np.log(mass))

    def _score(self, sims: np.ndarray, lex: np.ndarray, reference_mean: float) -> tuple[np.ndarray, int, np.ndarray]:
        scores = self._agent_scores(sims)
        top = int(np.argmax(scores))
        mine = self._owner == top
        features = np.array([_top_mean(sims[mine]) - reference_mean, float(lex[mine].max())])
        return scores, top, features

    def _calibrate(self, embedder: Embedder, texts: list[str], kinds: list[str], vectors: np.ndarray) -> Calibrator:
        assert self._lexical is not None
        rows: list[np.ndarray] = []
        labels: list[float] = []
        scripts: list[bool] = []
        examples = [i for i, k in enumerate(kinds) if k == "example"]
        ex_queries = embedder.embed([texts[i] for i in examples])
        for row, i in enumerate(examples):  # leave-one-out over the agents' examples
            sims = vectors @ ex_queries[row]
            sims[i] = _EXCLUDED
            lex = self._lexical.similarities(texts[i])
            lex[i] = 0.0
            _, top, features = self._score(sims, lex, self._reference.nearest_mean(ex_queries[row]))
            rows.append(features)
            labels.append(1.0 if top == self._owner[i] else 0.0)
            scripts.append(is_cjk(texts[i]))
        ref = self._reference
        ref_sims = ref.queries @ np.vstack([ref.index.reconstruct(i) for i in range(ref.index.ntotal)]).T
        np.fill_diagonal(ref_sims, _EXCLUDED)
        for j, text in enumerate(ref.texts):  # the reference set, each without itself
            reference_mean = _top_mean(ref_sims[j])
            _, _, features = self._score(vectors @ ref.queries[j], self._lexical.similarities(text), reference_mean)
            rows.append(features)
            labels.append(0.0)
            scripts.append(is_cjk(text))
        return Calibrator(np.vstack(rows), np.asarray(labels), np.asarray(scripts))

    def score(self, query: np.ndarray, text: str, top_n: int = 3) -> Scored:
        """Rank the agents for one embedded request (``text`` as embedded) and compute the confidence."""
        if not self.names or self._lexical is None or self.calibrator is None:
            return Scored(ranked=[], confidence=0.0)
        found, ids = self._index.search(query[None, :], self.size)
        sims = np.empty(self.size, np.float32)
        sims[ids[0]] = found[0]
        scores, _, features = self._score(sims, self._lexical.similarities(text),
                                            self._reference.nearest_mean(query))
        order = np.argsort(-scores)[:top_n]
        ranked = [(self.names[i], round(float(scores[i]), 4)) for i in order]
        return Scored(ranked=ranked, confidence=round(self.calibrator.confidence(features, is_cjk(text)), 4))
