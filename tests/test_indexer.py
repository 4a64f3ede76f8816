"""The indexer's bookkeeping, through the Embedder seam with a fast fake model."""

import os
import time

import pytest

from edgellama.errors import EdgeLlamaError
from edgellama.indexer import index_paths
from edgellama.store import Store

from fakes import BagOfWordsEmbedder


def run(store, embedder, *paths, **kw):
    return index_paths(store=store, embedder=embedder, paths=list(paths), chunk_tokens=kw.get("chunk_tokens", 60),
                       chunk_overlap=10, max_file_bytes=kw.get("max_file_bytes", 1_000_000))


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\nThe alpha pump moves 40 litres a minute.\n")
    (root / "b.txt").write_text("Bravo notes.\n\nThe bravo valve opens at 3 bar.\n")
    (root / "sub" / "c.rst").write_text("Charlie\n=======\n\nCharlie checks the filters every 14 days.\n")
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (root / ".hidden.md").write_text("never indexed")
    return root


def test_incremental_reindex(tmp_path, docs):
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        first = run(store, emb, docs)
        assert (first.added, first.changed, first.removed, first.ignored) == (3, 0, 0, 1)
        assert first.chunks_embedded == first.chunks_written == store.stats().chunks

        again = run(store, emb, docs)
        assert (again.added, again.changed, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)

        time.sleep(0.01)
        (docs / "a.md").write_text("# Alpha\n\nThe alpha pump moves 45 litres a minute.\n")
        (docs / "b.txt").unlink()
        (docs / "d.md").write_text("# Delta\n\nDelta is new.\n")
        os.utime(docs / "sub" / "c.rst")  # touched, same content: hashed, not re-indexed
        third = run(store, emb, docs)
        assert (third.added, third.changed, third.unchanged, third.removed) == (1, 1, 1, 1)
        assert third.chunks_embedded == 2
        texts = " ".join(c.text for p in store.documents() for c in store.document_chunks(p))
        assert "45 litres" in texts and "40 litres" not in texts and "bravo" not in texts
        assert store.integrity_problems() == []
        assert store.stats().embeddings == store.stats().chunks  # no orphan vectors left


def test_a_renamed_file_is_not_embedded_again(tmp_path, docs):
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        run(store, emb, docs)
        (docs / "a.md").rename(docs / "sub" / "moved.md")
        stats = run(store, emb, docs)
        assert (stats.added, stats.removed, stats.chunks_embedded) == (1, 1, 0)
        assert str(docs / "sub" / "moved.md") in store.documents()


