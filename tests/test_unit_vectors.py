"""Stored evidence-unit vectors (issue 22, s26): the entries of a log's or transcript's chunks are
embedded at index time with the chunks and stored beside them, so a question reads them instead of
embedding them; prose is indexed as before; the vectors follow their chunks (pruned with them,
ignored under another embedder) and an older database upgrades."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from edgellama import retrieve
from edgellama.answer import ask
from edgellama.indexer import index_paths
from edgellama.retrieve import best_sentences, chunk_units, search, stored_unit_vectors
from edgellama.store import SCHEMA_VERSION, Store

from conftest import run_cli
from fakes import BagOfWordsEmbedder, ScriptedGenerator

# A transcript long enough for several chunks, each a block of entries.
TRANSCRIPT = "\n".join([
    "Apollo 11 air-to-ground voice transcription",
    "",
    *(f"04:06:{m:02d}:00 CC: Roger. Copy the readback of item {m} on the {w} panel."
      for m, w in zip(range(10, 40), ["left", "right", "centre"] * 10)),
    "04:06:45:57 CDR (TRANQ): Houston, Tranquility Base here. The Eagle has landed.",
    "04:06:46:04 CC: Roger, Tranquility. We copy you on the ground. You got a bunch of guys",
    "  about to turn blue. We're breathing again. Thanks a lot.",
    "04:06:46:23 CDR (TRANQ): Thank you.",
]) + "\n"
PROSE = ("# Pumps\n\nThe relief valve opens at 3.5 bar. It closes again at 3.1 bar.\n\n"
         "The grey tank holds 700 litres. It is refilled on Mondays by the night shift.\n")


def index(store, embedder, docs, **kw):
    return index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=120, chunk_overlap=30,
                       max_file_bytes=10**6, **kw)


def unit_rows(store) -> list[tuple[str, str, int, int]]:
    """(text hash, model, dim, units) of every stored row, read with SQL as a test may."""
    return [(h, m, d, len(v) // 4 // d) for h, m, d, v in
            store.db.execute("SELECT text_hash, model, dim, vectors FROM unit_embeddings ORDER BY text_hash").fetchall()]


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a11.txt").write_text(TRANSCRIPT)
    (root / "pumps.md").write_text(PROSE)
    return root


def test_indexing_stores_the_entries_of_transcript_chunks_and_nothing_for_prose(tmp_path, docs):
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "u.db") as store:
        stats = index(store, embedder, docs)
        record_chunks = [c for c in store.document_chunks(str(docs / "a11.txt")) if chunk_units(c.text).records]
        prose_chunks = store.document_chunks(str(docs / "pumps.md"))
        assert len(record_chunks) >= 3 and prose_chunks
        stored = store.unit_vectors([c.id for c in record_chunks + prose_chunks], model=embedder.name)
        assert set(stored) == {c.id for c in record_chunks}  # prose has none
        for chunk in record_chunks:
            units = chunk_units(chunk.text)
            rows = stored_unit_vectors(units, stored[chunk.id])
            assert rows is not None and rows.shape == (len(units.texts), embedder.dim)
            assert np.allclose(rows, embedder.embed(list(units.texts)), atol=1e-6)  # each entry's own vector
        distinct = {t for c in record_chunks for t in chunk_units(c.text).texts}
        assert stats.units_embedded == len(distinct)  # an entry two overlapping chunks share: embedded once
        assert unit_rows(store) and all(m == embedder.name for _, m, _, _ in unit_rows(store))
        assert store.stats().unit_vectors == len({c.text_hash for c in record_chunks})


class CallsEmbedder(BagOfWordsEmbedder):
    """The fake embedder, each call's texts kept apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return super().embed(texts)


def test_the_chunks_are_embedded_in_a_call_of_their_own_so_their_vectors_do_not_change(tmp_path, docs):
    """A tiered embedder sends a call to llama.cpp or to its bulk worker by its size: were the entries
    in the chunks' call, a small folder's chunks would move to the worker and their vectors change."""
    from edgellama.indexer import embedding_input

    embedder = CallsEmbedder()
    with Store.open(tmp_path / "c.db") as store:
        stats = index(store, embedder, docs)
        chunks = [c for path in ("a11.txt", "pumps.md") for c in store.document_chunks(str(docs / path))]
    assert len(embedder.calls) == 2
    assert sorted(embedder.calls[0]) == sorted({embedding_input(c) for c in chunks})
    assert len(embedder.calls[1]) == stats.units_embedded > 0


