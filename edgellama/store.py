"""The one SQLite file: schema, numbered migrations, documents, chunks, FTS5 and embeddings.

The only module that writes SQL. It knows nothing of files on disk, models or the CLI.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import sqlite_utils

from .errors import StoreError

__all__ = ["Store", "probe", "DocumentRecord", "ChunkRecord", "NewChunk", "StoreStats", "SummaryRecord",
           "Consistency", "SCHEMA_VERSION", "MIGRATIONS", "snapshot_database", "ChunkSpan", "UnitVectors"]

# Each migration is a list of statements run in one transaction, recorded in schema_migrations.
# Never edit a released migration: add the next number.
MIGRATIONS: dict[int, tuple[str, list[str]]] = {
    1: (
        "documents, chunks, fts5, embeddings",
        [
            """CREATE TABLE documents (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL UNIQUE,
                content_hash TEXT,
                size INTEGER,
                mtime REAL,
                format TEXT,
                title TEXT,
                status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')),
                error TEXT,
                indexed_at REAL NOT NULL
            )""",
            """CREATE TABLE chunks (
                id INTEGER PRIMARY KEY,
                document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                ordinal INTEGER NOT NULL,
                text TEXT NOT NULL,
                context TEXT NOT NULL,
                text_hash TEXT NOT NULL,
                char_start INTEGER NOT NULL,
                char_end INTEGER NOT NULL,
                line_start INTEGER NOT NULL,
                line_end INTEGER NOT NULL,
                page INTEGER,
                line_map TEXT NOT NULL,
                token_count INTEGER NOT NULL,
                UNIQUE (document_id, ordinal)
            )""",
            "CREATE INDEX chunks_text_hash ON chunks(text_hash)",
            # Vectors are keyed by the hash of the text that was embedded, so an unchanged chunk
            # (same document re-indexed, a renamed file, a repeated paragraph) is never embedded twice.
            """CREATE TABLE embeddings (
                text_hash TEXT NOT NULL,
                model TEXT NOT NULL,
                dim INTEGER NOT NULL,
                vector BLOB NOT NULL,
                PRIMARY KEY (text_hash, model)
            )""",
            """CREATE VIRTUAL TABLE chunks_fts USING fts5(
                text, context, content='chunks', content_rowid='id',
                tokenize='porter unicode61 remove_diacritics 2'
            )""",
            """CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
                INSERT INTO chunks_fts(rowid, text, context) VALUES (new.id, new.text, new.context);
            END""",
            """CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
                INSERT INTO chunks_fts(chunks_fts, rowid, text, context)
                VALUES ('delete', old.id, old.text, old.context);
            END""",
            """CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
                INSERT INTO chunks_fts(chunks_fts, rowid, text, context)
                VALUES ('delete', old.id, old.text, old.context);
                INSERT INTO chunks_fts(rowid, text, context) VALUES (new.id, new.text, new.context);
            END""",
        ],
    ),
    2: (
        "summaries: cached intermediate summaries",
        [
            # One row per node of a summary tree (chunk batch, section, document, folder, topic).
            # ``key`` is the SHA-256 of the node's inputs with the method, model and prompt version,
            # so an unchanged branch is found again and only a changed one is recomputed.
            """CREATE TABLE summaries (
                key TEXT PRIMARY KEY,
                level TEXT NOT NULL,
                method TEXT NOT NULL,
                model TEXT NOT NULL,
                path TEXT,
                points TEXT NOT NULL,
                model_calls INTEGER NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX summaries_path ON summaries(path)",
        ],
    ),
    3: (
        "unit_embeddings: the vectors of a log's or transcript's entries",
        [
            # One row per chunk of a log or transcript: the vectors of its evidence units (its
            # entries, retrieve.chunk_units), in order, as float32 rows. Keyed like embeddings, by
            # the chunk's text hash and the model, so they follow the chunk vectors: kept for an
            # unchanged chunk, pruned with them, never read under another model. ``units_key`` is
            # the hash of the unit texts the rows were embedded from: if the rules splitting a
            # chunk into units change, a stale row is ignored, never misread.
            """CREATE TABLE unit_embeddings (
                text_hash TEXT NOT NULL,
                model TEXT NOT NULL,
                units_key TEXT NOT NULL,
                dim INTEGER NOT NULL,
                vectors BLOB NOT NULL,
                PRIMARY KEY (text_hash, model)
            )""",
            # The chunks indexed before this migration: each is looked at once (indexer: a log's or
            # transcript's gets its entries' vectors), since an unchanged file is never read again.
            "CREATE TABLE unit_pending (text_hash TEXT PRIMARY KEY)",
            "INSERT INTO unit_pending SELECT DISTINCT text_hash FROM chunks",
        ],
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)
WAL_SIZE_LIMIT = 64 << 20


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    path: str
    content_hash: str | None
    size: int | None
    mtime: float | None
    format: str | None
    title: str | None
    status: str
    error: str | None