def test_bad_files_are_skipped_with_reasons_and_good_ones_indexed(tmp_path, docs):
    (docs / "elf.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(100))
    (docs / "empty.md").write_bytes(b"")
    (docs / "big.txt").write_text("x" * 5000)
    os.mkfifo(docs / "pipe.txt")
    (docs / "locked.md").write_text("secret")
    (docs / "locked.md").chmod(0)
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        stats = run(store, emb, docs, max_file_bytes=4000)
        reasons = {os.path.basename(s.path): s.reason for s in stats.skipped}
        assert "binary" in reasons["elf.txt"]
        assert reasons["empty.md"] == "empty file"
        assert "larger than" in reasons["big.txt"]
        assert reasons["pipe.txt"] == "not a regular file (a FIFO)"
        if os.geteuid() != 0:  # root reads anything
            assert "cannot read" in reasons["locked.md"]
        assert stats.added >= 3
        assert dict(store.skipped())[str(docs / "elf.txt")] == reasons["elf.txt"]


def test_missing_path_is_an_error(tmp_path):
    with Store.open(tmp_path / "i.db") as store:
        with pytest.raises(EdgeLlamaError, match="path not found"):
            run(store, BagOfWordsEmbedder(), tmp_path / "nope")


def test_chunks_too_long_for_the_embedder_are_refused(tmp_path, docs):
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        with pytest.raises(EdgeLlamaError, match="too large for the embedder"):
            run(store, emb, docs, chunk_tokens=500)


def test_sentences_cite_their_exact_source_lines(tmp_path):
    from edgellama.retrieve import best_sentences, search

    root = tmp_path / "docs"
    root.mkdir()
    (root / "page.html").write_text(
        "<html><head><title>T</title><style>p {}</style></head><body>\n<h1>Tanks</h1>\n\n<p>Filler text here.</p>\n"
        "<p>The grey tank\n holds 700 litres.</p>\n</body></html>\n")
    (root / "notes.md").write_text("# Notes\n\nFirst line.\nThe blue valve opens at 3 bar.\n")
    emb = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        run(store, emb, root)
        for query, path, lines in (("grey tank litres", "page.html", (5, 5)), ("blue valve bar", "notes.md", (4, 4))):
            found = search(store=store, embedder=emb, query=query, k=2)
            best = best_sentences(query=query, chunks=found, embedder=emb, limit=1)[0]
            assert found[best.chunk_index].chunk.path.endswith(path)
            assert (best.line_start, best.line_end) == lines  # html: the line its paragraph starts on


def test_a_text_in_two_consecutive_batches_is_embedded_once(tmp_path, monkeypatch):
    """The next batch embeds while the previous one is written: a chunk text both carry must be
    embedded once, and every document must end up with its vectors."""
    import edgellama.indexer as indexer
    from edgellama.indexer import TextRecord, index_records

    monkeypatch.setattr(indexer, "EMBED_BATCH", 1)  # every record is its own batch
    shared = "The relief valve opens at 3.5 bar and closes again at 3.1 bar."
    records = [TextRecord(key=f"rec:{n}", title=None, text=text)
               for n, text in enumerate([shared, shared, "Unique text about filters.", shared])]
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "i.db") as store:
        stats = index_records(store=store, embedder=embedder, records=records, chunk_tokens=200, chunk_overlap=0)
        assert stats.added == 4
        assert sorted(embedder.embedded) == sorted({*embedder.embedded})  # nothing embedded twice
        assert len(embedder.embedded) == 2
        ids, _, _ = store.chunk_vectors(model=embedder.name)
        assert len(ids) == stats.chunks_written == 4  # every chunk of every document has its vector


def test_ask_on_an_empty_index_says_so_without_embedding(tmp_path):
    from edgellama.answer import ask

    from fakes import ScriptedGenerator

    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "empty.db") as store:
        answer = ask(question="What pressure opens the relief valve?", store=store, embedder=embedder,
                     generator=lambda: ScriptedGenerator("3.5 bar"))
    assert answer.kind == "abstain"
    assert "nothing indexed" in answer.text + str(getattr(answer, "reason", ""))
    assert embedder.embedded == []


def test_a_long_title_never_pushes_a_chunk_past_the_embedders_window():
    """Title + heading go into every chunk's embedding input. In 20 words, a title of chemical
    names is ~70-90 real tokens: it is cut to the room the chunk leaves, so the model never
    truncates the chunk's tail (2 of SciFact's 11,415 chunks were cut before); a shorter one is kept whole."""
    from edgellama.embed import load_embedder
    from edgellama.indexer import chunks_for_document, context_room, embedding_input
    from edgellama.sources import ExtractedText

    embedder = load_embedder(None)  # the real tokenizer; the model itself is not loaded
    room = context_room(embedder, 200)
    assert room == 256 - 2 - 200
    body = " ".join(f"Sentence {n} reports the assay result for sample {n} in detail." for n in range(80))
    long_title = ("1,25-dihydroxyvitamin D3 and 9-cis-retinoic acid regulate CYP24A1 in HEK293T-derived "
                  "MCF-7/ADR cells via VDR:RXRα heterodimers and p21(WAF1/CIP1) in (2S,3R)-3-hydroxy-4,4-dimethylpentane")
    short_title = "Vitamin D receptor signalling in breast cancer cells"
    for title in (long_title, short_title):
        extracted = ExtractedText(text=body, format="record", title=title, lines=(1,))
        chunks = chunks_for_document(extracted, count_tokens=embedder.count_tokens, chunk_tokens=200,
                                     chunk_overlap=30, context_tokens=room)
        assert len(chunks) > 1
        for chunk in chunks:
            assert embedder.count_tokens(embedding_input(chunk)) + 2 <= embedder.max_input_tokens
            assert title.endswith(chunk.context)  # the last words are kept
        assert (chunks[0].context == title) == (title is short_title)