def test_a_prose_folder_stores_no_unit_vectors_and_embeds_what_it_did_before(tmp_path):
    root = tmp_path / "prose"
    root.mkdir()
    (root / "pumps.md").write_text(PROSE * 8)
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "p.db") as store:
        stats = index(store, embedder, root)
        assert stats.units_embedded == 0 and unit_rows(store) == []
        assert len(embedder.embedded) == stats.chunks_embedded  # the chunks only


def test_a_question_on_an_indexed_transcript_embeds_no_stored_entry(tmp_path, docs):
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "q.db") as store:
        index(store, embedder, docs)
        embedder.embedded.clear()
        question = "What did the CDR say after Houston, Tranquility Base here?"
        answer = ask(question=question, store=store, embedder=embedder, generator=ScriptedGenerator("The Eagle has landed"),
                     min_relevance=0.1)
        assert answer.kind != "abstain" and "Eagle has landed" in " ".join(e.text for e in answer.evidence)
        assert embedder.embedded == [question]  # the question only: every entry came from the store

        # The same evidence, scored alike, as when every entry is embedded at query time.
        found = search(store=store, embedder=embedder, query=question, k=5)
        with_store = best_sentences(query=question, chunks=found, embedder=embedder, limit=6, store=store)
        embedder.embedded.clear()
        fresh = BagOfWordsEmbedder()  # no unit cache yet: everything embedded now
        embedded_now = best_sentences(query=question, chunks=found, embedder=fresh, limit=6)
        assert len(fresh.embedded) > 10
        assert [(s.text, round(s.score, 5)) for s in with_store] == [(s.text, round(s.score, 5)) for s in embedded_now]


def test_units_stored_under_other_rules_or_another_embedder_are_embedded_again_at_query_time(tmp_path, docs):
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "r.db") as store:
        index(store, embedder, docs)
        # Rows written under other splitting rules: their key no longer matches the chunk's units.
        store.db.execute("UPDATE unit_embeddings SET units_key = 'older rules'")
        other = BagOfWordsEmbedder()
        other.name = "another-model"  # vectors of one model are never read for another
        for emb in (embedder, other):
            retrieve._UNIT_CACHES.pop(emb, None)
            emb.embedded.clear()
            question = "What did the CDR say after Houston, Tranquility Base here?"
            found = search(store=store, embedder=embedder, query=question, k=5)
            picked = best_sentences(query=question, chunks=found, embedder=emb, limit=3, store=store)
            assert picked and len(emb.embedded) > 10  # the fallback: today's query-time embedding
        # The next index run of a changed file writes rows for the units as they are now split.
        (docs / "a11.txt").write_text(TRANSCRIPT + "04:06:47:00 CC: Stand by for T1.\n")
        index(store, embedder, docs)
        chunks = store.document_chunks(str(docs / "a11.txt"))
        stored = store.unit_vectors([c.id for c in chunks], model=embedder.name)
        assert stored and all(stored_unit_vectors(chunk_units(c.text), stored[c.id]) is not None
                              for c in chunks if c.id in stored)


def test_deleting_or_changing_a_document_removes_its_unit_vectors(tmp_path, docs):
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "d.db") as store:
        index(store, embedder, docs)
        before = {h for h, *_ in unit_rows(store)}
        assert before
        # Changed: every chunk's text differs, so no row of the old chunks is left.
        (docs / "a11.txt").write_text(TRANSCRIPT.replace("CC: Roger.", "CAPCOM: Roger."))
        index(store, embedder, docs)
        after = {h for h, *_ in unit_rows(store)}
        chunk_hashes = {c.text_hash for c in store.document_chunks(str(docs / "a11.txt"))}
        assert after and after <= chunk_hashes and not (before & after)
        # Deleted: the rows go with the chunks.
        (docs / "a11.txt").unlink()
        stats = index(store, embedder, docs)
        assert stats.removed == 1 and unit_rows(store) == []
        assert store.integrity_problems() == []


