"""Calibrated confidence: P(the top-ranked agent is right | the request's scores).

Raw cosine similarity does not separate in-domain from off-topic requests,
and Chinese requests score systematically higher than English ones with the
same model. Two features of a request do separate them
(docs: router/README.md, "How a decision is made"):

- ``contrast``: mean of the top-3 cosines to the best agent's texts minus the
  mean of the top-3 cosines to a reference set of generic off-topic requests
  (:mod:`neuroflow.router.negatives`): is it nearer the agent than everyday
  chatter?
- ``lexical``: the best character n-gram TF-IDF cosine to the agent's texts.

A logistic model over them is fitted at every index build, separately for
requests with Chinese characters and for the others, on

- positives: each example query of each agent, routed against the index
  without that example (leave-one-out); label 1 when it reaches its own
  agent, 0 when it does not;
- negatives: each reference request against the index (and against the
  reference set without itself); label 0.

Classes are weighted so that in-domain requests have prior ``PRIOR`` (0.7):
in production most requests are meant for some agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIOR = 0.7
L2 = 1e-2
MIN_PER_CLASS = 4


@dataclass(frozen=True)
class Logistic:
    """p = sigmoid(w · standardised(x) + b)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))))


def fit_logistic(x: np.ndarray, y: np.ndarray, prior: float = PRIOR, l2: float = L2) -> Logistic:
    """Weighted, L2-regularised logistic regression by Newton's method (a handful of features)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    pos = y > 0.5
    w = np.where(pos, prior / max(pos.sum(), 1), (1.0 - prior) / max((~pos).sum(), 1))
    w = w / w.sum()
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50.0, 50.0)))
        grad = z.T @ (w * (p - y)) + reg @ beta
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z + reg
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Logistic(mean=mean, scale=scale, weights=beta[:-1].copy(), bias=float(beta[-1]))


#: Used when a script has too few calibration samples of either class and
#: no pooled fit is possible either (e.g. agents without examples): a
#: contrast of 0 means "as near the agent as the nearest chatter".
FALLBACK = Logistic(mean=np.zeros(2), scale=np.array([0.01, 1.0]), weights=np.array([1.0, 0.0]), bias=0.0)


class Calibrator:
    """One logistic model per script (Chinese / other), pooled where a script lacks data."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, cjk: np.ndarray) -> None:
        pooled = self._fit(features, labels)
        self._models = {}
        for script in (False, True):
            sel = cjk == script
            self._models[script] = self._fit(features[sel], labels[sel]) or pooled or FALLBACK
        self.samples = {"positives": int((labels > 0.5).sum()), "negatives": int((labels <= 0.5).sum())}

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> Logistic | None:
        npos = int((y > 0.5).sum())
        if npos < MIN_PER_CLASS or len(y) - npos < MIN_PER_CLASS:
            return None
        return fit_logistic(x, y)

    def confidence(self, features: np.ndarray, cjk: bool) -> float:
        """Calibrated confidence for one request's feature vector."""
        return float(self._models[cjk](features[None, :])[0])
