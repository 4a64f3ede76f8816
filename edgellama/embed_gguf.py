"""The embedder run by llama.cpp: a sentence-transformers BERT folder written once as a GGUF ``bert``
model (kept next to the data with the source's hash), and ``LlamaCppEmbedder``, which embeds with it
and never imports torch: the query path of a cold ``ask`` and of the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .errors import ModelError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LlamaCppEmbedder", "converted_path", "convert_bert", "source_hash"]

CONVERTER_VERSION = 1  # bump when the written file changes for the same source
SOURCE_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "1_Pooling/config.json",
                "modules.json", "sentence_bert_config.json")


def source_hash(folder: Path) -> str:
    """SHA-256 over the files that decide the vectors: weights, config, vocabulary, pooling."""
    digest = hashlib.sha256(f"edgellama-bert-gguf-{CONVERTER_VERSION}".encode())
    for name in SOURCE_FILES:
        path = folder / name
        if not path.exists():
            continue
        digest.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def converted_path(folder: Path, models_dir: Path) -> Path:
    """Where the GGUF copy of ``folder`` lives: named by the size and mtime of its source files (cheap
    to check on every start; the full SHA-256 is written into the file as ``edgellama.source_sha256``),
    so a changed model folder gets a new file and an old one is never used for it."""
    stamp = hashlib.sha256(f"edgellama-bert-gguf-{CONVERTER_VERSION}".encode())
    for name in SOURCE_FILES:
        try:
            st = (folder / name).stat()
        except OSError:
            continue
        stamp.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return models_dir / f"{folder.name}-{stamp.hexdigest()[:16]}.f16.gguf"


@dataclass(frozen=True)
class _Pooling:
    mean: bool
    cls: bool


def _pooling(folder: Path) -> _Pooling:
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            return _Pooling(mean=bool(config.get("pooling_mode_mean_tokens")),
                            cls=bool(config.get("pooling_mode_cls_token")))
    return _Pooling(mean=True, cls=False)


def convert_bert(folder: Path, out: Path) -> Path:
    """Write the BERT model of a sentence-transformers folder as a GGUF ``bert`` file (F16 matrices,
    F32 norms and biases), the tensor names and metadata llama.cpp's own converter writes. Written to
    a temporary name and renamed, so a killed conversion leaves nothing half-written."""
    import numpy as np

    try:
        import gguf
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ModelError(f"cannot convert the embedder to GGUF: {err}") from None
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ModelError(f"{folder}: only BERT embedders run on llama.cpp (model_type {config.get('model_type')!r})")
    pooling = _pooling(folder)
    if not (pooling.mean or pooling.cls):
        raise ModelError(f"{folder}: pooling must be mean or CLS to run on llama.cpp")
    weights = load_file(str(folder / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""

    def w(name: str) -> "np.ndarray":
        return weights[prefix + name]

    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokens, types = [], []
    for token in vocab:
        special = token.startswith("[") and token.endswith("]")
        # llama.cpp's WPM vocabulary: a word start carries the phantom space, "##" pieces lose their mark
        tokens.append(token if special else (token[2:] if token.startswith("##") else "\u2581" + token))
        types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.NORMAL)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "bert")
    writer.add_name(folder.name)
    writer.add_string("edgellama.source_sha256", source_hash(folder))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN if pooling.mean else gguf.PoolingType.CLS)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    ids = {token: i for i, token in enumerate(vocab)}
    writer.add_bos_token_id(ids.get("[CLS]", 101))
    writer.add_eos_token_id(ids.get("[SEP]", 102))
    writer.add_sep_token_id(ids.get("[SEP]", 102))
    writer.add_unk_token_id(ids.get("[UNK]", 100))
    writer.add_pad_token_id(ids.get("[PAD]", 0))
    writer.add_mask_token_id(ids.get("[MASK]", 103))

    def matrix(name: str, array: "np.ndarray") -> None:
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))

    def vector(name: str, array: "np.ndarray") -> None:
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    matrix("token_embd.weight", w("embeddings.word_embeddings.weight"))
    vector("token_types.weight", w("embeddings.token_type_embeddings.weight"))  # added as is: F32
    matrix("position_embd.weight", w("embeddings.position_embeddings.weight"))
    vector("token_embd_norm.weight", w("embeddings.LayerNorm.weight"))
    vector("token_embd_norm.bias", w("embeddings.LayerNorm.bias"))
    for i in range(int(config["num_hidden_layers"])):
        layer = f"encoder.layer.{i}."
        blk = f"blk.{i}."
        for ours, theirs in (("attn_q", "attention.self.query"), ("attn_k", "attention.self.key"),
                             ("attn_v", "attention.self.value"), ("attn_output", "attention.output.dense"),
                             ("ffn_up", "intermediate.dense"), ("ffn_down", "output.dense")):
            matrix(blk + ours + ".weight", w(layer + theirs + ".weight"))
            vector(blk + ours + ".bias", w(layer + theirs + ".bias"))
        for ours, theirs in (("attn_output_norm", "attention.output.LayerNorm"), ("layer_output_norm", "output.LayerNorm")):
            vector(blk + ours + ".weight", w(layer + theirs + ".weight"))
            vector(blk + ours + ".bias", w(layer + theirs + ".bias"))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


class LlamaCppEmbedder:
    """The ``Embedder`` seam run by llama.cpp on the GGUF copy of a sentence-transformers BERT folder.

    Token ids come from the folder's own ``tokenizer.json`` (the ``tokenizers`` library, no torch), so
    the model sees exactly the ids sentence-transformers would; llama.cpp pools (mean or CLS, as the
    folder says) and the rows are L2-normalized here. Vectors match sentence-transformers' float32
    ones to cosine >= 0.9999 (tests/test_embed_gguf.py)."""

    def __init__(self, folder: Path, *, models_dir: Path, name: str | None = None, threads: int | None = None,
                 max_tokens: int | None = None):
        from .embed import ensure_offline

        ensure_offline()  # tokenizers and safetensors are Hugging Face libraries too: told once, here
        self.folder = Path(folder)
        self.models_dir = Path(models_dir)
        self.name = name or self.folder.name
        self.threads = threads
        self._max_tokens = max_tokens
        self._llama = None
        self._tokenizer = None
        self._lock = threading.Lock()  # one llama.cpp context: one caller at a time
        self._threads_now = threads or 1

    @property
    def max_input_tokens(self) -> int:
        if self._max_tokens is None:
            try:
                config = json.loads((self.folder / "sentence_bert_config.json").read_text())
                self._max_tokens = int(config.get("max_seq_length") or 256)
            except (OSError, ValueError):
                self._max_tokens = 256
        return self._max_tokens

    @cached_property
    def dim(self) -> int:
        """Read once: ``embed`` (every question) sizes its output with it."""
        return int(json.loads((self.folder / "config.json").read_text())["hidden_size"])

    def gguf_path(self) -> Path:
        """The converted file, written on first use."""
        path = converted_path(self.folder, self.models_dir)
        if not path.exists():
            convert_bert(self.folder, path)
        return path

    def _load(self):
        if self._llama is None:
            from .generate import passive_openmp

            passive_openmp()
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise ModelError(f"llama-cpp-python is not installed: {err}") from None
            window = self.max_input_tokens
            try:
                self._llama = Llama(model_path=str(self.gguf_path()), embedding=True, n_ctx=2 * window,
                                    n_batch=window, n_ubatch=window, n_seq_max=16,
                                    n_threads=self.threads or 1, n_threads_batch=self.threads or 1,
                                    flash_attn=True, verbose=False)
            except (ValueError, RuntimeError) as err:
                raise ModelError(f"cannot load the GGUF embedder {self.gguf_path()}: {err}") from None
        return self._llama

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._load_tokenizer().encode(text, add_special_tokens=False).ids)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids with [CLS] and [SEP], cut to the model's window as sentence-transformers cuts."""
        window = self.max_input_tokens
        ids = []
        for encoding in self._load_tokenizer().encode_batch(list(texts), add_special_tokens=True):
            row = encoding.ids
            if len(row) > window:
                row = row[:window - 1] + row[-1:]
            ids.append(row)
        return ids

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import llama_cpp

        from .generate import fit_threads

        llama = self._load()
        rows = self.token_ids(texts)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        budget = llama.n_batch
        with self._lock:
            # As many threads as there are idle cores, up to ``threads``: on a busy box one thread
            # is an order of magnitude faster than two that stall each other (generate.fit_threads).
            self._threads_now = fit_threads(llama._ctx.ctx, wanted=self.threads or 1, now=self._threads_now)
            start = 0
            while start < len(rows):
                llama._batch.reset()
                end, used = start, 0
                while end < len(rows) and end - start < 16 and used + len(rows[end]) <= budget:
                    llama._batch.add_sequence(rows[end], end - start, True)
                    used += len(rows[end])
                    end += 1
                llama._ctx.kv_cache_clear()
                llama._ctx.decode(llama._batch)
                for seq in range(end - start):
                    ptr = llama_cpp.llama_get_embeddings_seq(llama._ctx.ctx, seq)
                    out[start + seq] = np.ctypeslib.as_array(ptr, shape=(self.dim,))
                start = end
            llama._batch.reset()
            llama._ctx.kv_cache_clear()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
