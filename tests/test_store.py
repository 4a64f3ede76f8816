import sqlite3

import pytest

from edgellama.errors import StoreError
from edgellama.store import SCHEMA_VERSION, NewChunk, Store


def chunk(ordinal: int, text: str) -> NewChunk:
    return NewChunk(ordinal=ordinal, text=text, context="Doc", text_hash=f"h-{text}", char_start=0,
                    char_end=len(text), line_start=1, line_end=1, page=None, token_count=3,
                    line_map="[1]")


def write(store: Store, path: str, *texts: str) -> None:
    store.replace_document(path=path, content_hash=f"c-{texts}", size=1, mtime=1.0, format="text", title="Doc",
                           chunks=[chunk(i, t) for i, t in enumerate(texts)],
                           vectors={f"h-{t}": b"\0" * 8 for t in texts}, model="m", dim=2)


def test_migrations_are_recorded_and_idempotent(tmp_path):
    db = tmp_path / "x.db"
    Store.open(db).close()
    with Store.open(db) as store:
        assert store.schema_version() == SCHEMA_VERSION
        rows = store.db.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_replacing_a_document_never_duplicates_and_keeps_fts_in_sync(tmp_path):
    with Store.open(tmp_path / "x.db") as store:
        write(store, "/a.md", "alpha bravo", "charlie delta")
        write(store, "/a.md", "alpha echo")
        write(store, "/b.md", "alpha foxtrot")
        assert store.stats().chunks == 2
        assert {store.chunks([cid])[cid].text for cid, _ in store.bm25('"alpha"', limit=10)} == {"alpha echo", "alpha foxtrot"}
        assert store.bm25('"charlie"', limit=10) == []
        store.remove_documents(["/b.md"])
        assert store.delete_orphan_embeddings() == 3  # alpha bravo and charlie delta (replaced), alpha foxtrot (removed)
        assert store.integrity_problems() == []


def test_a_failed_write_leaves_the_old_document(tmp_path):
    with Store.open(tmp_path / "x.db") as store:
        write(store, "/a.md", "alpha bravo")
        with pytest.raises(sqlite3.IntegrityError):
            store.replace_document(path="/a.md", content_hash="x", size=1, mtime=1.0, format="text", title=None,
                                   chunks=[chunk(0, "new"), chunk(0, "same ordinal twice")], vectors={},
                                   model="m", dim=2)
        assert [c.text for c in store.document_chunks("/a.md")] == ["alpha bravo"]
        assert store.integrity_problems() == []


def test_skipped_files_keep_their_reason(tmp_path):
    with Store.open(tmp_path / "x.db") as store:
        write(store, "/a.md", "alpha")
        store.record_skipped(path="/a.md", size=3, mtime=2.0, reason="binary content")
        assert store.skipped() == [("/a.md", "binary content")]
        assert store.stats().chunks == 0


def test_not_a_database_is_a_store_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(StoreError, match="is not a database"):
        Store.open(bad)


def test_a_newer_schema_is_refused(tmp_path):
    with Store.open(tmp_path / "x.db") as store:
        store.db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this EdgeLlama"):
        Store.open(tmp_path / "x.db")


def test_missing_database_when_not_creating(tmp_path):
    with pytest.raises(StoreError, match="run 'edgellama index PATH' first"):
        Store.open(tmp_path / "none.db", create=False)
