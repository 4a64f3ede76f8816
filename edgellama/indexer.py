"""scan -> hash -> extract -> chunk -> embed -> store, incremental: only changed files are read
again and only new chunk texts are embedded; each document is written in one transaction.

Never prints: progress goes to a callback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import stat
import threading
import time
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .chunking import chunk_text
from .embed import Embedder
from .errors import ConfigError, EdgeLlamaError, SourceError
from .sources import ExtractedText, IsolatedExtractor, extract, format_for
from .retrieve import ChunkUnits, chunk_units, is_record_chunk
from .store import NewChunk, Store, UnitVectors

__all__ = ["index_paths", "index_records", "forget_folders", "TextRecord", "IndexStats", "IndexProgress",
           "SkippedFile", "chunks_for_document", "context_room", "EMBED_BATCH", "DEFAULT_MAX_EXTRACT_SECONDS",
           "IndexOptions", "embedding_input"]

EMBED_BATCH = 1024  # chunks gathered across documents before one call to the embedder, which batches them by
# length: from more texts it finds closer lengths (SciFact, 912 chunks: 1.28x the chunks/s of 128 sorted by
# characters, bench/RESULTS.md row 10). Computed tokens over the texts' own, batches of 16: 1.018x at 512,
# 1.010x at 1024; a stopped run loses at most this batch (about 15 s here)
CONTEXT_TOKENS = 32  # the least room kept for the title and heading embedded with each chunk (context_room)


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
    units_embedded: int = 0  # evidence units of log and transcript chunks embedded and stored
    vanished: int = 0  # files deleted between the scan and the read
    # Folders that could not be read (missing, empty mount point, EIO, EACCES): their documents
    # are kept, never removed, until they can be read again.
    unavailable: tuple[SkippedFile, ...] = ()


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
    vanished: int = 0
    unavailable: list[SkippedFile] = field(default_factory=list)
    units_embedded: int = 0


def _hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _context(title: str | None, heading: str, count_tokens: Callable[[str], int], max_tokens: int) -> str:
    """Title and heading path, deduplicated, keeping its last words: at most 20 words and
    ``max_tokens`` tokens, so that context + chunk always fit the embedder's window (a title of
    chemical names can be 90 tokens in 20 words, and the model would cut the chunk's tail)."""
    parts: list[str] = []
    for part in [title or "", *heading.split(" > ")]:
        part = part.strip()
        if part and (not parts or parts[-1].lower() != part.lower()):
            parts.append(part)
    words = " > ".join(parts).split()[-20:]
    while words and count_tokens(" ".join(words)) > max_tokens:
        words = words[1:]
    return " ".join(words)


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
                        chunk_tokens: int, chunk_overlap: int, context_tokens: int) -> list[NewChunk]:
    """The rows to store for one document: chunk text, its heading context (at most
    ``context_tokens``: see ``context_room``) and source position. A chunk never crosses a page,
    so a citation names one page."""
    out: list[NewChunk] = []
    last_line = len(extracted.lines) - 1
    # Line of a character offset by bisection: counting newlines from the start for every chunk
    # is quadratic, and took minutes on a 10 MB file.
    newlines = [m.start() for m in re.finditer("\n", extracted.text)]
    contexts: dict[str, str] = {}
    for seg_start, seg_end in _page_segments(extracted):
        for chunk in chunk_text(extracted.text[seg_start:seg_end], count_tokens=count_tokens,
                                max_tokens=chunk_tokens, overlap=chunk_overlap):
            start, end = seg_start + chunk.char_start, seg_start + chunk.char_end
            first = bisect_left(newlines, start)
            last = bisect_left(newlines, max(start, end - 1))
            if chunk.heading not in contexts:  # the chunks under one heading share it: tokenized once
                contexts[chunk.heading] = _context(extracted.title, chunk.heading, count_tokens, context_tokens)
            context = contexts[chunk.heading]
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


