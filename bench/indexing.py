"""Indexing chunks/s (edgellama's indexer: scan, extract, chunk, embed, SQLite writes) against raw
``SentenceTransformer.encode`` (batch 32) of the very same chunk texts, each in its own fresh
process with the model loaded and warm. Target: >= 1.0x.

Two baselines: raw encode in float32 (what ``encode`` does by default: the issue's baseline), and
raw encode under bfloat16 autocast on a CPU with native bf16 (the fastest a plain ``encode`` call
gets there; the indexer itself runs bfloat16 weights, one torch thread per embedding thread). Data: corpus/, and the
first 1,500 SciFact abstracts when ../shared/data/scifact is on this machine (the whole SciFact
index is timed by bench/scifact.py)."""

from __future__ import annotations

from pathlib import Path

from ._common import CORPUS, Worker, info, median, report, temp_home, threads

SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"
SCIFACT_DOCS = 1500


def _measure(label: str, *, reps: int, texts_op: dict, index_op: dict, home: Path) -> None:
    from edgellama.embed import bundled_embedder_path

    with Worker("indexer", threads=threads()) as indexer:
        precision = indexer.ready["precision"]
        texts = indexer.call(texts_op.pop("op"), **texts_op)["texts"]
        op = index_op.pop("op")
        runs = [indexer.call(op, **index_op, db=str(home / f"{op}{n}.db")) for n in range(reps)]
    with Worker("st", path=str(bundled_embedder_path()), threads=threads()) as st:
        raw = {p: [st.call("encode", texts=texts, batch_size=32, precision=p) for _ in range(reps)]
               for p in dict.fromkeys(("float32", precision))}
    chunks = runs[0]["chunks_embedded"]
    if chunks != len(texts):
        info(f"note: the indexer embedded {chunks} texts, the baseline {len(texts)}")
    ours = median(r["chunks_embedded"] / r["seconds"] for r in runs)
    info(f"{label}: {len(texts)} chunks; the indexer embeds in {precision}")
    for p, runs_p in raw.items():
        base = median(len(texts) / r["seconds"] for r in runs_p)
        report(f"indexing chunks/s, {label}", value=ours, unit="chunks/s",
               baseline_name=f"raw SentenceTransformer.encode, {p}", baseline=base, ratio=ours / base,
               target=">= 1.0x" if p == "float32" else "(pipeline overhead)",
               met=ours / base >= 1.0 if p == "float32" else None, reps=reps)


def run(*, quick: bool) -> None:
    reps = 1 if quick else 2
    with temp_home() as home:
        paths = [str(CORPUS / "station" / "power.md")] if quick else [str(CORPUS)]
        _measure("corpus/" if not quick else "corpus/station/power.md", reps=reps, home=home,
                 texts_op={"op": "texts", "paths": paths}, index_op={"op": "index", "paths": paths})
        if not quick and SCIFACT.is_dir():
            beir = {"data": str(SCIFACT), "limit": SCIFACT_DOCS}
            _measure(f"SciFact, first {SCIFACT_DOCS} abstracts", reps=reps, home=home,
                     texts_op={"op": "beir_texts", **beir}, index_op={"op": "index_beir", **beir})
