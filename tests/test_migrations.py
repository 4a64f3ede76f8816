"""Schema migrations: every earlier version upgrades to the latest with its data kept, and a
migration that fails or is killed half-way leaves the database exactly at its old version.

Generic over ``store.MIGRATIONS``: a new migration is tested by adding it, nothing else."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from edgellama import store as store_module
from edgellama.errors import StoreError
from edgellama.store import MIGRATIONS, SCHEMA_VERSION, Store


def at_version(path, version: int) -> None:
    """A database as an older EdgeLlama left it: migrations 1..version, with a document in it."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    Store(conn, path).migrate(target=version)
    if version >= 1:  # the columns of migration 1, which later migrations must keep
        conn.execute("INSERT INTO documents (path, content_hash, size, mtime, format, title, status, indexed_at)"
                     " VALUES ('/old/a.md', 'c1', 10, 1.0, 'markdown', 'Old', 'indexed', 1.0)")
        conn.execute("INSERT INTO chunks (document_id, ordinal, text, context, text_hash, char_start, char_end,"
                     " line_start, line_end, page, line_map, token_count)"
                     " VALUES (1, 0, 'the old pump runs', 'Old', 'h1', 0, 17, 1, 1, NULL, '[1]', 4)")
        conn.execute("INSERT INTO embeddings (text_hash, model, dim, vector) VALUES ('h1', 'm', 2, ?)", (b"\0" * 8,))
    conn.close()


def layout(conn: sqlite3.Connection) -> dict:
    """Tables with their columns, plus index and trigger names: what a schema is, regardless of
    whether it was created at once or migrated step by step."""
    objects = conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    tables = sorted(name for kind, name in objects if kind == "table")
    return {
        "tables": {t: [(r[1], r[2], r[3], r[5]) for r in conn.execute(f"PRAGMA table_info('{t}')")] for t in tables},
        "others": sorted((kind, name) for kind, name in objects if kind != "table"),
    }


def test_the_migrations_are_numbered_from_one_without_gaps():
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", range(0, SCHEMA_VERSION))
def test_every_earlier_version_migrates_to_the_latest_keeping_its_data(tmp_path, version):
    old = tmp_path / f"v{version}.db"
    at_version(old, version)
    fresh = tmp_path / "fresh.db"
    Store.open(fresh).close()
    with Store.open(old) as store:
        assert store.schema_version() == SCHEMA_VERSION
        applied = [r[0] for r in store.db.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert applied == list(range(1, SCHEMA_VERSION + 1))
        assert store.integrity_problems() == []
        if version >= 1:
            assert [c.text for c in store.document_chunks("/old/a.md")] == ["the old pump runs"]
            assert [store.chunks([cid])[cid].text for cid, _ in store.bm25('"pump"', limit=5)] == ["the old pump runs"]
    with sqlite3.connect(old) as a, sqlite3.connect(fresh) as b:
        assert layout(a) == layout(b)


def test_a_failing_migration_leaves_the_old_version_untouched(tmp_path, monkeypatch):
    db = tmp_path / "x.db"
    at_version(db, SCHEMA_VERSION)
    before = layout(sqlite3.connect(db))
    broken = SCHEMA_VERSION + 1
    monkeypatch.setitem(MIGRATIONS, broken, ("broken", ["CREATE TABLE halfway (x)", "ALTER TABLE nowhere ADD y"]))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", broken)
    with pytest.raises(StoreError, match="no such table: nowhere"):
        Store.open(db)
    conn = sqlite3.connect(db)
    assert layout(conn) == before  # no halfway table: the whole step rolled back
    assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


KILLED_MIGRATION = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgellama import store
    slow = store.SCHEMA_VERSION + 1
    store.MIGRATIONS[slow] = ("slow", [
        "CREATE TABLE first_step (x)",
        # Seconds of work inside the migration's transaction: the moment the test kills us.
        "CREATE TABLE slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
        " WHERE x < 200000000) SELECT x FROM c",
    ])
    store.SCHEMA_VERSION = slow
    print("migrating", flush=True)
    store.Store.open(Path(sys.argv[1]))
    """
)


def test_a_migration_killed_half_way_leaves_the_old_version(tmp_path):
    db = tmp_path / "x.db"
    at_version(db, SCHEMA_VERSION)
    before = layout(sqlite3.connect(db))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MIGRATION, str(db)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.stdout.readline().strip() == "migrating"
    time.sleep(1.5)  # well inside the slow statement
    assert proc.poll() is None, "the migration should still be running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Store.open(db) as store:  # the real code: recovers the journal and sees the old version
        assert store.schema_version() == SCHEMA_VERSION
        assert store.integrity_problems() == []
        assert [c.text for c in store.document_chunks("/old/a.md")] == ["the old pump runs"]
    assert layout(sqlite3.connect(db)) == before