@dataclass(frozen=True)
class NewChunk:
    ordinal: int
    text: str
    context: str
    text_hash: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page: int | None
    token_count: int
    line_map: str  # JSON list: the source line of each line of ``text`` (for exact citations)


@dataclass(frozen=True)
class ChunkRecord:
    id: int
    path: str
    title: str | None
    ordinal: int
    text: str
    context: str
    text_hash: str
    line_start: int
    line_end: int
    page: int | None
    token_count: int
    line_map: str

    def source_lines(self, start: int, end: int) -> tuple[int, int]:
        """First and last source line of the span ``text[start:end]``."""
        import json

        lines = json.loads(self.line_map) or [self.line_start]
        first = self.text.count("\n", 0, start)
        last = first + self.text.count("\n", start, max(start, end - 1))
        return lines[min(first, len(lines) - 1)], lines[min(last, len(lines) - 1)]


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk's text stands in its document's extracted text (show.py rebuilds lines from these)."""

    text: str
    char_start: int
    page: int | None
    line_map: str  # JSON list: the source line of each line of ``text``


@dataclass(frozen=True)
class UnitVectors:
    """The stored vectors of one chunk's evidence units (a log's or transcript's entries)."""

    units_key: str  # hash of the unit texts embedded (retrieve.ChunkUnits.key)
    dim: int
    vectors: bytes  # float32 rows, one per unit, in the chunk's order


@dataclass(frozen=True)
class SummaryRecord:
    key: str
    level: str
    method: str
    model: str
    path: str | None
    points: str  # JSON: [{"text": ..., "citations": [...]}, ...]
    model_calls: int  # what computing this node cost (0 for the extractive method)


@dataclass(frozen=True)
class Consistency:
    """What a crash could break, counted; all zero (and ``integrity`` == ["ok"]) when sound."""

    integrity: tuple[str, ...]  # PRAGMA integrity_check
    duplicate_documents: int  # paths stored twice
    duplicate_chunks: int  # (document, ordinal) stored twice
    chunks_without_document: int
    fts_rows_without_chunk: int  # full-text entries whose chunk is gone
    chunks_without_fts_row: int
    chunks_without_vector: int  # indexed chunks the dense search cannot see
    vectors_without_chunk: int  # cached vectors no chunk uses (removed at the end of each run)

    @property
    def problems(self) -> list[str]:
        out = [line for line in self.integrity if line != "ok"]
        for name in ("duplicate_documents", "duplicate_chunks", "chunks_without_document",
                     "fts_rows_without_chunk", "chunks_without_fts_row", "chunks_without_vector"):
            if getattr(self, name):
                out.append(f"{getattr(self, name)} {name.replace('_', ' ')}")
        return out


@dataclass(frozen=True)
class StoreStats:
    documents: int
    skipped: int
    chunks: int
    embeddings: int
    db_bytes: int
    schema_version: int
    unit_vectors: int = 0  # chunks of logs and transcripts with their entries' vectors stored


_DOC_COLUMNS = "id, path, content_hash, size, mtime, format, title, status, error"
_CHUNK_COLUMNS = (
    "c.id, d.path, d.title, c.ordinal, c.text, c.context, c.text_hash, c.line_start, c.line_end, "
    "c.page, c.token_count, c.line_map"
)


