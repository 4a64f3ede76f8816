"""SciFact (BEIR, 5,183 abstracts, 300 test queries): nDCG@10 of bm25, dense and hybrid search,
as ratios against the reference BM25 (the dataset's own bm25_baseline.py) run in the same process.

    PYTHONPATH=. python bench/scifact.py [DATA_DIR] [--db FILE] [--title context|text] [--sweep]

--db keeps the index (a second run reuses it and only measures queries); --sweep also runs the
fusion variants of docs/retrieval.md on that index and prints them as a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgellama import retrieve  # noqa: E402
from edgellama.embed import load_embedder  # noqa: E402
from edgellama.evaluate import (  # noqa: E402
    BEIR_PREFIX, MODES, RetrievalSettings, evaluate_retrieval, index_beir, load_beir, ndcg_at_k, restrict,
)
from edgellama.store import Store  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"
if not DEFAULT_DATA.exists():
    DEFAULT_DATA = Path("/work/shared/data/scifact")

# (label, settings): each run on the same index, hybrid unless the label says otherwise.
SWEEP = [
    ("RRF k=60, 50 candidates (retrieve.search's default depth)", RetrievalSettings(rrf_k=60, candidates=50)),
    ("RRF k=10", RetrievalSettings(rrf_k=10)),
    ("RRF k=30", RetrievalSettings(rrf_k=30)),
    ("RRF k=100", RetrievalSettings(rrf_k=100)),
    ("RRF k=60, weights bm25 1.5 : dense 1", RetrievalSettings(weights=(1.5, 1.0))),
    ("RRF k=60, weights bm25 1 : dense 1.5", RetrievalSettings(weights=(1.0, 1.5))),
]


class ConstantEmbedder:
    """For --bm25-only: the real tokenizer (so chunks are the same), one constant vector per text.
    bm25 mode uses vectors only to break exact ties; dense and hybrid are not measured with it."""

    name = "constant-bm25-only"
    dim = 8

    def __init__(self, real):
        self._real = real
        self.max_input_tokens = real.max_input_tokens

    def count_tokens(self, text: str) -> int:
        return self._real.count_tokens(text)

    def embed(self, texts):
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)


def _query_lucene_stopwords(text: str) -> str:
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in LUCENE_STOPWORDS]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def _query_prefix(text: str) -> str:
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in retrieve.STOPWORDS and len(w) > 1]
    return " OR ".join(f'"{w}"*' if len(w) >= 5 else f'"{w}"' for w in dict.fromkeys(words))


def _query_keep_repeats(text: str) -> str:
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in retrieve.STOPWORDS and len(w) > 1]
    return " OR ".join(f'"{w}"' for w in words)


# Query construction variants for the BM25 half (bm25 mode), swapped in for retrieve.fts_query.
QUERY_VARIANTS = [
    ("FTS5 query: Lucene's 33 stopwords instead of ours", _query_lucene_stopwords),
    ("FTS5 query: prefix match for words of 5+ letters", _query_prefix),
    ("FTS5 query: repeated words kept (weight by count)", _query_keep_repeats),
]


def document_fusion_ndcg(*, store, embedder, data, rrf_k: int = 60, candidates: int = 300) -> float:
    """Variant: fuse per document (each ranking collapsed to documents by its best chunk first),
    instead of per chunk as retrieve.search does."""
    from edgellama.evaluate import BEIR_PREFIX
    from edgellama.vectors import load_vectors

    vectors = load_vectors(store, model=embedder.name)
    scores = []
    for qid, query in data.queries.items():
        fused: dict[str, float] = {}
        for mode in ("bm25", "dense"):
            found = retrieve.search(store=store, embedder=embedder, query=query, k=candidates, mode=mode,
                                    candidates=candidates, vectors=vectors, files_only=False)
            docs = list(dict.fromkeys(f.chunk.path[len(BEIR_PREFIX):] for f in found))
            for rank, doc in enumerate(docs, start=1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (rrf_k + rank)
        ranked = [d for d in sorted(fused, key=lambda d: -fused[d]) if d != qid]
        scores.append(ndcg_at_k(ranked, data.qrels[qid], 10))
    return sum(scores) / len(scores)


def reference_bm25(data_dir: Path, keep: set[str]) -> tuple[float, float]:
    """nDCG@10 of the dataset's own standard-library BM25 (Anserini-style) over the documents in
    ``keep``, and its seconds."""
    spec = importlib.util.spec_from_file_location("bm25_baseline", data_dir / "bm25_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    corpus, queries, qrels = module.load(str(data_dir))
    corpus = {d: t for d, t in corpus.items() if d in keep}
    index = module.BM25({d: module.tokenize(t) for d, t in corpus.items()})
    scores = []
    for q in (q for q in queries if q in qrels):
        hits = [d for d, _ in index.search(module.tokenize(queries[q]), 11) if d != q][:10]
        scores.append(ndcg_at_k(hits, qrels[q], 10))
    return sum(scores) / len(scores), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--db", type=Path, help="keep the index in this file (reused when present)")
    parser.add_argument("--title", choices=("context", "text"), default="context")
    parser.add_argument("--chunk-tokens", type=int, default=200)
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="embedding precision (auto: bfloat16 where the CPU has it natively)")
    parser.add_argument("--sweep", action="store_true", help="also run the fusion variants")
    parser.add_argument("--budget-minutes", type=float, help="stop indexing after this long and measure "
                        "on what was indexed: the judged documents are indexed first, so every query can "
                        "still find its answers, among fewer distractors (reported)")
    parser.add_argument("--bm25-only", action="store_true", help="index without the embedding model "
                        "(a constant vector for every chunk) and measure bm25 mode only: the BM25 variants "
                        "on the whole corpus in a minute")
    args = parser.parse_args()

    load_before = os.getloadavg()
    data = load_beir(args.data)
    embedder = ConstantEmbedder(load_embedder(None)) if args.bm25_only else load_embedder(None, threads=os.cpu_count(),
                                                                                        precision=args.precision)
    judged = sorted({d for rel in data.qrels.values() for d in rel})
    deadline = time.monotonic() + args.budget_minutes * 60 if args.budget_minutes is not None else None
    with tempfile.TemporaryDirectory(prefix="scifact-") as tmp:
        with Store.open(args.db or Path(tmp) / "scifact.db") as store:
            stats = index_beir(store=store, embedder=embedder, data=data, chunk_tokens=args.chunk_tokens,
                               chunk_overlap=30, title=args.title, order=judged,
                               should_stop=(lambda: time.monotonic() > deadline) if deadline is not None else None)
            load_after_index = os.getloadavg()
            reference, reference_seconds = reference_bm25(args.data, set(indexed := [
                p[len(BEIR_PREFIX):] for p in store.documents() if p.startswith(BEIR_PREFIX)]))
            if len(indexed) < len(data.corpus):
                data = restrict(data, indexed)
            modes = ("bm25",) if args.bm25_only else MODES
            report = evaluate_retrieval(store=store, embedder=embedder, data=data, index_stats=stats, modes=modes)
            _print_report(args, report, stats, reference, reference_seconds, load_before, load_after_index)
            if args.sweep:
                print("\n| variant (hybrid unless named) | nDCG@10 | vs reference BM25 | R@100 | MRR@10 |")
                print("| --- | ---: | ---: | ---: | ---: |", flush=True)
            if args.sweep and args.bm25_only:
                original = retrieve.fts_query
                try:
                    for label, fn in QUERY_VARIANTS:
                        retrieve.fts_query = fn
                        r = evaluate_retrieval(store=store, embedder=embedder, data=data, modes=("bm25",))
                        _row(f"{label}, bm25", r.modes[0], reference)
                finally:
                    retrieve.fts_query = original
            elif args.sweep:
                for label, settings in SWEEP:
                    r = evaluate_retrieval(store=store, embedder=embedder, data=data, modes=("hybrid",),
                                           settings=settings)
                    _row(label, r.modes[0], reference)
                value = document_fusion_ndcg(store=store, embedder=embedder, data=data, rrf_k=60)
                _row("fuse per document (each ranking collapsed to documents first), RRF k=60", value, reference)


def _row(label: str, m, reference: float) -> None:
    if isinstance(m, float):
        print(f"| {label} | {m:.4f} | {m / reference:.3f}x | | |", flush=True)
    else:
        print(f"| {label} | {m.ndcg_at_10:.4f} | {m.ndcg_at_10 / reference:.3f}x | {m.recall_at_100:.4f} "
              f"| {m.mrr_at_10:.4f} |", flush=True)


def _print_report(args, report, stats, reference, reference_seconds, load_before, load_after_index) -> None:
    print(f"{report.dataset}: {report.documents} documents -> {report.chunks} chunks, {report.queries} queries "
          f"(title as {args.title}, chunk_tokens {args.chunk_tokens}, embedding {args.precision})")
    print(f"index: {stats.seconds:.1f} s, {stats.chunks_embedded} chunks embedded "
          f"({stats.added} added, {stats.unchanged} already indexed); {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before, {load_after_index[0]:.2f} after indexing")
    print(f"reference BM25 (bm25_baseline.py, same run): nDCG@10 {reference:.4f} in {reference_seconds:.1f} s")
    bm25 = next((m.ndcg_at_10 for m in report.modes if m.mode == "bm25"), None)
    print(f"{'mode':<8}{'nDCG@10':>9}{'vs reference':>14}{'vs our bm25':>13}{'R@100':>8}{'MRR@10':>8}{'q/s':>7}")
    for m in report.modes:
        print(f"{m.mode:<8}{m.ndcg_at_10:>9.4f}{m.ndcg_at_10 / reference:>13.3f}x"
              f"{m.ndcg_at_10 / bm25 if bm25 else 0:>12.3f}x{m.recall_at_100:>8.4f}{m.mrr_at_10:>8.4f}"
              f"{m.queries_per_second:>7.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
