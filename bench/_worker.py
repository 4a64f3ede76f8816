"""A benchmark worker: ``python -m bench._worker KIND INIT_JSON``, then one JSON request per line
on stdin and one JSON reply per line on the original stdout (library chatter goes to stderr).

Kinds: ``llama`` (raw llama_cpp.Llama, nothing of edgellama), ``st`` (raw SentenceTransformer),
``indexer`` (edgellama's indexer with its embedder), ``vectors`` (synthetic matrices), ``qa`` (the
corpus QA set through ``ask``, bench/context_budget.py).
"""

from __future__ import annotations

import json
import os
import sys
import time

_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # anything printed by a library goes to stderr, never into the protocol
sys.stdout = sys.stderr


def _rss() -> dict:
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": values["VmRSS"], "hwm_mb": values["VmHWM"]}


class LlamaWorker:
    def __init__(self, *, model_path: str, n_ctx: int = 4096, threads: int = 2, n_batch: int = 512,
                 flash_attn: bool = True, openmp_wait: str = "PASSIVE"):
        # The daemon's OpenMP wait policy (edgellama.generate.passive_openmp), so both sides of a
        # comparison run llama.cpp alike; "default" leaves libgomp's spinning as it is.
        if openmp_wait != "default":
            os.environ["OMP_WAIT_POLICY"] = openmp_wait
        from llama_cpp import Llama

        started = time.perf_counter()
        self.llm = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=n_batch, flash_attn=flash_attn, verbose=False)
        self.load_seconds = time.perf_counter() - started

    def ready(self) -> dict:
        return {"load_seconds": self.load_seconds}

    def op_chat(self, *, messages: list, max_tokens: int) -> dict:
        """Stream a greedy chat reply; the time of every token piece."""
        started = time.perf_counter()
        times, pieces = [], []
        for chunk in self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                     top_k=1, repeat_penalty=1.0, stream=True):
            text = chunk["choices"][0]["delta"].get("content") or ""
            if text:
                times.append(time.perf_counter() - started)
                pieces.append(text)
        return {"times": times, "text": "".join(pieces)}

    def op_prompt_eval(self, *, prompt: str | None = None, tokens: list | None = None) -> dict:
        """Evaluate a prompt from an empty cache: seconds and token count."""
        if tokens is None:
            tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        self.llm.reset()  # n_tokens 0: eval overwrites the whole cache
        started = time.perf_counter()
        self.llm.eval(tokens)
        return {"seconds": time.perf_counter() - started, "tokens": len(tokens)}

    def op_ask_prompt(self, *, question: str, context: list, context_tokens: int, max_tokens: int) -> dict:
        """The completion prompt ``ask`` built for these passages (prompt.py is pure text), then its
        prompt eval from an empty cache, plus one greedy sampling step: the raw first token."""
        from edgellama.prompt import build_prompt

        count = lambda text: len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))  # noqa: E731
        plan = build_prompt(question=question, chunks=[(c["heading"], c["text"]) for c in context],
                            count_tokens=count, context_budget=context_tokens, n_ctx=self.llm.n_ctx(),
                            max_tokens=max_tokens)
        tokens = self.llm.tokenize(plan.prompt.encode("utf-8"), add_bos=True, special=True)
        self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(tokens)
        self.llm.sample(top_k=1, temp=0.0)
        return {"seconds": time.perf_counter() - started, "tokens": len(tokens)}

    def op_rss(self) -> dict:
        return _rss()


class SentenceTransformerWorker:
    def __init__(self, *, path: str, threads: int = 2, openmp_wait: str = "PASSIVE"):
        from edgellama.embed import ensure_offline

        ensure_offline()
        if openmp_wait != "default":  # as the daemon's embedder runs (edgellama.generate.passive_openmp)
            os.environ["OMP_WAIT_POLICY"] = openmp_wait
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        started = time.perf_counter()
        self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.model.encode(["warm up"])
        self.load_seconds = time.perf_counter() - started

    def ready(self) -> dict:
        return {"load_seconds": self.load_seconds}

    def op_encode(self, *, texts: list, batch_size: int = 32, precision: str = "float32") -> dict:
        """``precision`` bfloat16: under autocast, as edgellama's embedder runs where the CPU has it."""
        import torch

        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        return {"seconds": time.perf_counter() - started, "count": len(texts)}

    def op_rss(self) -> dict:
        return _rss()


