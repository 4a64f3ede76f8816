"""Keeps the index in line with the watched folders: watchdog events mark paths dirty, and one
indexing thread indexes them once they have been quiet for ``settle_seconds``, plus a periodic
full reconciliation (a stat/hash scan) that repairs anything the events missed.

Owns the indexing thread and the watchdog observer; the indexing itself is ``index_paths``.
"""

from __future__ import annotations

import logging
import os
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
    pending: int = 0
    runs: int = 0
    reconciles: int = 0
    last_run_at: float | None = None
    last_stats: dict | None = None
    indexing: bool = False
    errors: list[str] = field(default_factory=list)  # the last few, newest last


def _hidden(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts)
    return True  # outside every watched folder


class IndexWorker:
    """The indexing thread. ``mark`` may be called from any thread (the watchdog callbacks do)."""

    def __init__(self, *, open_store: Callable, embedder, folders: Sequence[Path], chunk_tokens: int,
                 chunk_overlap: int, max_file_bytes: int, settle_seconds: float, reconcile_seconds: float,
                 max_extract_seconds: float | None = None, pause: Callable[[], None] | None = None):
        self._open_store = open_store
        # Called between files: blocks while a query or generation runs (2 cores: they would fight).
        self._pause = pause
        self._embedder = embedder
        self._index_options = dict(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                                   max_file_bytes=max_file_bytes, max_extract_seconds=max_extract_seconds)
        self.settle_seconds = settle_seconds
        self.reconcile_seconds = reconcile_seconds
        self._cond = threading.Condition()
        self._pending: dict[str, float] = {}  # path -> time of its last event (0: index at once)
        self._reconcile_due = 0.0  # monotonic time of the next full scan; 0: now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer = None
        self.state = WatcherState()
        self.set_folders(folders)

    # -- events ---------------------------------------------------------------------------------

    def set_folders(self, folders: Sequence[Path]) -> None:
        """Watch these folders from now on (SIGHUP): restart the observer and rescan."""
        roots = [os.path.abspath(f) for f in folders]
        with self._cond:
            self.roots = roots
            self.state.folders = list(roots)
            self._reconcile_due = 0.0
            self._cond.notify_all()
        if self._thread is not None:
            self._start_observer()

    def mark(self, path: str, *, at_once: bool = False) -> None:
        path = os.path.abspath(path)
        if _hidden(path, self.roots):
            return  # editor swap files, .git, and anything outside the folders
        with self._cond:
            self._pending[path] = 0.0 if at_once else time.monotonic()
            self.state.pending = len(self._pending)
            self._cond.notify_all()

    def reconcile_now(self) -> None:
        with self._cond:
            self._reconcile_due = 0.0
            self._cond.notify_all()

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        worker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
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

        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        observer = Observer()
        watching = []
        for root in self.roots:
            try:
                observer.schedule(Handler(), root, recursive=True)
                watching.append(root)
            except OSError as err:
                self._error(f"cannot watch {root}: {err.strerror or err}")
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.state.watching = watching

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self._start_observer()
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

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
        """Wait for work: ("paths", settled paths) or ("reconcile", roots); None when stopping."""
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._reconcile_due <= now:
                    self._reconcile_due = now + self.reconcile_seconds
                    self._pending.clear()  # the full scan covers them
                    self.state.pending = 0
                    self.state.indexing = True
                    return "reconcile", list(self.roots)
                due = [p for p, t in self._pending.items() if now - t >= self.settle_seconds]
                if due:
                    for p in due:
                        del self._pending[p]
                    self.state.pending = len(self._pending)
                    self.state.indexing = True
                    return "paths", due
                waits = [self._reconcile_due - now]
                waits += [t + self.settle_seconds - now for t in self._pending.values()]
                self._cond.wait(timeout=max(0.01, min(waits)))
        return None

    def _should_stop(self) -> bool:
        if self._pause is not None and not self._stop.is_set():
            self._pause()
        return self._stop.is_set()

    def _run(self) -> None:
        store = self._open_store()
        try:
            while (job := self._next_job()) is not None:
                kind, paths = job
                try:
                    stats = index_paths(store=store, embedder=self._embedder, paths=[Path(p) for p in paths],
                                        missing_ok=True, should_stop=self._should_stop,
                                        within=[Path(r) for r in self.roots], prune_vectors=kind == "reconcile",
                                        **self._index_options)
                    self._record(kind, stats)
                    if stats.chunks_embedded:
                        _release_free_memory()
                except EdgeLlamaError as err:
                    self._error(f"indexing {', '.join(paths[:3])}: {err}")
                except Exception as err:  # the thread must survive anything one file does to it
                    log.exception("indexing failed")
                    self._error(f"indexing {', '.join(paths[:3])}: {type(err).__name__}: {err}")
                finally:
                    self.state.indexing = False
        finally:
            store.close()

    def _record(self, kind: str, stats: IndexStats) -> None:
        self.state.runs += 1
        self.state.reconciles += kind == "reconcile"
        self.state.last_run_at = time.time()
        self.state.last_stats = {k: v for k, v in stats.__dict__.items() if k != "skipped"}
        if stats.added or stats.changed or stats.removed:
            log.info("indexed (%s): %d added, %d changed, %d removed, %d skipped in %.1f s", kind,
                     stats.added, stats.changed, stats.removed, len(stats.skipped), stats.seconds)

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.state.errors = [*self.state.errors[-9:], message]


def _release_free_memory() -> None:
    """Give the heap that embedding batches freed back to the system (glibc keeps it otherwise):
    the daemon lives for weeks next to other programs (bench/rss.py)."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