class Store:
    """One SQLite database in WAL mode. Use ``Store.open(path)``; close it with ``close()``."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._conn = conn
        self._writer_lock: int | None = None  # fd of the lock file while this store is the writer

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> "Store":
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(f"no index at {path}: run 'edgellama index PATH' first")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so DDL is transactional too.
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # The WAL file shrinks back to this after a checkpoint instead of keeping its peak
            # size (a full rescan can write hundreds of MB through it).
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open database {path}: {err}") from None
        store = cls(conn, path)
        try:
            store.migrate()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise StoreError(f"{path} is not a usable EdgeLlama database (corrupt, or not one): {err}") from None
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> "Store":
        """A file that must not change (a bundle's snapshot): read only, no journal mode set, not
        migrated; a schema newer than ours is refused."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"no database at {path}")
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            store = cls(conn, path)
            version = store.schema_version()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path} is not a usable EdgeLlama database: {err}") from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{path} has schema version {version}, newer than this EdgeLlama ({SCHEMA_VERSION})")
        return store

    def close(self) -> None:
        self._conn.close()
        if self._writer_lock is not None:
            os.close(self._writer_lock)  # releases the lock
            self._writer_lock = None

    def acquire_writer(self, *, owner: str) -> None:
        """Become the one process that indexes this database (an flock on ``DB.lock``, released on
        close or exit): two indexers would each delete the other's documents and vectors as
        "not seen". Raises StoreError naming the holder (``owner`` of the other process)."""
        import fcntl

        lock_path = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StoreError(f"cannot open the lock file {lock_path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"{self.path} is being indexed by {holder}; one indexer per database:"
                                 " stop it first, or index through it") from None
            raise StoreError(f"cannot lock {lock_path}: {err.strerror or err}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        self._writer_lock = fd
        self.check_intact()

    def check_intact(self) -> None:
        """Refuse to write into a damaged database (StoreError, nothing written): indexing into it
        could spread the damage, and the user may still rescue it. ``PRAGMA quick_check`` reads
        every page once (about a second per GB)."""
        try:
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as err:
            problems = [str(err)]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is corrupt ({'; '.join(problems)[:200]}); nothing was written to it:"
                             " restore a backup, or move it away and index again")

    def checkpoint(self) -> None:
        """Copy the WAL into the database and cut it back (after a large run); a reader holding an
        old snapshot only makes this a no-op until the next one, never an error."""
        self._conn.execute("PRAGMA busy_timeout = 1000")
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            pass
        finally:
            self._conn.execute("PRAGMA busy_timeout = 30000")

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; any SQLite error (a full disk, an I/O error) is rolled back
        and raised as StoreError with SQLite's own message, never masked by a failing ROLLBACK
        (SQLITE_FULL may already have ended the transaction)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            self._rollback()
            raise  # a bug in the caller's rows, not a fault of the disk
        except sqlite3.Error as err:
            self._rollback()
            raise StoreError(f"cannot write to {self.path}: {err}") from err
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one to report

    # -- schema ---------------------------------------------------------------------------------

    def schema_version(self) -> int:
        if not self.db["schema_migrations"].exists():
            return 0
        row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def migrate(self, *, target: int | None = None) -> None:
        """Apply the missing migrations up to ``target`` (default: the latest) in ONE transaction:
        a crash or a failing statement leaves the database at its old version, never half-way."""
        target = SCHEMA_VERSION if target is None else target
        if self.schema_version() == target:
            return  # the common case: no write lock taken, so readers open fast beside a writer
        with self.transaction():
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this EdgeLlama ({SCHEMA_VERSION})"
                )
            for version in range(current + 1, target + 1):
                name, statements = MIGRATIONS[version]
                for statement in statements:
                    self._conn.execute(statement)
                self._conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )

    # -- documents --------------------------------------------------------------------------------

    def documents(self) -> dict[str, DocumentRecord]:
        rows = self._conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents")
        return {row[1]: DocumentRecord(*row) for row in rows}

    def document(self, path: str) -> DocumentRecord | None:
        row = self._conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE path = ?", (path,)).fetchone()
        return DocumentRecord(*row) if row else None

    def replace_document(
        self,
        *,
        path: str,
        content_hash: str,
        size: int,
        mtime: float,
        format: str,
        title: str | None,
        chunks: Sequence[NewChunk],
        vectors: dict[str, bytes],
        model: str,
        dim: int,
        unit_vectors: dict[str, UnitVectors] | None = None,
    ) -> None:
        """Write a document, its chunks and any new vectors in one transaction (all or nothing).
        ``unit_vectors``: new vectors of its chunks' evidence units, by chunk text hash."""
        with self.transaction():
            self._delete_documents([path])
            cur = self._conn.execute(
                "INSERT INTO documents (path, content_hash, size, mtime, format, title, status, error, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'indexed', NULL, ?)",
                (path, content_hash, size, mtime, format, title, time.time()),
            )
            doc_id = cur.lastrowid
            self._conn.executemany(
                "INSERT INTO chunks (document_id, ordinal, text, context, text_hash, char_start, char_end,"
                " line_start, line_end, page, line_map, token_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (doc_id, c.ordinal, c.text, c.context, c.text_hash, c.char_start, c.char_end,
                     c.line_start, c.line_end, c.page, c.line_map, c.token_count)
                    for c in chunks
                ],
            )
            self._conn.executemany(
                "INSERT OR IGNORE INTO embeddings (text_hash, model, dim, vector) VALUES (?, ?, ?, ?)",
                [(h, model, dim, blob) for h, blob in vectors.items()],
            )
            self._put_unit_rows(unit_vectors or {}, model=model)

    def record_skipped(self, *, path: str, size: int | None, mtime: float | None, reason: str,
                       content_hash: str | None = None, format: str | None = None) -> None:
        """Remember a file that could not be indexed, and why; it has no chunks."""
        with self.transaction():
            self._delete_documents([path])
            self._conn.execute(
                "INSERT INTO documents (path, content_hash, size, mtime, format, title, status, error, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, NULL, 'skipped', ?, ?)",
                (path, content_hash, size, mtime, format, reason, time.time()),
            )

    def touch_document(self, path: str, *, mtime: float, size: int) -> None:
        """The file's metadata changed but its content hash did not."""
        with self.transaction():
            self._conn.execute("UPDATE documents SET mtime = ?, size = ? WHERE path = ?", (mtime, size, path))

    def remove_documents(self, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        with self.transaction():
            return self._delete_documents(paths)

    def _delete_documents(self, paths: Sequence[str]) -> int:
        removed = 0
        for path in paths:
            row = self._conn.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row is None:
                continue
            # Delete chunks explicitly (not only by cascade) so the FTS triggers run in any SQLite.
            self._conn.execute("DELETE FROM chunks WHERE document_id = ?", (row[0],))
            self._conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            removed += 1
        return removed

    def delete_orphan_summaries(self, *, documents_removed: bool = False) -> int:
        """Summaries hold text: drop those of paths that no longer hold any document (a deleted
        file, a folder emptied), and topic summaries (no path) once any document they may quote
        is gone. Run with the vector pruning, so a file moved between two scans keeps its cache."""
        with self.transaction():
            cur = self._conn.execute(
                "DELETE FROM summaries WHERE path IS NOT NULL AND NOT EXISTS (SELECT 1 FROM documents d"
                " WHERE d.status = 'indexed' AND (d.path = summaries.path"
                " OR (d.path > summaries.path || '/' AND d.path < summaries.path || '0')))"
            )
            removed = cur.rowcount
            if removed or documents_removed:
                removed += self._conn.execute("DELETE FROM summaries WHERE path IS NULL").rowcount
            return removed

    def delete_orphan_embeddings(self) -> int:
        """Delete the chunk vectors (and their units' vectors) no chunk uses; the chunk vectors deleted."""
        with self.transaction():
            cur = self._conn.execute(
                "DELETE FROM embeddings WHERE text_hash NOT IN (SELECT text_hash FROM chunks)"
            )
            self._conn.execute("DELETE FROM unit_embeddings WHERE text_hash NOT IN (SELECT text_hash FROM chunks)")
            return cur.rowcount

    # -- embeddings -------------------------------------------------------------------------------

    def _rows_in(self, sql: str, model: str, values: Sequence[str]) -> Iterator[tuple]:
        """The rows of ``sql`` (a SELECT with ``model = ?`` and ``IN ({marks})``) for ``values``, 500 at a time."""
        for i in range(0, len(values), 500):
            part = values[i : i + 500]
            yield from self._conn.execute(sql.format(marks=",".join("?" * len(part))), (model, *part))

    def missing_embeddings(self, text_hashes: Iterable[str], *, model: str) -> set[str]:
        wanted = set(text_hashes)
        sql = "SELECT text_hash FROM embeddings WHERE model = ? AND text_hash IN ({marks})"
        return wanted - {row[0] for row in self._rows_in(sql, model, list(wanted))}

    def missing_unit_vectors(self, units_keys: dict[str, str], *, model: str) -> set[str]:
        """Of ``units_keys`` (chunk text hash -> the key of its units), the chunks with no stored unit
        vectors of ``model`` for those very units."""
        sql = "SELECT text_hash, units_key FROM unit_embeddings WHERE model = ? AND text_hash IN ({marks})"
        return set(units_keys) - {h for h, key in self._rows_in(sql, model, list(units_keys)) if units_keys[h] == key}

    def pending_unit_chunks(self, *, limit: int) -> list[tuple[str, str | None]]:
        """Up to ``limit`` chunks indexed before unit vectors were stored (migration 3), not yet
        looked at: (text hash, a chunk's text with it, or None when no chunk has it any more)."""
        return self._conn.execute(
            "SELECT p.text_hash, (SELECT c.text FROM chunks c WHERE c.text_hash = p.text_hash LIMIT 1)"
            " FROM unit_pending p LIMIT ?", (limit,)).fetchall()

    def put_unit_vectors(self, vectors: dict[str, UnitVectors], *, model: str, looked_at: Sequence[str]) -> None:
        """Store unit vectors by chunk text hash and mark ``looked_at`` (pending chunks) done, in one
        transaction."""
        with self.transaction():
            self._put_unit_rows(vectors, model=model)
            self._conn.executemany("DELETE FROM unit_pending WHERE text_hash = ?", [(h,) for h in looked_at])

    def _put_unit_rows(self, vectors: dict[str, UnitVectors], *, model: str) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO unit_embeddings (text_hash, model, units_key, dim, vectors) VALUES (?, ?, ?, ?, ?)",
            [(h, model, u.units_key, u.dim, u.vectors) for h, u in vectors.items()])

    def unit_vectors(self, chunk_ids: Iterable[int], *, model: str) -> dict[int, UnitVectors]:
        """The stored unit vectors of ``model`` for these chunks (those that have some), by chunk id."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))  # the candidate chunks of one question: a handful
        rows = self._conn.execute(
            "SELECT c.id, u.units_key, u.dim, u.vectors FROM chunks c JOIN unit_embeddings u"
            f" ON u.text_hash = c.text_hash AND u.model = ? WHERE c.id IN ({marks})", (model, *ids))
        return {row[0]: UnitVectors(*row[1:]) for row in rows}

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to reload cached vectors."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def chunk_vectors(self, *, model: str) -> tuple[list[int], list[bytes], int]:
        """Every indexed chunk's id and vector bytes for one embedding model, and the dimension."""
        rows = self._conn.execute(
            "SELECT c.id, e.vector, e.dim FROM chunks c JOIN embeddings e"
            " ON e.text_hash = c.text_hash AND e.model = ? ORDER BY c.id",
            (model,),
        ).fetchall()
        dim = rows[0][2] if rows else 0
        return [r[0] for r in rows], [r[1] for r in rows], dim

    # -- search ---------------------------------------------------------------------------------

    def bm25(self, match: str, *, limit: int) -> list[tuple[int, float]]:
        """Chunk ids and BM25 scores (higher is better) for an FTS5 MATCH expression."""
        if not match:
            return []
        try:
            rows = self._conn.execute(
                "SELECT rowid, bm25(chunks_fts, 1.0, 0.5) AS score FROM chunks_fts"
                " WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                (match, limit),
            ).fetchall()
        except sqlite3.OperationalError as err:
            raise StoreError(f"full-text query failed: {err}") from None
        return [(row[0], -row[1]) for row in rows]

    def chunk_counts(self, words: Iterable[str]) -> dict[str, int]:
        """For each word, how many chunks hold it (FTS5's match: stemmed, in the text or heading)."""
        counts: dict[str, int] = {}
        for word in dict.fromkeys(words):
            try:
                counts[word] = self._conn.execute(
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',)).fetchone()[0]
            except sqlite3.OperationalError:  # a word FTS5 cannot parse as a phrase holds nothing
                counts[word] = 0
        return counts

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRecord]:
        ids = list(ids)
        found: dict[int, ChunkRecord] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._conn.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id"
                f" WHERE c.id IN ({marks})",
                part,
            )
            found.update((row[0], ChunkRecord(*row)) for row in rows)
        return found

    def document_chunks(self, path: str, *, first: int | None = None) -> list[ChunkRecord]:
        """The chunks of the document at ``path`` in order; only its ``first`` ones if given."""
        rows = self._conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.path = ? ORDER BY c.ordinal LIMIT ?",
            (path, -1 if first is None else first),
        )
        return [ChunkRecord(*row) for row in rows]

    def document_spans(self, path: str) -> list[ChunkSpan]:
        rows = self._conn.execute(
            "SELECT c.text, c.char_start, c.page, c.line_map FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.path = ? ORDER BY c.char_start, c.ordinal",
            (path,),
        )
        return [ChunkSpan(*row) for row in rows]

    # -- summaries ------------------------------------------------------------------------------

    def summary(self, key: str) -> SummaryRecord | None:
        row = self._conn.execute(
            "SELECT key, level, method, model, path, points, model_calls FROM summaries WHERE key = ?", (key,)
        ).fetchone()
        return SummaryRecord(*row) if row else None

    def put_summary(self, record: SummaryRecord) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO summaries (key, level, method, model, path, points, model_calls,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.key, record.level, record.method, record.model, record.path, record.points,
                 record.model_calls, time.time()),
            )

    def summary_count(self, *, path: str | None = None) -> int:
        if path is None:
            return self._conn.execute("SELECT count(*) FROM summaries").fetchone()[0]
        return self._conn.execute("SELECT count(*) FROM summaries WHERE path = ?", (path,)).fetchone()[0]

    # -- bundles (bundle.py) ----------------------------------------------------------------------

    def embedding_models(self) -> dict[str, int]:
        """Each embedding model's name with its vector count: a bundle names the one it was built with."""
        rows = self._conn.execute("SELECT model, count(*) FROM embeddings GROUP BY model ORDER BY model")
        return {row[0]: row[1] for row in rows}

    def remap_root(self, old: str, new: str) -> int:
        """Move every stored path under ``old`` (or equal to it) to the same place under ``new``, in
        one transaction; the number of documents moved. Summaries keep their cache keys (their inputs
        are text, not paths) and follow their document."""
        old, new = old.rstrip("/") or "/", new.rstrip("/") or "/"
        prefix = old if old == "/" else old + "/"
        params = (new, len(old) + 1, old, len(prefix), prefix)
        with self.transaction():
            moved = self._conn.execute(
                "UPDATE documents SET path = ? || substr(path, ?) WHERE path = ? OR substr(path, 1, ?) = ?",
                params).rowcount
            self._conn.execute(
                "UPDATE summaries SET path = ? || substr(path, ?) WHERE path = ? OR substr(path, 1, ?) = ?", params)
        return moved

    def replace_with(self, source: "Store") -> None:
        """Make this database a copy of ``source`` in ONE write transaction (SQLite's online backup
        API): readers on other connections, a daemon's included, see the old index until the commit
        and the new one after it; a crash in between leaves the old one. Never a file rename under
        open connections, whose WAL would then pair with the wrong file."""
        try:
            source._conn.backup(self._conn, pages=-1)
        except sqlite3.Error as err:
            raise StoreError(f"cannot write {self.path}: {err}") from None

    # -- status ---------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        one = lambda sql: self._conn.execute(sql).fetchone()[0]  # noqa: E731
        db_bytes = sum(
            p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
        )
        return StoreStats(
            documents=one("SELECT count(*) FROM documents WHERE status = 'indexed'"),
            skipped=one("SELECT count(*) FROM documents WHERE status = 'skipped'"),
            chunks=one("SELECT count(*) FROM chunks"),
            embeddings=one("SELECT count(*) FROM embeddings"),
            db_bytes=db_bytes,
            schema_version=self.schema_version(),
            unit_vectors=one("SELECT count(*) FROM unit_embeddings") if self.db["unit_embeddings"].exists() else 0,
        )

    def skipped(self) -> list[tuple[str, str]]:
        rows = self._conn.execute("SELECT path, error FROM documents WHERE status = 'skipped' ORDER BY path")
        return [(row[0], row[1]) for row in rows]

    def consistency(self) -> Consistency:
        """Counts of everything an interrupted write could leave behind, read in one snapshot.
        Vectors are matched by (text hash, model), so a chunk needs a vector of some model."""
        one = lambda sql: self._conn.execute(sql).fetchone()[0]  # noqa: E731
        self._conn.execute("BEGIN")  # one read snapshot, even while an indexer commits
        try:
            return Consistency(
                integrity=tuple(r[0] for r in self._conn.execute("PRAGMA integrity_check")),
                duplicate_documents=one(
                    "SELECT count(*) FROM (SELECT path FROM documents GROUP BY path HAVING count(*) > 1)"),
                duplicate_chunks=one(
                    "SELECT count(*) FROM (SELECT document_id, ordinal FROM chunks GROUP BY 1, 2 HAVING count(*) > 1)"),
                chunks_without_document=one(
                    "SELECT count(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)"),
                # chunks_fts_docsize is FTS5's own table: one row per indexed chunk id.
                fts_rows_without_chunk=one(
                    "SELECT count(*) FROM chunks_fts_docsize WHERE id NOT IN (SELECT id FROM chunks)"),
                chunks_without_fts_row=one(
                    "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT id FROM chunks_fts_docsize)"),
                chunks_without_vector=one(
                    "SELECT count(*) FROM chunks WHERE text_hash NOT IN (SELECT text_hash FROM embeddings)"),
                vectors_without_chunk=one(
                    "SELECT count(*) FROM embeddings WHERE text_hash NOT IN (SELECT text_hash FROM chunks)"),
            )
        finally:
            self._conn.execute("COMMIT")

    def integrity_problems(self) -> list[str]:
        """Empty when the database is sound: SQLite's own check plus our invariants."""
        problems = self.consistency().problems
        try:
            # rank=1: compare the full-text index with the chunks table it indexes.
            self._conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as err:
            problems.append(f"full-text index out of sync with chunks: {err}")
        return problems


