"""Indexing chunks/s (edgellama's indexer: scan, extract, chunk, embed, SQLite writes) against raw
``SentenceTransformer.encode`` (batch 32) of the very same chunk texts, each in its own fresh
process with the model loaded and warm. Target: >= 1.0x. Data: corpus/ (SciFact is not installed
on this machine: no package ships it, and nothing is downloaded)."""

from __future__ import annotations

from ._common import CORPUS, Worker, info, median, report, temp_home, threads


def run(*, quick: bool) -> None:
    reps = 1 if quick else 2
    from edgellama.embed import bundled_embedder_path

    with temp_home() as home:
        paths = [str(CORPUS / "station" / "power.md")] if quick else [str(CORPUS)]
        with Worker("indexer", threads=threads()) as indexer:
            texts = indexer.call("texts", paths=paths)["texts"]
            runs = [indexer.call("index", paths=paths, db=str(home / f"i{n}.db")) for n in range(reps)]
        with Worker("st", path=str(bundled_embedder_path()), threads=threads()) as st:
            raw = [st.call("encode", texts=texts, batch_size=32) for _ in range(reps)]
        chunks = runs[0]["chunks_embedded"]
        if chunks != len(texts):
            info(f"note: the indexer embedded {chunks} texts, the baseline {len(texts)}")
        ours = median(r["chunks_embedded"] / r["seconds"] for r in runs)
        base = median(len(texts) / r["seconds"] for r in raw)
        info(f"{len(texts)} chunks from {', '.join(p.replace(str(CORPUS), 'corpus') for p in paths)}")
        report("indexing chunks/s", value=ours, unit="chunks/s", baseline_name="raw SentenceTransformer.encode",
               baseline=base, ratio=ours / base, target=">= 1.0x", met=ours / base >= 1.0, reps=reps)
