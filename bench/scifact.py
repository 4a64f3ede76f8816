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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgellama.embed import load_embedder  # noqa: E402
from edgellama.evaluate import RetrievalSettings, evaluate_retrieval, index_beir, load_beir, ndcg_at_k  # noqa: E402
from edgellama.store import Store  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"
if not DEFAULT_DATA.exists():
    DEFAULT_DATA = Path("/work/shared/data/scifact")

# (label, settings): each run on the same index, hybrid unless the label says otherwise.
SWEEP = [
    ("RRF k=60, weights 1:1, 300 candidates", RetrievalSettings(rrf_k=60, weights=(1.0, 1.0), candidates=300)),
    ("RRF k=60, 50 candidates", RetrievalSettings(rrf_k=60, candidates=50)),
    ("RRF k=60, 100 candidates", RetrievalSettings(rrf_k=60, candidates=100)),
    ("RRF k=10", RetrievalSettings(rrf_k=10)),
    ("RRF k=30", RetrievalSettings(rrf_k=30)),
    ("RRF k=100", RetrievalSettings(rrf_k=100)),
    ("RRF k=60, weights 1.5:1", RetrievalSettings(weights=(1.5, 1.0))),
    ("RRF k=60, weights 1:1.5", RetrievalSettings(weights=(1.0, 1.5))),
    ("RRF k=60, weights 2:1", RetrievalSettings(weights=(2.0, 1.0))),
]


def reference_bm25(data_dir: Path) -> tuple[float, float]:
    """nDCG@10 of the dataset's own standard-library BM25 (Anserini-style), and its seconds."""
    spec = importlib.util.spec_from_file_location("bm25_baseline", data_dir / "bm25_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    corpus, queries, qrels = module.load(str(data_dir))
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
    parser.add_argument("--sweep", action="store_true", help="also run the fusion variants")
    args = parser.parse_args()

    load_before = os.getloadavg()
    reference, reference_seconds = reference_bm25(args.data)
    data = load_beir(args.data)
    embedder = load_embedder(None, threads=os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="scifact-") as tmp:
        with Store.open(args.db or Path(tmp) / "scifact.db") as store:
            stats = index_beir(store=store, embedder=embedder, data=data, chunk_tokens=args.chunk_tokens,
                               chunk_overlap=30, title=args.title)
            load_after_index = os.getloadavg()
            report = evaluate_retrieval(store=store, embedder=embedder, data=data, index_stats=stats)
            sweep = []
            if args.sweep:
                for label, settings in SWEEP:
                    r = evaluate_retrieval(store=store, embedder=embedder, data=data, modes=("hybrid",),
                                           settings=settings)
                    sweep.append((label, r.modes[0]))

    print(f"SciFact: {report.documents} documents -> {report.chunks} chunks, {report.queries} queries "
          f"(title as {args.title}, chunk_tokens {args.chunk_tokens})")
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
    if sweep:
        print("\n| variant | hybrid nDCG@10 | vs reference BM25 | R@100 | MRR@10 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, m in sweep:
            print(f"| {label} | {m.ndcg_at_10:.4f} | {m.ndcg_at_10 / reference:.3f}x | {m.recall_at_100:.4f} "
                  f"| {m.mrr_at_10:.4f} |")


if __name__ == "__main__":
    main()