def probe(path: Path) -> str | None:
    """None when the database at ``path`` opens and answers a cheap query on a fresh read-only
    connection, else what is wrong. A connection already open keeps reading a deleted or replaced
    file and may serve its header from cache: a new one sees what is on disk now (for /health)."""
    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, timeout=1)
        try:
            conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        return f"the database {path} does not answer: {err}"
    return None


def snapshot_database(source: Path, dest: Path) -> None:
    """A consistent copy of ``source`` at ``dest`` (a new file) while other connections may write:
    SQLite's online backup API reads one snapshot (copying the live file could tear a page or miss
    the WAL). The copy is in rollback-journal mode: one self-contained file to ship."""
    if dest.exists():
        raise StoreError(f"{dest} already exists")
    if not source.is_file():
        raise StoreError(f"no index at {source}: run 'edgellama index PATH' first")
    try:
        src = sqlite3.connect(str(source), timeout=30)  # only read: the backup API takes a read snapshot
    except sqlite3.Error as err:
        raise StoreError(f"cannot open database {source}: {err}") from None
    try:
        out = sqlite3.connect(str(dest), isolation_level=None)
        try:
            src.backup(out, pages=-1)
            out.execute("PRAGMA journal_mode = DELETE")
        finally:
            out.close()
    except sqlite3.Error as err:
        dest.unlink(missing_ok=True)
        raise StoreError(f"cannot snapshot {source} to {dest}: {err}") from None
    finally:
        src.close()
