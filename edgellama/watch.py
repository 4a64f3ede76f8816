"""Keeps the index in line with the watched folders: watchdog events mark paths dirty, and one
indexing thread indexes them once they have been quiet for ``settle_seconds``, plus a periodic
full reconciliation (a stat/hash scan) that repairs anything the events missed.

Owns the indexing thread and the watchdog observer; the indexing itself is ``index_paths``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import EdgeLlamaError
from .indexer import IndexStats, index_paths

__all__ = ["IndexWorker", "WatcherState"]

log = logging.getLogger("edgellama.watch")


@dataclass
class WatcherState:
    """What ``/status`` shows about live indexing."""

    folders: list[str] = field(default_factory=list)
    watching: list[str] = field(default_factory=list)
    # Folders without live events, each with the reason ("cannot watch F: reason; rescanned every
    # N s"): missing, unmounted, or past the inotify limits. They are rescanned every
    # ``poll_seconds`` and watched again as soon as that works.
    not_watched: dict[str, str] = field(default_factory=dict)
    # Folders whose files cannot be seen now (missing, empty mount point, cannot be listed): their
    # documents are kept and still answered from, never deleted (indexer._unavailable).
    unavailable: dict[str, str] = field(default_factory=dict)
    pending: int = 0
    retrying: int = 0  # paths whose indexing failed (a full disk, a locked database), tried again later
    runs: int = 0
    reconciles: int = 0
    purged: int = 0  # documents of folders no longer configured, removed after a reload
    last_run_at: float | None = None
    last_stats: dict | None = None
    indexing: bool = False
    errors: list[str] = field(default_factory=list)  # the last few, newest last


def _hidden(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts)
    return True  # outside every watched folder


RETRY_SECONDS = 30.0  # a failed run's paths are tried again after this (the disk may have room by then)
POLL_SECONDS = 30.0  # folders without live events are rescanned this often (at most reconcile_seconds)
EMBED_SLICE = 128  # texts per embedder call, so that a long batch still shows progress to the watchdog
STALL_GRACE_SECONDS = 60.0  # beyond a file's deadline: time one SQLite write or embedding slice may take


class IndexWorker:
    """The indexing thread. ``mark`` may be called from any thread (the watchdog callbacks do)."""

    def __init__(self, *, open_store: Callable, embedder, folders: Sequence[Path], chunk_tokens: int,
                 chunk_overlap: int, max_file_bytes: int, settle_seconds: float, reconcile_seconds: float,
                 max_extract_seconds: float | None = None, pause: Callable[[], None] | None = None,
                 busy: Callable[[], bool] | None = None, stall_seconds: float | None = None,
                 poll_seconds: float = POLL_SECONDS, owner: str | None = None):
        from .sources import IsolatedExtractor

        self._open_store = open_store
        # Called between files: blocks while a query or generation runs (2 cores: they would fight).
        self._pause = pause
        # True while queries hold priority: the indexer waiting for them is not stuck.
        self._busy = busy
        self._extractor = IsolatedExtractor()
        self._embedder = _ProgressEmbedder(embedder, self._beat)
        self._index_options = dict(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                                   max_file_bytes=max_file_bytes, max_extract_seconds=max_extract_seconds,
                                   extractor=self._extractor)
        from .sources import EXTRACT_GRACE_SECONDS

        self.stall_seconds = stall_seconds if stall_seconds is not None else (
            (max_extract_seconds or 60.0) + EXTRACT_GRACE_SECONDS + STALL_GRACE_SECONDS)
        self.settle_seconds = settle_seconds
        self.reconcile_seconds = reconcile_seconds
        self.poll_seconds = poll_seconds
        self.owner = owner or f"edgellama serve (pid {os.getpid()})"
        self._cond = threading.Condition()
        self._pending: dict[str, float] = {}  # path -> time of its last event (0: index at once)
        self._reconcile_due = 0.0  # monotonic time of the next full scan; 0: now
        self._poll_due = 0.0  # the next rescan of the folders without live events
        self._purge: list[str] = []  # folders dropped from the configuration, to forget
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store = None
        self._observer = None
        self._watches: dict[str, tuple] = {}  # root -> (ObservedWatch, (st_dev, st_ino) when scheduled)
        self._watch_lock = threading.Lock()  # the indexing thread and SIGHUP both reschedule
        self._last_beat = time.monotonic()
        self._paused = False
        self.state = WatcherState()
        self.roots: list[str] = []
        self.set_folders(folders)

    # -- events ---------------------------------------------------------------------------------

    def set_folders(self, folders: Sequence[Path]) -> None:
        """Watch these folders from now on (SIGHUP): forget the documents of folders dropped from
        the list, watch the new ones and rescan."""
        roots = [os.path.abspath(f) for f in folders]
        with self._cond:
            dropped = [r for r in self.roots if r not in roots]
            self.roots = roots
            self.state.folders = list(roots)
            self._purge += dropped
            self._reconcile_due = 0.0
            self._cond.notify_all()
        if self._observer is not None:
            self._watch_roots()

    def mark(self, path: str, *, at_once: bool = False) -> None:
        path = os.path.abspath(path)
        if _hidden(path, self.roots):
            return  # editor swap files, .git, and anything outside the folders
        with self._cond:
            first = not self._pending
            self._pending[path] = 0.0 if at_once else time.monotonic()
            self.state.pending = len(self._pending)
            if first or at_once:
                # Only then can the indexer's wake-up come sooner: waking it for each event of a
                # burst would scan every pending path per event (10,000 events: 10^8 steps).
                self._cond.notify_all()

    def reconcile_now(self) -> None:
        with self._cond:
            self._reconcile_due = 0.0
            self._cond.notify_all()

    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        worker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.event_type == "events_lost":
                    worker.reconcile_now()  # the kernel's queue overflowed (a burst): scan everything
                    return
                if event.is_directory and event.event_type == "modified":
                    return  # a folder's mtime changes with every file in it
                if event.event_type == "moved":
                    # A rename is complete when it happens: index both ends together and at once,
                    # so the moved chunks keep their vectors (same text hash, nothing re-embedded).
                    worker.mark(os.fsdecode(event.src_path), at_once=True)
                    worker.mark(os.fsdecode(event.dest_path), at_once=True)
                else:
                    # A deletion is indexed at once; a write waits until the file has settled.
                    worker.mark(os.fsdecode(event.src_path), at_once=event.event_type == "deleted")

        return Handler()

    def _watch_roots(self) -> None:
        """Bring the watches in line with the roots: schedule each one that is not watched, or whose
        watch died (its folder deleted) or now points at another folder (moved away, a disk mounted
        over it). A root that cannot be watched (missing, inotify limits) is noted, never fatal."""
        with self._watch_lock:
            self._watch_roots_locked()

    def _watch_roots_locked(self) -> None:
        observer = self._observer
        for root, (watch, identity) in list(self._watches.items()):
            emitter = next((e for e in list(observer.emitters) if e.watch == watch), None)
            if root in self.roots and emitter is not None and emitter.is_alive() and _identity(root) == identity:
                continue
            try:
                observer.unschedule(watch)
            except (KeyError, ValueError):
                pass
            del self._watches[root]
        not_watched = {}
        for root in self.roots:
            if root in self._watches:
                continue
            identity = _identity(root)
            try:
                if identity is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
                watch = observer.schedule(self._handler(), root, recursive=True)
            except OSError as err:
                reason = err.strerror or str(err)
                if err.errno in (errno.ENOSPC, errno.EMFILE):
                    reason += " (inotify limits: fs.inotify.max_user_watches / max_user_instances)"
                message = f"cannot watch {root}: {reason}; rescanned every {self._poll_interval():g} s instead"
                if self.state.not_watched.get(root) != message:
                    log.warning("%s", message)  # shown in /status under not_watched while it lasts
                not_watched[root] = message
                continue
            self._watches[root] = (watch, identity)
            if root in self.state.not_watched:
                log.info("watching %s again", root)
                self.reconcile_now()  # what changed while it was not watched
        self.state.not_watched = not_watched
        self.state.watching = [r for r in self.roots if r in self._watches]

    def _poll_interval(self) -> float:
        return min(self.poll_seconds, self.reconcile_seconds)

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        """Take the database's writer lock (StoreError if another indexer holds it), start watching
        and start the thread."""
        from watchdog.observers import Observer

        store = self._open_store()
        try:
            store.acquire_writer(owner=self.owner)
        except BaseException:
            store.close()
            raise
        self._store = store
        observer = Observer()
        observer.daemon = True
        observer.start()  # empty: each folder is scheduled on its own, so one bad folder stops none
        self._observer = observer
        self._watch_roots()
        self._thread = threading.Thread(target=self._run, name="edgellama-indexer", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 20.0) -> None:
        """Finish the document being written (each is one transaction), then stop."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._thread is None or not self._thread.is_alive():
            self._extractor.close()
            if self._store is not None:
                self._store.close()  # releases the writer lock
                self._store = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()

    def progressing(self) -> bool:
        """For the systemd watchdog: the thread lives and has reached a checkpoint (a file, an
        embedding slice, a wait for work) within ``stall_seconds``, or waits for queries. A thread
        stuck in one call stops the pings, and systemd restarts the daemon."""
        if not self.alive:
            return False
        if self._paused or (self._busy is not None and self._busy()):
            self._beat()
            return True
        return time.monotonic() - self._last_beat < self.stall_seconds

    def wait_idle(self, *, timeout: float) -> bool:
        """For tests and ``/status``: True once nothing is pending or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._pending and not self.state.indexing and self._reconcile_due > 0:
                    return True
            time.sleep(0.05)
        return False

    def _next_job(self) -> tuple[str, list[str]] | None:
        """Wait for work: ("purge", dropped folders), ("reconcile", roots), ("poll", folders without
        live events) or ("paths", settled paths); None when stopping."""
        with self._cond:
            while not self._stop.is_set():
                self._beat()
                now = time.monotonic()
                if self._purge:
                    dropped, self._purge = self._purge, []
                    self.state.indexing = True
                    return "purge", dropped
                if self._reconcile_due <= now:
                    self._reconcile_due = now + self.reconcile_seconds
                    self._poll_due = now + self._poll_interval()
                    self._pending.clear()  # the full scan covers them
                    self.state.pending = 0
                    self.state.indexing = True
                    return "reconcile", list(self.roots)
                if self._poll_due <= now:
                    self._poll_due = now + self._poll_interval()
                    return "poll", []
                due = [p for p, t in self._pending.items() if now - t >= self.settle_seconds]
                if due:
                    for p in due:
                        del self._pending[p]
                    self.state.pending = len(self._pending)
                    self.state.indexing = True
                    return "paths", due
                waits = [self._reconcile_due - now, self._poll_due - now, 1.0]
                waits += [t + self.settle_seconds - now for t in self._pending.values()]
                self._cond.wait(timeout=max(0.01, min(waits)))
        return None

    def _should_stop(self) -> bool:
        self._beat()
        if self._pause is not None and not self._stop.is_set():
            self._paused = True
            try:
                self._pause()
            finally:
                self._paused = False
                self._beat()
        return self._stop.is_set()

    def _run(self) -> None:
        from .indexer import forget_folders

        store = self._store
        while (job := self._next_job()) is not None:
            kind, paths = job
            try:
                if kind == "purge":
                    removed = forget_folders(store=store, folders=[Path(p) for p in paths],
                                             keep=[Path(r) for r in self.roots])
                    self.state.purged += removed
                    log.info("forgot %d document(s) of %d folder(s) no longer watched", removed, len(paths))
                    continue
                if kind in ("reconcile", "poll"):
                    self._watch_roots()  # a folder that came back is watched again before its scan
                if kind == "poll":
                    # Between full scans, only the folders without live events are rescanned.
                    paths = [r for r in self.roots if r in self.state.not_watched]
                    if not paths:
                        continue
                    self.state.indexing = True
                stats = index_paths(store=store, embedder=self._embedder, paths=[Path(p) for p in paths],
                                    missing_ok=True, should_stop=self._should_stop,
                                    within=[Path(r) for r in self.roots], prune_vectors=kind == "reconcile",
                                    keep_unavailable=True, **self._index_options)
                self._record(kind, paths, stats)
                if stats.chunks_embedded:
                    _release_free_memory()
            except Exception as err:  # the thread must survive anything one file does to it
                if not isinstance(err, EdgeLlamaError):
                    log.exception("indexing failed")
                what = f"{type(err).__name__}: {err}" if not isinstance(err, EdgeLlamaError) else str(err)
                self._error(f"indexing {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}: {what};"
                            f" tried again in {RETRY_SECONDS:g} s")
                self._retry(kind, paths)
            finally:
                self.state.indexing = False

    def _retry(self, kind: str, paths: list[str]) -> None:
        """A run that failed (a full disk, a locked or unwritable database) loses no change: its
        paths, or its purge or scan, come back after RETRY_SECONDS."""
        with self._cond:
            later = time.monotonic() + RETRY_SECONDS
            if kind == "purge":
                self._purge += paths
            elif kind == "paths":
                for p in paths:
                    self._pending[p] = max(self._pending.get(p, 0.0), later - self.settle_seconds)
                self.state.pending = len(self._pending)
            else:
                self._reconcile_due = min(self._reconcile_due, later)
            self.state.retrying = len(paths)

    def _record(self, kind: str, paths: list[str], stats: IndexStats) -> None:
        self.state.runs += 1
        self.state.reconciles += kind == "reconcile"
        self.state.retrying = 0
        self.state.last_run_at = time.time()
        self.state.last_stats = {k: v for k, v in stats.__dict__.items() if k not in ("skipped", "unavailable")}
        unavailable = {u.path: u.reason for u in stats.unavailable}
        if kind in ("reconcile", "poll"):
            # A scan of a root says whether it is available now; other roots keep their entry.
            for root in paths:
                self.state.unavailable.pop(root, None)
        self.state.unavailable = {k: v for k, v in {**self.state.unavailable, **unavailable}.items()
                                  if k in self.roots}
        if stats.added or stats.changed or stats.removed:
            log.info("indexed (%s): %d added, %d changed, %d removed, %d skipped in %.1f s", kind,
                     stats.added, stats.changed, stats.removed, len(stats.skipped), stats.seconds)

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.state.errors = [*self.state.errors[-9:], message]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class _ProgressEmbedder:
    """The indexer's embedder, called in slices of EMBED_SLICE texts (longest-first order kept
    across slices, so each pads as little as one big call would) with a heartbeat after each."""

    def __init__(self, inner, beat: Callable[[], None]):
        self._inner, self._beat = inner, beat
        self.name = inner.name

    dim = property(lambda self: self._inner.dim)
    max_input_tokens = property(lambda self: self._inner.max_input_tokens)

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def embed(self, texts: Sequence[str]):
        if len(texts) <= EMBED_SLICE:
            out = self._inner.embed(texts)
            self._beat()
            return out
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = None
        for start in range(0, len(texts), EMBED_SLICE):
            rows = order[start:start + EMBED_SLICE]
            part = self._inner.embed([texts[i] for i in rows])
            self._beat()
            if vectors is None:
                vectors = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
            vectors[rows] = part
        return vectors


def _release_free_memory() -> None:
    """Give the heap that embedding batches freed back to the system (glibc keeps it otherwise):
    the daemon lives for weeks next to other programs (bench/rss.py)."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
