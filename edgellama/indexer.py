"""scan -> hash -> extract -> chunk -> embed -> store, incremental: only changed files are read
again and only new chunk texts are embedded; each document is written in one transaction.

Never prints: progress goes to a callback.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .chunking import chunk_text, line_span
from .embed import Embedder
from .errors import ConfigError, EdgeLlamaError, SourceError
from .sources import ExtractedText, extract, format_for
from .store import NewChunk, Store

__all__ = ["index_paths", "IndexStats", "IndexProgress", "SkippedFile", "chunks_for_document", "EMBED_BATCH"]

EMBED_BATCH = 128  # chunks gathered across documents before one call to the embedder (bench/indexing.py)
CONTEXT_TOKENS = 32  # room kept for the title and heading embedded with each chunk


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class IndexProgress:
    done: int
    total: int
    path: str


@dataclass(frozen=True)
class IndexStats:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: tuple[SkippedFile, ...] = ()
    ignored: int = 0  # files of a type we do not read (images, archives, ...)
    chunks_written: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0


@dataclass
class _Pending:
    path: str
    content_hash: str
    size: int
    mtime: float
    extracted: ExtractedText
    chunks: list[NewChunk]
    is_new: bool


@dataclass
class _Run:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0


def _hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _context(title: str | None, heading: str) -> str:
    """Title and heading path, deduplicated and cut to about CONTEXT_TOKENS tokens (20 words)."""
    parts: list[str] = []
    for part in [title or "", *heading.split(" > ")]:
        part = part.strip()
        if part and (not parts or parts[-1].lower() != part.lower()):
            parts.append(part)
    words = " > ".join(parts).split()
    return " ".join(words[-20:])


def _page_segments(extracted: ExtractedText) -> list[tuple[int, int]]:
    """Character ranges that chunks must not cross: each page of a PDF, else the whole text."""
    if not extracted.pages:
        return [(0, len(extracted.text))]
    segments, start, pos = [], 0, 0
    lines = extracted.text.split("\n")
    for i, line in enumerate(lines):
        if i and extracted.pages[i] != extracted.pages[i - 1]:
            segments.append((start, pos))
            start = pos
        pos += len(line) + 1
    segments.append((start, len(extracted.text)))
    return segments


def chunks_for_document(extracted: ExtractedText, *, count_tokens: Callable[[str], int],
                        chunk_tokens: int, chunk_overlap: int) -> list[NewChunk]:
    """The rows to store for one document: chunk text, its heading context and source position.
    A chunk never crosses a page, so a citation names one page."""
    out: list[NewChunk] = []
    last_line = len(extracted.lines) - 1
    for seg_start, seg_end in _page_segments(extracted):
        for chunk in chunk_text(extracted.text[seg_start:seg_end], count_tokens=count_tokens,
                                max_tokens=chunk_tokens, overlap=chunk_overlap):
            start, end = seg_start + chunk.char_start, seg_start + chunk.char_end
            first, last = line_span(extracted.text, start, end)
            context = _context(extracted.title, chunk.heading)
            out.append(NewChunk(
                ordinal=len(out),
                text=chunk.text,
                context=context,
                text_hash=_hash(f"{context}\n{chunk.text}"),
                char_start=start,
                char_end=end,
                line_start=extracted.lines[min(first, last_line)],
                line_end=extracted.lines[min(last, last_line)],
                page=extracted.pages[min(first, last_line)] if extracted.pages else None,
                token_count=chunk.token_count,
                line_map=json.dumps(extracted.lines[first:last + 1], separators=(",", ":")),
            ))
    return out


def embedding_input(chunk: NewChunk) -> str:
    return f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text


def _walk(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def index_paths(
    *,
    store: Store,
    embedder: Embedder,
    paths: Sequence[Path],
    chunk_tokens: int,
    chunk_overlap: int,
    max_file_bytes: int,
    on_progress: Callable[[IndexProgress], None] | None = None,
    missing_ok: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> IndexStats:
    """Bring the index in line with ``paths`` (files or folders): add new files, re-index changed
    ones, drop documents under these paths whose files are gone. Safe to run again at any time.

    ``missing_ok``: a path that neither exists nor was indexed is passed over (the watcher's case:
    a file created and deleted before it settled). ``should_stop`` is asked after every file; when
    it says yes, what was read so far is written and the run ends early, consistent."""
    started = time.perf_counter()
    limit = getattr(embedder, "max_input_tokens", 512)
    if chunk_tokens + CONTEXT_TOKENS + 2 > limit:
        raise ConfigError(
            f"chunk_tokens {chunk_tokens} is too large for the embedder, which reads at most {limit} tokens"
            f" (chunk + {CONTEXT_TOKENS} for its heading): use at most {limit - CONTEXT_TOKENS - 2}"
        )
    roots = [os.path.abspath(p) for p in paths]
    known = store.documents()
    for root, given in zip(roots, paths):
        if not missing_ok and not os.path.lexists(root) and not any(_under(p, [root]) for p in known):
            raise EdgeLlamaError(f"path not found: {given}")
    candidates: list[Path] = []
    run = _Run()
    for root in roots:
        if not os.path.lexists(root):
            continue
        for path in _walk(Path(root)):
            if format_for(path) is None:
                run.ignored += 1
            else:
                candidates.append(path)
    seen: set[str] = set()
    pending: list[_Pending] = []
    pipeline = _EmbedPipeline(store, embedder, run)

    stopped = False
    try:
        for done, path in enumerate(candidates, start=1):
            if should_stop is not None and should_stop():
                stopped = True
                break
            key = str(path)
            seen.add(key)
            item = _prepare(store, embedder, path, key, known.get(key), run,
                            chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, max_file_bytes=max_file_bytes)
            if item is not None:
                pending.append(item)
                if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
                    pipeline.submit(pending)
                    pending = []
            if on_progress:
                on_progress(IndexProgress(done=done, total=len(candidates), path=key))
        pipeline.submit(pending)
        pipeline.finish()
    finally:
        pipeline.close()
    if not stopped:  # an early stop has not seen every file: removing the unseen would be wrong
        gone = [p for p in known if _under(p, roots) and p not in seen]
        run.removed = store.remove_documents(gone)
    store.delete_orphan_embeddings()
    return IndexStats(
        added=run.added, changed=run.changed, unchanged=run.unchanged, removed=run.removed,
        skipped=tuple(run.skipped), ignored=run.ignored, chunks_written=run.chunks_written,
        chunks_embedded=run.chunks_embedded, seconds=time.perf_counter() - started,
    )


def _prepare(store: Store, embedder: Embedder, path: Path, key: str, existing, run: _Run, *,
             chunk_tokens: int, chunk_overlap: int, max_file_bytes: int) -> _Pending | None:
    """Read and chunk one file if it changed; record a skip or an unchanged file and return None."""

    def skip(reason: str, **meta) -> None:
        run.skipped.append(SkippedFile(key, reason))
        store.record_skipped(path=key, reason=reason, format=format_for(path), **meta)

    try:
        st = os.stat(path)
    except OSError as err:
        skip(f"cannot stat: {err.strerror or err}", size=None, mtime=None)
        return None
    if not stat.S_ISREG(st.st_mode):
        skip("not a regular file", size=None, mtime=None)
        return None
    if existing and existing.size == st.st_size and existing.mtime == st.st_mtime:
        if existing.status == "skipped":
            run.skipped.append(SkippedFile(key, existing.error or "skipped"))
        else:
            run.unchanged += 1
        return None
    if st.st_size > max_file_bytes:
        skip(f"larger than the {max_file_bytes / 1e6:g} MB limit ({st.st_size / 1e6:.1f} MB)",
             size=st.st_size, mtime=st.st_mtime)
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_file_bytes + 1)
    except OSError as err:
        skip(f"cannot read: {err.strerror or err}", size=st.st_size, mtime=st.st_mtime)
        return None
    content_hash = _hash(data)
    if existing and existing.status == "indexed" and existing.content_hash == content_hash:
        store.touch_document(key, mtime=st.st_mtime, size=st.st_size)
        run.unchanged += 1
        return None
    try:
        extracted = extract(path, data)
    except SourceError as err:
        skip(str(err), size=st.st_size, mtime=st.st_mtime, content_hash=content_hash)
        return None
    chunks = chunks_for_document(extracted, count_tokens=embedder.count_tokens,
                                 chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
    return _Pending(path=key, content_hash=content_hash, size=st.st_size, mtime=st.st_mtime,
                    extracted=extracted, chunks=chunks, is_new=existing is None or existing.status != "indexed")


class _EmbedPipeline:
    """Embeds one batch on a helper thread while the caller reads and chunks the next files, so
    extraction hides behind the encoder (torch and the tokenizer release the GIL). Batches are
    written in order, each before the next one is sent, by the caller's thread (the store's)."""

    def __init__(self, store: Store, embedder: Embedder, run: _Run):
        self.store, self.embedder, self.run = store, embedder, run
        self._executor = None
        self._in_flight = None  # (batch, missing hashes, future of their vectors)

    def submit(self, batch: list[_Pending]) -> None:
        self.finish()  # the previous batch goes to the database first: its vectors count as stored
        if not batch:
            return
        by_hash = {c.text_hash: c for p in batch for c in p.chunks}
        missing = sorted(self.store.missing_embeddings(by_hash, model=self.embedder.name))
        if not missing:
            _write_pending(self.store, self.embedder, batch, self.run, {})
            return
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgellama-embed")
        texts = [embedding_input(by_hash[h]) for h in missing]
        self._in_flight = (batch, missing, self._executor.submit(self.embedder.embed, texts))

    def finish(self) -> None:
        if self._in_flight is None:
            return
        batch, missing, future = self._in_flight
        self._in_flight = None
        matrix = future.result()
        self.run.chunks_embedded += len(missing)
        _write_pending(self.store, self.embedder, batch, self.run,
                       {h: matrix[i].tobytes() for i, h in enumerate(missing)})

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _write_pending(store: Store, embedder: Embedder, pending: list[_Pending], run: _Run,
                   vectors: dict[str, bytes]) -> None:
    for item in pending:
        store.replace_document(
            path=item.path, content_hash=item.content_hash, size=item.size, mtime=item.mtime,
            format=item.extracted.format, title=item.extracted.title, chunks=item.chunks,
            vectors={c.text_hash: vectors[c.text_hash] for c in item.chunks if c.text_hash in vectors},
            model=embedder.name, dim=embedder.dim,
        )
        run.chunks_written += len(item.chunks)
        if item.is_new:
            run.added += 1
        else:
            run.changed += 1