def _path_key(path: Path | str) -> str:
    """How a path is stored: itself, or for a name that is not valid UTF-8 (which SQLite cannot
    store), its bytes with the bad ones written as \\xNN. The same file always gets the same key."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class _Entry:
    path: Path
    error: str | None = None  # a folder that could not be listed


def _walk(root: Path, *, follow_root: bool = True) -> Iterator[_Entry]:
    """Every non-folder entry under ``root`` in sorted order, depth first, at any depth (a stack,
    not recursion). Hidden names are left out; symlinked folders are not entered, so a link loop
    cannot trap the walk and a link to ``/`` cannot index the disk; ``root`` itself is followed
    only with ``follow_root`` (a folder the user named). A folder that cannot be listed is yielded
    with its error."""
    if not (os.path.isdir(root) if follow_root else _is_real_dir(root)):
        yield _Entry(root)
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: os.fsencode(e.name))
        except OSError as err:
            yield _Entry(folder, f"cannot list folder: {err.strerror or err}")
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(Path(entry.path))
            else:
                yield _Entry(Path(entry.path))
        stack.extend(reversed(subfolders))


def _is_real_dir(path: Path | str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _base_of(path: str, bases: Sequence[str]) -> str | None:
    """The innermost of ``bases`` that holds ``path`` strictly below it."""
    inside = [b for b in bases if path != b and _under(path, [b])]
    return max(inside, key=len) if inside else None


def _behind_symlink(path: str, bases: Sequence[str]) -> bool:
    """True when a folder between the base holding ``path`` and ``path`` is a symlink: the path
    is then not inside the watched tree at all (``root/linkdir/file`` with ``linkdir -> /``)."""
    base = _base_of(path, bases)
    if base is None:
        return False
    parts = Path(os.path.relpath(path, base)).parts[:-1]
    folder = base
    for part in parts:
        folder = os.path.join(folder, part)
        if os.path.islink(folder):
            return True
    return False


class _BehindSymlink(Exception):
    """A folder on the way to the file turned into a symlink (or not a folder) after the check."""


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _open_beneath(path: str, bases: Sequence[str]) -> int:
    """Open ``path`` for reading one component at a time from the base folder that holds it,
    with O_NOFOLLOW on each: a folder swapped for a symlink after the checks cannot lead the read
    outside (the race a check-then-open has). A path that is itself a base is opened as named."""
    base = _base_of(path, bases)
    if base is None:
        return os.open(path, _READ_FLAGS)
    parts = Path(os.path.relpath(path, base)).parts
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _BehindSymlink() from None
                raise
            os.close(fd)
            fd = inner
        try:
            return os.open(parts[-1], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _BehindSymlink() from None  # the file itself became a link: judged again next run
            raise
    finally:
        os.close(fd)


def _keys_under(sorted_keys: Sequence[str], root_key: str) -> Iterator[str]:
    """The keys equal to or below ``root_key``, found by bisection in sorted keys: a burst of 10,000
    changed paths costs 10,000 lookups, not 10,000 x every known document."""
    prefix = root_key.rstrip(os.sep) + os.sep
    for i in range(bisect_left(sorted_keys, root_key), len(sorted_keys)):
        key = sorted_keys[i]
        if key == root_key:
            yield key
            continue
        if not key.startswith(root_key):
            return
        if key.startswith(prefix):
            yield key


DEFAULT_MAX_EXTRACT_SECONDS = 60.0


def context_room(embedder: Embedder, chunk_tokens: int) -> int:
    """Tokens left in the embedder's window for a chunk's title and heading: the window less the
    largest chunk and the 2 special tokens (54 for all-MiniLM-L6-v2 at the default 200). Fewer
    than CONTEXT_TOKENS is a configuration error."""
    limit = getattr(embedder, "max_input_tokens", 512)
    if chunk_tokens + CONTEXT_TOKENS + 2 > limit:
        raise ConfigError(
            f"chunk_tokens {chunk_tokens} is too large for the embedder, which reads at most {limit} tokens"
            f" (chunk + {CONTEXT_TOKENS} for its heading): use at most {limit - CONTEXT_TOKENS - 2}"
        )
    return limit - 2 - chunk_tokens


@dataclass(frozen=True)
class IndexOptions:
    """The indexing limits every caller takes from the settings (``index_paths(**options.kwargs())``)."""

    chunk_tokens: int
    chunk_overlap: int
    max_file_bytes: int
    max_extract_seconds: float | None

    @classmethod
    def from_settings(cls, settings) -> "IndexOptions":
        """The options of ``config.Settings`` (max_file_mb in MB, as the config file says it)."""
        return cls(chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap,
                   max_file_bytes=int(settings.max_file_mb * 1e6), max_extract_seconds=settings.max_extract_seconds)

    def kwargs(self) -> dict:
        """As keyword arguments of ``index_paths`` (and ``watch.IndexWorker``)."""
        return {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.chunk_overlap,
                "max_file_bytes": self.max_file_bytes, "max_extract_seconds": self.max_extract_seconds}


def index_paths(
    *,
    store: Store,
    embedder: Embedder,
    paths: Sequence[Path],
    chunk_tokens: int,
    chunk_overlap: int,
    max_file_bytes: int,
    max_extract_seconds: float | None = DEFAULT_MAX_EXTRACT_SECONDS,
    on_progress: Callable[[IndexProgress], None] | None = None,
    missing_ok: bool = False,
    should_stop: Callable[[], bool] | None = None,
    within: Sequence[Path] | None = None,
    prune_vectors: bool = True,
    keep_unavailable: bool = False,
    extractor: IsolatedExtractor | None = None,
) -> IndexStats:
    """Bring the index in line with ``paths`` (files or folders): add new files, re-index changed
    ones, drop documents under these paths whose files are gone. Safe to run again at any time,
    and safe to kill at any time: each document is one transaction, and the next run skips the
    documents already written (same size and mtime) without reading or embedding them again.

    ``missing_ok``: a path that neither exists nor was indexed is passed over (the watcher's case:
    a file created and deleted before it settled). ``should_stop`` is asked after every file; when
    it says yes, what was read so far is written and the run ends early, consistent.
    ``max_extract_seconds``: the time one file may take to turn into chunks, else it is skipped
    (PDF and HTML are read by ``extractor``'s helper process, killed at the deadline; one is
    started for this run when none is given).
    ``prune_vectors``: delete the vectors no chunk uses any more (False keeps them for a later run).
    ``within``: the watched folders (default: ``paths``): symlinks must resolve into them, and no
    folder below them is entered through a symlink. A folder that cannot be listed keeps its
    documents; with ``keep_unavailable`` (the watcher) so does one of ``within`` that is missing
    or empty while documents from it are indexed (an unplugged disk, an empty mount point): they
    are listed in ``IndexStats.unavailable``, never deleted."""
    started = time.perf_counter()
    context_tokens = context_room(embedder, chunk_tokens)
    roots = [os.path.abspath(p) for p in paths]
    root_keys = [_path_key(r) for r in roots]
    known = store.documents()
    known_keys = sorted(known)
    for root, root_key, given in zip(roots, root_keys, paths):
        if not missing_ok and not os.path.lexists(root) and next(_keys_under(known_keys, root_key), None) is None:
            raise EdgeLlamaError(f"path not found: {given}")
    bases = tuple(os.path.abspath(w) for w in within) if within is not None else tuple(roots)
    own_extractor = IsolatedExtractor() if extractor is None else None
    limits = _Limits(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, context_tokens=context_tokens,
                     max_file_bytes=max_file_bytes,
                     max_extract_seconds=max_extract_seconds,
                     real_roots=tuple(os.path.realpath(b) for b in bases), bases=bases,
                     extractor=extractor or own_extractor)
    candidates: list[Path] = []
    run = _Run()
    seen: set[str] = set()
    kept: list[str] = []  # folders whose documents stay although their files were not seen
    for root, root_key in zip(roots, root_keys):
        named = within is None or root in bases  # a folder the user configured: its own link is followed
        if not named and _behind_symlink(root, bases):
            continue  # not inside the watched tree: whatever was indexed under this path goes
        reason = _unavailable(root, has_documents=next(_keys_under(known_keys, root_key), None) is not None,
                              missing_too=keep_unavailable and named)
        if reason is not None:
            run.unavailable.append(SkippedFile(root_key, reason))
            kept.append(root_key)
            continue
        if not os.path.lexists(root):
            continue
        for entry in _walk(Path(root), follow_root=named):
            if entry.error is not None:
                key = _path_key(entry.path)
                seen.add(key)
                kept.append(key)  # EIO or EACCES on one folder must not delete what it holds
                run.skipped.append(SkippedFile(key, entry.error))
                store.record_skipped(path=key, reason=entry.error, size=None, mtime=None)
            elif format_for(entry.path) is None:
                run.ignored += 1
            else:
                candidates.append(entry.path)
    pending: list[_Pending] = []
    pipeline = _EmbedPipeline(store, embedder, run)

    stopped = False
    try:
        for done, path in enumerate(candidates, start=1):
            if should_stop is not None and should_stop():
                stopped = True
                break
            key = _path_key(path)
            seen.add(key)
            item = _prepare(store, embedder, path, key, known.get(key), run, limits)
            if item is not None:
                pending.append(item)
                if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
                    pipeline.submit(pending)
                    pending = []
            if on_progress:
                on_progress(IndexProgress(done=done, total=len(candidates), path=key))
        pipeline.submit(pending)
        pipeline.finish()
        if not stopped:
            run.units_embedded += _store_pending_units(store, embedder, should_stop=should_stop)
    finally:
        pipeline.close()
        if own_extractor is not None:
            own_extractor.close()
    if not stopped:  # an early stop has not seen every file: removing the unseen would be wrong
        gone = {k for rk in root_keys for k in _keys_under(known_keys, rk)
                if k not in seen and not (kept and _under(k, kept))}
        run.removed += store.remove_documents(sorted(gone))
    if prune_vectors:  # the watcher keeps them until its next full scan: a move seen as a
        store.delete_orphan_embeddings()  # delete, then a create, must not re-embed the file
        store.delete_orphan_summaries(documents_removed=run.removed > 0)
    if run.chunks_written >= EMBED_BATCH or run.removed >= EMBED_BATCH:
        store.checkpoint()  # a big run: the WAL goes back to its size limit now, not at some later write
    return IndexStats(
        added=run.added, changed=run.changed, unchanged=run.unchanged, removed=run.removed,
        skipped=tuple(run.skipped), ignored=run.ignored, chunks_written=run.chunks_written,
        chunks_embedded=run.chunks_embedded, seconds=time.perf_counter() - started, vanished=run.vanished,
        unavailable=tuple(run.unavailable), units_embedded=run.units_embedded,
    )


def forget_folders(*, store: Store, folders: Sequence[Path], keep: Sequence[Path]) -> int:
    """Remove the documents under ``folders`` that are not under ``keep`` (folders no longer
    watched), with their unused vectors and summaries. Returns the documents removed."""
    known_keys = sorted(store.documents())
    keep_keys = [_path_key(os.path.abspath(k)) for k in keep]
    gone = {k for f in folders for k in _keys_under(known_keys, _path_key(os.path.abspath(f)))
            if not _under(k, keep_keys)}
    removed = store.remove_documents(sorted(gone))
    store.delete_orphan_embeddings()
    store.delete_orphan_summaries(documents_removed=removed > 0)
    return removed


def _unavailable(root: str, *, has_documents: bool, missing_too: bool) -> str | None:
    """Why a folder's documents must be kept although its files cannot be seen, or None. A folder
    that cannot be listed (EIO, EACCES) is never read as empty; with ``missing_too`` neither is a
    missing folder nor an empty one while documents from it are indexed (an unplugged disk leaves
    an empty mount point: deleting files one by one still removes them, through their events)."""
    if not os.path.lexists(root):
        return "missing (unplugged or moved away?); its documents are kept" if missing_too and has_documents else None
    if not os.path.isdir(root):
        return None
    try:
        with os.scandir(root) as listing:
            empty = next(iter(listing), None) is None
    except OSError as err:
        return f"cannot list folder: {err.strerror or err}; its documents are kept"
    if empty and missing_too and has_documents:
        return "empty (not mounted?); its documents are kept"
    return None


@dataclass(frozen=True)
class _Limits:
    chunk_tokens: int
    chunk_overlap: int
    context_tokens: int
    max_file_bytes: int
    max_extract_seconds: float | None
    real_roots: tuple[str, ...]  # symlinks must resolve inside one of these
    bases: tuple[str, ...]  # the folders no path below may pass a symlinked folder under
    extractor: IsolatedExtractor | None


class _Vanished(Exception):
    """The file was deleted between the scan and the read."""


class _NotRegular(Exception):
    """The path turned out not to be a regular file once opened."""


class _Changing(Exception):
    """The file changed while it was being read."""


class _Timeout(BaseException):
    """Raised by SIGALRM inside a parser; a BaseException so that the parser's own
    ``except Exception`` cannot swallow it."""


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
READ_ATTEMPTS = 3


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "an unknown kind of file")


@contextmanager
def _hard_time_limit(seconds: float | None) -> Iterator[None]:
    """For the formats read in-process (plain text, or every format when no helper process is
    used): in the main thread (the CLI) SIGALRM interrupts a parser stuck in one call; in other
    threads the cooperative checks in sources.extract are the limit. PDF and HTML have the helper
    process's hard deadline instead (sources.IsolatedExtractor)."""
    if (seconds is None or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_regular(path: Path | str, max_bytes: int, bases: Sequence[str] = ()) -> tuple[os.stat_result, bytes]:
    """Open without blocking (a FIFO or device swapped in after the scan cannot hang us) and
    without following a symlink below ``bases`` (see _open_beneath), check it is a regular file on
    the open descriptor, read at most ``max_bytes + 1`` bytes, and check it did not change meanwhile."""
    try:
        fd = _open_beneath(str(path), bases)
    except FileNotFoundError:
        raise _Vanished() from None
    with open(fd, "rb", closefd=True) as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(_kind(st.st_mode))
        data = fh.read(min(st.st_size, max_bytes) + 1)
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or len(data) != min(st.st_size, max_bytes + 1):
        raise _Changing()
    return st, data


def _prepare(store: Store, embedder: Embedder, path: Path, key: str, existing, run: _Run,
             limits: _Limits) -> _Pending | None:
    """Read and chunk one file if it changed; record a skip or an unchanged file and return None."""

    def skip(reason: str, **meta) -> None:
        run.skipped.append(SkippedFile(key, reason))
        store.record_skipped(path=key, reason=reason, format=format_for(path), **meta)

    def vanished() -> None:
        run.vanished += 1
        if existing is not None:
            run.removed += store.remove_documents([key])

    def behind_symlink() -> None:
        run.ignored += 1  # not in the watched tree; what was indexed under this path goes
        if existing is not None:
            run.removed += store.remove_documents([key])

    if _behind_symlink(str(path), limits.bases):
        behind_symlink()
        return None
    open_path, open_bases = str(path), limits.bases
    try:
        if os.path.islink(path):
            try:
                target = os.path.realpath(path, strict=True)
            except OSError as err:
                reason = "symlink loop" if err.errno == errno.ELOOP else f"broken symlink: {err.strerror or err}"
                skip(reason, size=None, mtime=None)
                return None
            if not _under(target, limits.real_roots):
                skip(f"symlink to {_path_key(target)}, outside the indexed folders", size=None, mtime=None)
                return None
            open_path, open_bases = target, limits.real_roots  # read the target, link-free below its root
        st = os.stat(path)
    except FileNotFoundError:
        vanished()
        return None
    except OSError as err:
        skip(f"cannot stat: {err.strerror or err}", size=None, mtime=None)
        return None
    if not stat.S_ISREG(st.st_mode):
        skip(f"not a regular file ({_kind(st.st_mode)})", size=None, mtime=None)
        return None
    if existing and existing.size == st.st_size and existing.mtime == st.st_mtime:
        if existing.status == "skipped":
            run.skipped.append(SkippedFile(key, existing.error or "skipped"))
        else:
            run.unchanged += 1
        return None
    max_bytes = limits.max_file_bytes
    too_large = f"larger than the {max_bytes / 1e6:g} MB limit (max_file_mb)"
    if st.st_size > max_bytes:
        skip(f"{too_large}: {st.st_size / 1e6:.1f} MB", size=st.st_size, mtime=st.st_mtime)
        return None
    for _attempt in range(READ_ATTEMPTS):
        try:
            st, data = _read_regular(open_path, max_bytes, open_bases)
            break
        except _Vanished:
            vanished()
            return None
        except _BehindSymlink:
            behind_symlink()
            return None
        except _NotRegular as err:
            skip(f"not a regular file ({err})", size=None, mtime=None)
            return None
        except _Changing:
            continue
        except OSError as err:
            skip(f"cannot read: {err.strerror or err}", size=st.st_size, mtime=st.st_mtime)
            return None
    else:
        # size None: the next run reads it again, whatever its size and mtime are then
        skip(f"kept changing while being read ({READ_ATTEMPTS} attempts); it is read again on the next run",
             size=None, mtime=None)
        return None
    if len(data) > max_bytes:
        skip(f"{too_large}: grew past it", size=st.st_size, mtime=st.st_mtime)
        return None
    content_hash = _hash(data)
    if existing and existing.status == "indexed" and existing.content_hash == content_hash:
        store.touch_document(key, mtime=st.st_mtime, size=st.st_size)
        run.unchanged += 1
        return None
    seconds = limits.max_extract_seconds
    started = time.monotonic()
    chunks = None
    try:
        isolated = limits.extractor is not None and format_for(path) in limits.extractor.isolated
        with _hard_time_limit(None if isolated else seconds):
            extracted = (limits.extractor.extract if isolated else extract)(path, data, max_seconds=seconds)
            chunks = chunks_for_document(extracted, count_tokens=embedder.count_tokens,
                                         chunk_tokens=limits.chunk_tokens, chunk_overlap=limits.chunk_overlap,
                                         context_tokens=limits.context_tokens)
    except SourceError as err:
        skip(str(err), size=st.st_size, mtime=st.st_mtime, content_hash=content_hash)
        return None
    except _Timeout:
        pass
    if chunks is None or (seconds is not None and time.monotonic() - started > seconds):
        skip(f"reading took longer than the {seconds:g} s limit (max_extract_seconds)",
             size=st.st_size, mtime=st.st_mtime, content_hash=content_hash)
        return None
    return _Pending(path=key, content_hash=content_hash, size=st.st_size, mtime=st.st_mtime,
                    extracted=extracted, chunks=chunks, is_new=existing is None or existing.status != "indexed")


@dataclass(frozen=True)
class _Plan:
    """What one batch asks of the embedder: its chunk texts without a vector, and the evidence
    units (entries) of its log and transcript chunks without stored unit vectors, which ``ask``
    would otherwise embed at query time (a fifth of a warm transcript question, docs/retrieval.md
    "Stored evidence-unit vectors"). Prose chunks have none: their indexing is unchanged."""

    chunks: list[str]  # text hashes, in the order embedded
    units: dict[str, ChunkUnits]  # by chunk text hash
    unit_texts: list[str]  # the distinct texts of ``units``, embedded after the chunks


class _EmbedPipeline:
    """Embeds one batch on a helper thread while the caller writes the previous batch to the
    database and reads and chunks the next files, so extraction and SQLite hide behind the encoder
    (torch and the tokenizer release the GIL). Batches are written in order by the caller's thread
    (the store's), each once its vectors are back."""

    def __init__(self, store: Store, embedder: Embedder, run: _Run):
        self.store, self.embedder, self.run = store, embedder, run
        self._executor = None
        self._in_flight = None  # (batch, plan, future of its vectors)

    def _plan(self, batch: list[_Pending], before: _Plan | None) -> tuple[_Plan, dict[str, NewChunk]]:
        by_hash = {c.text_hash: c for p in batch for c in p.chunks}
        model = self.embedder.name
        # Texts the batch before this one is bringing vectors for are written first: not again.
        missing = sorted(set(self.store.missing_embeddings(by_hash, model=model)) - set(before.chunks if before else ()))
        units = _record_units({h: c.text for h, c in by_hash.items()})
        if units:
            wanted = (self.store.missing_unit_vectors({h: u.key for h, u in units.items()}, model=model)
                      - set(before.units if before else ()))
            units = {h: units[h] for h in sorted(wanted)}
        unit_texts = list(dict.fromkeys(t for u in units.values() for t in u.texts))
        return _Plan(missing, units, unit_texts), by_hash

    def submit(self, batch: list[_Pending]) -> None:
        done = self._wait()
        plan = None
        if batch:
            plan, by_hash = self._plan(batch, done[1] if done else None)
            if plan.chunks or plan.unit_texts:
                if self._executor is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgellama-embed")
                chunk_texts = [embedding_input(by_hash[h]) for h in plan.chunks]
                self._in_flight = (batch, plan, self._executor.submit(self._embed, chunk_texts, plan.unit_texts))
        if done:
            self._write(*done)
        if plan is not None and not (plan.chunks or plan.unit_texts):
            _write_pending(self.store, self.embedder, batch, self.run, {}, {})

    def _embed(self, chunk_texts: list[str], unit_texts: list[str]):
        """The chunks, then their entries, in two calls to the embedder: the chunks go where they went
        before entries were stored (``TieredEmbedder``: llama.cpp for a small run, the bulk worker for
        a large one), so their vectors are the same; the entries go where their own number sends them.
        In one call a small transcript folder's chunks moved to the worker (faster, but its vectors
        differ in the last bits and 2 of 85 transcript answers changed: bench/RESULTS.md "s26")."""
        import numpy as np

        parts = [self.embedder.embed(texts) for texts in (chunk_texts, unit_texts) if texts]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def finish(self) -> None:
        done = self._wait()
        if done:
            self._write(*done)

    def _wait(self):
        if self._in_flight is None:
            return None
        batch, plan, future = self._in_flight
        self._in_flight = None
        return batch, plan, future.result()

    def _write(self, batch: list[_Pending], plan: _Plan, matrix) -> None:
        first = len(plan.chunks)
        self.run.chunks_embedded += first
        self.run.units_embedded += len(plan.unit_texts)
        units = _unit_rows(plan.units, plan.unit_texts, matrix, first=first)
        _write_pending(self.store, self.embedder, batch, self.run,
                       {h: matrix[i].tobytes() for i, h in enumerate(plan.chunks)}, units)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        release = getattr(self.embedder, "release", None)
        if release is not None:  # a bulk worker process (torch) goes when the run is done
            release()


def _record_units(texts: dict[str, str]) -> dict[str, ChunkUnits]:
    """The evidence units of the log and transcript chunks among ``texts`` (by text hash)."""
    units = {h: chunk_units(t) for h, t in texts.items() if is_record_chunk(t)}
    return {h: u for h, u in units.items() if u.texts}


def _unit_rows(units: dict[str, ChunkUnits], unit_texts: list[str], matrix, *, first: int) -> dict[str, UnitVectors]:
    """Each chunk's row of unit vectors, from ``matrix`` where ``unit_texts`` start at row ``first``."""
    row = {t: first + i for i, t in enumerate(unit_texts)}
    return {h: UnitVectors(units_key=u.key, dim=int(matrix.shape[1]),
                           vectors=matrix[[row[t] for t in u.texts]].astype("float32", copy=False).tobytes())
            for h, u in units.items()}


def _store_pending_units(store: Store, embedder: Embedder, *, should_stop: Callable[[], bool] | None) -> int:
    """The chunks of a database indexed before entries' vectors were stored (``store.pending_unit_chunks``)
    are looked at once, a batch at a time, each batch one transaction: those of logs and transcripts
    get their entries' vectors. Returns the entries embedded."""
    embedded = 0
    while not (should_stop is not None and should_stop()):
        pending = store.pending_unit_chunks(limit=EMBED_BATCH)
        if not pending:
            break
        units = _record_units({h: t for h, t in pending if t is not None})
        wanted = store.missing_unit_vectors({h: u.key for h, u in units.items()}, model=embedder.name) if units else set()
        units = {h: units[h] for h in sorted(wanted)}
        texts = list(dict.fromkeys(t for u in units.values() for t in u.texts))
        rows = _unit_rows(units, texts, embedder.embed(texts), first=0) if texts else {}
        store.put_unit_vectors(rows, model=embedder.name, looked_at=[h for h, _ in pending])
        embedded += len(texts)
    return embedded


def _write_pending(store: Store, embedder: Embedder, pending: list[_Pending], run: _Run,
                   vectors: dict[str, bytes], units: dict[str, UnitVectors]) -> None:
    for item in pending:
        store.replace_document(
            path=item.path, content_hash=item.content_hash, size=item.size, mtime=item.mtime,
            format=item.extracted.format, title=item.extracted.title, chunks=item.chunks,
            vectors={c.text_hash: vectors[c.text_hash] for c in item.chunks if c.text_hash in vectors},
            model=embedder.name, dim=embedder.dim,
            unit_vectors={c.text_hash: units[c.text_hash] for c in item.chunks if c.text_hash in units},
        )
        run.chunks_written += len(item.chunks)
        if item.is_new:
            run.added += 1
        else:
            run.changed += 1


@dataclass(frozen=True)
class TextRecord:
    """A document that is not a file (a benchmark abstract, say): ``key`` is stored as its path."""

    key: str
    title: str | None
    text: str


def index_records(
    *,
    store: Store,
    embedder: Embedder,
    records: Sequence[TextRecord],
    chunk_tokens: int,
    chunk_overlap: int,
    on_progress: Callable[[IndexProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IndexStats:
    """Index in-memory documents through the same chunk -> embed -> store path as files. A record
    whose key and content are already stored is left alone; keys not in ``records`` are kept.
    ``should_stop`` is asked after every record: when it says yes, what was read is written and
    the run ends early (``IndexStats.added + changed + unchanged`` says how far it got)."""
    started = time.perf_counter()
    context_tokens = context_room(embedder, chunk_tokens)
    known = store.documents()
    run = _Run()
    pending: list[_Pending] = []
    pipeline = _EmbedPipeline(store, embedder, run)
    try:
        for done, record in enumerate(records, start=1):
            if should_stop is not None and should_stop():
                break
            text = record.text.replace("\r\n", "\n").replace("\r", "\n")
            content_hash = _hash(f"{record.title or ''}\n{text}")
            existing = known.get(record.key)
            if existing and existing.status == "indexed" and existing.content_hash == content_hash:
                run.unchanged += 1
            else:
                extracted = ExtractedText(text=text, format="record", title=record.title,
                                          lines=tuple(range(1, text.count("\n") + 2)))
                chunks = chunks_for_document(extracted, count_tokens=embedder.count_tokens, chunk_tokens=chunk_tokens,
                                             chunk_overlap=chunk_overlap, context_tokens=context_tokens)
                pending.append(_Pending(path=record.key, content_hash=content_hash, size=len(text.encode()),
                                        mtime=0.0, extracted=extracted, chunks=chunks, is_new=existing is None))
                if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
                    pipeline.submit(list(pending))
                    pending.clear()
            if on_progress:
                on_progress(IndexProgress(done=done, total=len(records), path=record.key))
        pipeline.submit(list(pending))
        pipeline.finish()
        run.units_embedded += _store_pending_units(store, embedder, should_stop=should_stop)
    finally:
        pipeline.close()
    store.delete_orphan_embeddings()
    return IndexStats(added=run.added, changed=run.changed, unchanged=run.unchanged,
                      chunks_written=run.chunks_written, chunks_embedded=run.chunks_embedded,
                      seconds=time.perf_counter() - started, units_embedded=run.units_embedded)
