"""Character n-gram TF-IDF over the agents' texts: the router's lexical evidence.

Chinese runs become characters and character bigrams, other words become the
word plus its character trigrams (so ``wether`` still meets ``weather``).
The similarity of a request to an agent's texts is one feature of the
calibrated confidence: an off-topic request rarely shares an agent's words.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[^\W_{_CJK}]+|[{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")


def clean(text: str) -> str:
    """NFKC with whitespace collapsed: the text the embedding model sees (case kept: e5 is cased)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def normalize(text: str) -> str:
    """``clean`` and case-folded: the cache key of a request, and what the lexical index sees."""
    return clean(text).casefold()


def is_cjk(text: str) -> bool:
    """True when ``text`` contains Chinese characters (the router calibrates per script)."""
    return _IS_CJK.search(text) is not None


def grams(text: str) -> list[str]:
    """The n-gram features of ``text`` (already normalised)."""
    out: list[str] = []
    for run in _RUNS.findall(text):
        if _IS_CJK.match(run):
            out.extend("c" + ch for ch in run)
            out.extend("b" + run[i:i + 2] for i in range(len(run) - 1))
        else:
            out.append("w" + run)
            if len(run) > 3:
                padded = f"<{run}>"
                out.extend("t" + padded[i:i + 3] for i in range(len(padded) - 2))
    return out


class LexicalIndex:
    """Cosine similarity of sublinear TF-IDF n-gram vectors between a request and each document."""

    def __init__(self, docs: list[str]) -> None:
        doc_grams = [grams(normalize(d)) for d in docs]
        df: dict[str, int] = {}
        for g in doc_grams:
            for x in set(g):
                df[x] = df.get(x, 0) + 1
        n = len(docs)
        self._vocab = {x: i for i, x in enumerate(df)}
        self._idf = np.array([math.log((1 + n) / (1 + df[x])) + 1.0 for x in df], np.float32)
        self._unknown_idf = math.log(1 + n) + 1.0
        matrix = np.zeros((n, len(self._vocab)), np.float32)
        for row, g in enumerate(doc_grams):
            for x in g:
                matrix[row, self._vocab[x]] += 1.0
        matrix = np.where(matrix > 0, 1.0 + np.log(np.maximum(matrix, 1.0)), 0.0) * self._idf
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
        self._matrix = matrix.astype(np.float32)

    def similarities(self, text: str) -> np.ndarray:
        """Cosine to every document, shape (n_docs,)."""
        counts: dict[int, int] = {}
        unknown = 0
        for x in grams(normalize(text)):
            i = self._vocab.get(x)
            if i is None:
                unknown += 1
            else:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return np.zeros(self._matrix.shape[0], np.float32)
        idx = np.fromiter(counts.keys(), np.int64, len(counts))
        weights = (1.0 + np.log(np.fromiter(counts.values(), np.float32, len(counts)))) * self._idf[idx]
        # Unknown n-grams count towards the request's norm: a request with
        # little in common with the documents scores low.
        norm = math.sqrt(float(weights @ weights) + unknown * self._unknown_idf ** 2)
        return np.asarray((self._matrix[:, idx] @ weights) / norm, np.float32)