class IndexerWorker:
    def __init__(self, *, threads: int = 2):
        from edgellama.embed import load_embedder

        started = time.perf_counter()
        self.embedder = load_embedder(None, threads=threads)
        self.embedder.embed(["warm up"])
        self.load_seconds = time.perf_counter() - started

    def ready(self) -> dict:
        return {"load_seconds": self.load_seconds, "precision": self.embedder.precision}

    def op_index(self, *, paths: list, db: str) -> dict:
        from pathlib import Path

        from edgellama.indexer import index_paths
        from edgellama.store import Store

        with Store.open(Path(db)) as store:
            stats = index_paths(store=store, embedder=self.embedder, paths=[Path(p) for p in paths],
                                chunk_tokens=200, chunk_overlap=30, max_file_bytes=50_000_000)
        return {"seconds": stats.seconds, "chunks_embedded": stats.chunks_embedded,
                "chunks_written": stats.chunks_written, "added": stats.added, "changed": stats.changed,
                "unchanged": stats.unchanged}

    def op_texts(self, *, paths: list) -> dict:
        """The unique embedding inputs the indexer makes of these files (what it encodes)."""
        from pathlib import Path

        from edgellama.indexer import _walk
        from edgellama.sources import extract, format_for

        files = (entry.path for root in paths for entry in _walk(Path(root))
                 if entry.error is None and format_for(entry.path) is not None)
        return {"texts": self._embedding_inputs(extract(path, path.read_bytes()) for path in files)}

    def op_index_beir(self, *, data: str, limit: int, db: str) -> dict:
        """The first ``limit`` documents of a BEIR folder, through ``evaluate.index_beir``."""
        from pathlib import Path

        from edgellama.evaluate import index_beir
        from edgellama.store import Store

        with Store.open(Path(db)) as store:
            stats = index_beir(store=store, embedder=self.embedder, data=_beir_head(data, limit),
                               chunk_tokens=200, chunk_overlap=30)
        return {"seconds": stats.seconds, "chunks_embedded": stats.chunks_embedded}

    def op_beir_texts(self, *, data: str, limit: int) -> dict:
        from edgellama.sources import ExtractedText

        return {"texts": self._embedding_inputs(
            ExtractedText(text=body, format="record", title=title or None,
                          lines=tuple(range(1, body.count("\n") + 2)))
            for title, body in _beir_head(data, limit).corpus.values())}

    def _embedding_inputs(self, documents) -> list:
        """The unique texts the indexer embeds for these extracted documents, in its chunking."""
        from edgellama.indexer import chunks_for_document, context_room, embedding_input

        texts: dict[str, str] = {}
        for extracted in documents:
            for chunk in chunks_for_document(extracted, count_tokens=self.embedder.count_tokens,
                                             chunk_tokens=200, chunk_overlap=30,
                                             context_tokens=context_room(self.embedder, 200)):
                texts.setdefault(chunk.text_hash, embedding_input(chunk))
        return list(texts.values())


def _beir_head(data: str, limit: int):
    from pathlib import Path

    from edgellama.evaluate import load_beir

    beir = load_beir(Path(data))
    return type(beir)(beir.name, dict(list(beir.corpus.items())[:limit]), beir.queries, beir.qrels)


def _corpus_texts(quick: bool) -> list[str]:
    """The corpus chunks' texts (quick: a few files) and the pinned questions."""
    from pathlib import Path

    from edgellama.chunking import chunk_text

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "corpus").rglob("*.md"))[: 4 if quick else None]
    texts = [c.text for path in files for c in chunk_text(path.read_text(), max_tokens=200, overlap=30)]
    questions = [json.loads(line)["question"] for line in (root / "tests/data/corpus_qa.jsonl").read_text().splitlines()]
    return texts + questions[: 10 if quick else None]


class EmbedEqualityWorker:
    """The llama.cpp embedder (GGUF) against sentence-transformers float32 on the same texts."""

    def __init__(self, *, quick: bool):
        self.texts = _corpus_texts(quick)

    def ready(self) -> dict:
        return {}

    def op_compare(self) -> dict:
        import tempfile
        from pathlib import Path

        from edgellama.embed import bundled_embedder_path, load_embedder
        from edgellama.embed_gguf import LlamaCppEmbedder

        ours = LlamaCppEmbedder(bundled_embedder_path(), models_dir=Path(tempfile.mkdtemp()), threads=2).embed(self.texts)
        theirs = load_embedder(None, threads=2, precision="float32").embed(self.texts)
        return {"texts": len(self.texts), "min_cosine": float((ours * theirs).sum(axis=1).min())}


class EmbedCrossoverWorker:
    """Seconds to embed n chunks on llama.cpp in this process, and in a fresh torch worker process
    (its start included), for growing n."""

    def __init__(self, *, quick: bool):
        self.texts = _corpus_texts(False)
        self.sizes = (4, 32) if quick else (4, 16, 64, 160, 400, 1000)

    def ready(self) -> dict:
        return {}

    def op_measure(self) -> dict:
        import tempfile
        from pathlib import Path

        from edgellama.embed import ProcessEmbedder, bundled_embedder_path
        from edgellama.embed_gguf import LlamaCppEmbedder

        folder = bundled_embedder_path()
        small = LlamaCppEmbedder(folder, models_dir=Path(tempfile.mkdtemp()), threads=2)
        small.embed(["warm up"])
        rows = []
        start_s = 0.0
        for n in self.sizes:
            texts = (self.texts * (1 + n // len(self.texts)))[:n]
            started = time.perf_counter()
            small.embed(texts)
            llama_s = time.perf_counter() - started
            worker = ProcessEmbedder(folder, name="all-MiniLM-L6-v2", threads=2)
            started = time.perf_counter()
            worker.embed(texts[:1])
            start_s = time.perf_counter() - started
            worker.embed(texts)
            worker_s = time.perf_counter() - started
            worker.close()
            rows.append((n, llama_s, worker_s))
        crossover = next((n for n, a, b in rows if b < a), f"> {rows[-1][0]}")
        return {"rows": rows, "start_s": start_s, "crossover": crossover}


def _qa_worker(**init):
    from bench.context_budget import QaWorker

    return QaWorker(**init)


KINDS = {"llama": LlamaWorker, "st": SentenceTransformerWorker, "indexer": IndexerWorker, "qa": _qa_worker,
         "embed_equality": EmbedEqualityWorker, "embed_crossover": EmbedCrossoverWorker}


def main() -> None:
    kind, init = sys.argv[1], json.loads(sys.argv[2])
    try:
        worker = KINDS[kind](**init)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises
        _OUT.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
        return
    _OUT.write(json.dumps({"ok": True, **worker.ready()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = getattr(worker, f"op_{op}")(**request)
        except Exception as err:  # noqa: BLE001
            reply = {"error": f"{type(err).__name__}: {err}"}
        _OUT.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