def test_a_database_at_the_previous_version_upgrades_and_its_transcripts_get_their_vectors_once(tmp_path, docs):
    """A database indexed before stored unit vectors: it upgrades in place, its chunks and vectors
    kept; a question embeds the entries at query time as before, until the next index run, which
    stores them although no file changed (an unchanged file is never read again), and only once."""
    db = tmp_path / "old.db"
    embedder = BagOfWordsEmbedder()
    with Store.open(db) as store:
        index(store, embedder, docs)
    # The previous schema, as an older EdgeLlama left it: migrations 1 and 2 only.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE unit_embeddings")
    conn.execute("DROP TABLE unit_pending")
    conn.execute("DELETE FROM schema_migrations WHERE version > 2")
    chunks_before = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    conn.close()
    assert SCHEMA_VERSION == 3
    question = "What did the CDR say after Houston, Tranquility Base here?"
    with Store.open(db) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.integrity_problems() == []
        assert store.stats().chunks == chunks_before and unit_rows(store) == []
        retrieve._UNIT_CACHES.pop(embedder, None)
        embedder.embedded.clear()
        found = search(store=store, embedder=embedder, query=question, k=5)
        before = best_sentences(query=question, chunks=found, embedder=embedder, limit=3, store=store)
        assert len(embedder.embedded) > 10  # no stored rows yet: embedded at query time, as before

        embedder.embedded.clear()
        stats = index(store, embedder, docs)
        assert (stats.unchanged, stats.chunks_embedded) == (2, 0) and stats.units_embedded > 10
        assert len(embedder.embedded) == stats.units_embedded  # the entries only, once each
        assert store.pending_unit_chunks(limit=10) == []
        record_chunks = {c.text_hash for c in store.document_chunks(str(docs / "a11.txt")) if chunk_units(c.text).records}
        assert {h for h, *_ in unit_rows(store)} == record_chunks
        again = index(store, embedder, docs)
        assert again.units_embedded == 0  # looked at once

        retrieve._UNIT_CACHES.pop(embedder, None)
        embedder.embedded.clear()
        after = best_sentences(query=question, chunks=found, embedder=embedder, limit=3, store=store)
        assert embedder.embedded == [question]
        assert [s.text for s in after] == [s.text for s in before]


@pytest.mark.models
def test_the_real_embedder_stores_transcript_entries_and_a_question_reads_them(tmp_path, docs, embedder):
    with Store.open(tmp_path / "m.db") as store:
        stats = index(store, embedder, docs)
        assert stats.units_embedded > 10
        question = "What did the CDR say after Houston, Tranquility Base here?"
        found = [f for f in search(store=store, embedder=embedder, query=question, k=5) if f.chunk.path.endswith("a11.txt")]
        assert len(found) >= 2
        calls: list[list[str]] = []
        embed = embedder.embed

        def counting(texts):
            calls.append(list(texts))
            return embed(texts)

        embedder.embed = counting  # the seam every caller uses, counted
        try:
            picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=3, store=store)
        finally:
            del embedder.embed
        entries = {t for f in found for t in chunk_units(f.chunk.text).texts if chunk_units(f.chunk.text).records}
        assert calls[0] == [question] and entries
        assert not entries & {t for texts in calls for t in texts}  # no entry embedded: all read from the store
        assert "The Eagle has landed." in picked[0].text + picked[1].text
        retrieve._UNIT_CACHES.pop(embedder, None)
        fresh = best_sentences(query=question, chunks=found, embedder=embedder, limit=3)
        assert [s.text for s in picked] == [s.text for s in fresh]
        # Embedded in other batches (bfloat16 where the CPU has it): the same vectors within 1e-3.
        assert all(abs(a.score - b.score) < 2e-3 for a, b in zip(picked, fresh))


@pytest.mark.models
def test_status_counts_the_chunks_with_stored_entry_vectors(tmp_path, docs):
    env = {"EDGELLAMA_DB": str(tmp_path / "cli.db")}
    indexed = run_cli("index", str(docs), env=env)
    assert indexed.returncode == 0, indexed.stderr
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    with Store.open(tmp_path / "cli.db") as store:
        count = store.stats().unit_vectors
    assert count > 0 and f"; {count} log or transcript chunks with their entries' vectors)" in status.stdout
