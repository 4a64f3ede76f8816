"""The embedder run by llama.cpp (no torch) gives sentence-transformers' vectors; bulk work goes to a
child process that holds torch, and the caller never imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgellama.embed import ProcessEmbedder, TieredEmbedder, bundled_embedder_path, load_embedder
from edgellama.embed_gguf import LlamaCppEmbedder, converted_path

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parent.parent


def corpus_texts() -> list[str]:
    """The corpus chunks' texts and the pinned questions: what the equality must hold on."""
    import json

    from edgellama.chunking import chunk_text

    texts = []
    for path in sorted((ROOT / "corpus").rglob("*.md")):
        text = path.read_text()
        texts += [c.text for c in chunk_text(text, max_tokens=200, overlap=30)]
    questions = [json.loads(line)["question"] for line in (ROOT / "tests/data/corpus_qa.jsonl").read_text().splitlines()]
    return texts + questions[::4]


@pytest.fixture(scope="module")
def gguf_embedder(tmp_path_factory):
    embedder = LlamaCppEmbedder(bundled_embedder_path(), models_dir=tmp_path_factory.mktemp("models"), threads=2)
    yield embedder
    embedder.close()


def test_llama_cpp_vectors_equal_sentence_transformers(gguf_embedder):
    texts = corpus_texts()
    ours = gguf_embedder.embed(texts)
    theirs = load_embedder(None, threads=2, precision="float32").embed(texts)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.9999, (cosines.min(), texts[int(cosines.argmin())][:80])


def test_the_conversion_is_made_once_and_keyed_by_the_source(gguf_embedder, tmp_path):
    path = gguf_embedder.gguf_path()
    assert path == converted_path(bundled_embedder_path(), gguf_embedder.models_dir)
    made = path.stat().st_mtime_ns
    assert gguf_embedder.gguf_path().stat().st_mtime_ns == made  # not written again
    assert not list(path.parent.glob("*.tmp*"))  # nothing half-written left behind
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "bert"
    assert len(bytes(fields["edgellama.source_sha256"].parts[-1])) == 64


def test_a_text_longer_than_the_window_is_cut_like_sentence_transformers(gguf_embedder):
    long = "The coolant pump runs at 3000 rpm and the valve stays open. " * 80
    ours = gguf_embedder.embed([long])
    theirs = load_embedder(None, threads=2, precision="float32").embed([long])
    assert float((ours * theirs).sum()) >= 0.9999


def test_bulk_calls_go_to_a_child_process_that_stops_on_release(gguf_embedder):
    texts = corpus_texts()[:40]
    bulk = ProcessEmbedder(bundled_embedder_path(), name=gguf_embedder.name, threads=2, precision="float32")
    tiered = TieredEmbedder(gguf_embedder, bulk, bulk_texts=20)
    try:
        small = tiered.embed(texts[:3])
        assert bulk.started == 0  # a few texts stay in process
        big = tiered.embed(texts)
        assert bulk.started == 1
        assert (big[:3] * small).sum(axis=1).min() >= 0.9999
        process = bulk._process
        tiered.release()
        assert process.poll() is not None  # the child (and torch) is gone
    finally:
        tiered.release()


def test_the_query_path_never_imports_torch(tmp_path):
    code = (
        "import sys; from pathlib import Path; from edgellama.embed import bundled_embedder_path;"
        "from edgellama.embed_gguf import LlamaCppEmbedder;"
        f"e = LlamaCppEmbedder(bundled_embedder_path(), models_dir=Path({str(tmp_path)!r}));"
        "v = e.embed(['how much energy does the battery store']);"
        "assert v.shape == (1, 384);"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


class _Counting:
    """An embedder that records the size of each call (for the routing rule alone)."""

    def __init__(self, *, running: bool = False):
        self.calls: list[int] = []
        self.running = running
        self.name, self.dim, self.max_input_tokens = "fake", 3, 256

    def embed(self, texts):
        import numpy as np

        self.calls.append(len(texts))
        self.running = True
        return np.zeros((len(texts), 3), dtype="float32")


def test_the_worker_takes_a_run_once_started_but_never_a_question():
    from edgellama.embed import RUNNING_BULK_TEXTS

    small, bulk = _Counting(), _Counting()
    tiered = TieredEmbedder(small, bulk, bulk_texts=500)
    tiered.embed(["q"] * (RUNNING_BULK_TEXTS + 10))  # below the start threshold, worker not running
    assert (small.calls, bulk.calls) == ([RUNNING_BULK_TEXTS + 10], [])
    tiered.embed(["c"] * 500)  # pays for the start
    tiered.embed(["c"] * RUNNING_BULK_TEXTS)  # the run's last batch: the worker already runs
    tiered.embed(["a question"])
    tiered.embed(["s"] * 30)  # a question's evidence sentences
    assert bulk.calls == [500, RUNNING_BULK_TEXTS]
    assert small.calls == [RUNNING_BULK_TEXTS + 10, 1, 30]


def test_on_a_busy_box_the_embedder_drops_to_the_idle_cores_with_the_same_vectors(gguf_embedder, monkeypatch):
    import edgellama.generate as generate

    assert 1 <= generate.idle_cores() <= (os.cpu_count() or 1)
    texts = corpus_texts()[:6]
    monkeypatch.setattr(generate, "idle_cores", lambda: 2)
    both = gguf_embedder.embed(texts)
    monkeypatch.setattr(generate, "idle_cores", lambda: 1)
    one = gguf_embedder.embed(texts)
    assert gguf_embedder._threads_now == 1
    assert (both * one).sum(axis=1).min() >= 0.9999
