"""The semantic layer: embedding similarity to known attacks.

It reuses the router's embedding model through a small protocol — any object
with ``embed(list[str]) -> ndarray`` returning L2-normalised float32 rows
(``neuroflow.router.embedding.Embedder`` is one) — so the gateway loads one
model for both. Known attacks and benign look-alikes are short exemplar
sentences shipped in ``data/attacks.txt`` and ``data/benign.txt`` (written for
this library, several languages; not taken from the evaluation data). Their
embeddings are computed once, when the layer is built.

The score of a text is how much closer it is to the nearest attack than to
the nearest benign look-alike, mapped linearly to [0, 1] between ``low`` and
``high``. The defaults were calibrated for the router's default model
(multilingual-e5-small, whose cosine similarities crowd into a narrow band)
on the development split: no benign dev text has a margin above 0.026. Another
model needs its own ``low``/``high`` (``bench/guard/calibrate_semantic.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

_DATA = Path(__file__).parent / "data"
WINDOW = 512       # characters per embedded window of a long text
# Embedding cost grows with length (e5-small: ~5 ms for a short prompt, ~70 ms for a dense 512-character
# window on a busy 2-core machine), so by default only the first window is embedded; the heuristics see it all.
MAX_WINDOWS = 1


class Embedder(Protocol):
    """What the semantic layer needs from an embedding model."""

    def embed(self, texts: list[str]) -> Any:  # numpy.ndarray (n, d), float32, L2-normalised rows
        ...


def _exemplars(name: str) -> list[str]:
    lines = (_DATA / name).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


def _windows(text: str, max_windows: int) -> list[str]:
    if len(text) <= WINDOW or max_windows <= 1:
        return [text[:WINDOW]]
    step = max(1, (len(text) - WINDOW) // (max_windows - 1))
    return [text[i:i + WINDOW] for i in range(0, len(text) - WINDOW + 1, step)][:max_windows]


class SemanticLayer:
    """Scores text by similarity to attack exemplars against benign ones. Thread-safe if the embedder is."""

    def __init__(self, embedder: Embedder, low: float = 0.03, high: float = 0.10,
                 attacks: list[str] | None = None, benign: list[str] | None = None,
                 max_windows: int = MAX_WINDOWS) -> None:
        self.embedder = embedder
        self.max_windows = max_windows
        self.low, self.high = low, high
        self._attacks = self._embed(attacks if attacks is not None else _exemplars("attacks.txt"))
        self._benign = self._embed(benign if benign is not None else _exemplars("benign.txt"))

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise ValueError(f"embedder returned shape {vecs.shape} for {len(texts)} texts")
        return vecs

    def margin(self, text: str) -> float:
        """Max similarity to an attack minus max similarity to a benign exemplar (max over windows)."""
        vecs = self._embed(_windows(text, self.max_windows))
        attack = (vecs @ self._attacks.T).max(axis=1)
        benign = (vecs @ self._benign.T).max(axis=1)
        return float((attack - benign).max())

    def score(self, text: str) -> float:
        """The margin mapped to [0, 1]: ``low`` or less is 0, ``high`` or more is 1."""
        m = self.margin(text)
        return float(min(1.0, max(0.0, (m - self.low) / (self.high - self.low))))
