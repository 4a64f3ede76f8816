"""The daemon's shared state: the warm models, reader connections, the generation queue, metrics,
and the deadline every long request runs under.

It knows nothing of HTTP (that is ``api.py`` and ``server.py``) nor of the process (``daemon.py``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .config import Settings
from .errors import BusyError, ClientGoneError, DeadlineError, EdgeLlamaError, RequestError

__all__ = ["Engine", "Priority", "SharedEmbedder", "Admission", "Metrics", "Deadline"]

log = logging.getLogger("edgellama.engine")


class Admission:
    """One generation runs (the CPU is the limit); ``max_queue`` more may wait; beyond, 503."""

    def __init__(self, *, max_queue: int):
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self.active = 0  # running + waiting

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.active >= 1 + self.max_queue:
                raise BusyError(f"busy: {self.active} requests are running or queued (max_queue {self.max_queue})",
                                retry_after=2)
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


@dataclass
class Metrics:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    tokens: int = 0
    prompt_tokens: int = 0
    generation_seconds: float = 0.0
    last_tokens_per_second: float = 0.0
    refused_peers: int = 0
    dropped_connections: int = 0  # idle or slow connections closed to make room or at their deadline
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def generation(self, *, prompt_tokens: int, tokens: int, seconds: float, tokens_per_second: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.prompt_tokens += prompt_tokens
            self.generation_seconds += seconds
            if tokens:
                self.last_tokens_per_second = tokens_per_second


class Deadline:
    """When a request must stop: its client hung up, its ``request_seconds`` ran out, or the daemon
    is stopping. Checked before every model call and at every generated token, so a long summary or
    answer ends within one token of any of these (and frees the queue and query priority)."""

    def __init__(self, seconds: float | None = None, *, stopping: Callable[[], bool] = lambda: False):
        self.seconds = seconds
        self._ends = time.monotonic() + seconds if seconds else None
        self._stopping = stopping
        self.client_gone = False

    def check(self) -> None:
        if self.client_gone:
            raise ClientGoneError("the client went away")
        if self._stopping():
            raise BusyError("the daemon is stopping", retry_after=5)
        if self._ends is not None and time.monotonic() > self._ends:
            raise DeadlineError(f"the request took longer than its {self.seconds:g} s limit (request_seconds)")


class Priority:
    """Queries first: while any query runs, background work waits at its next checkpoint."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0

    @contextmanager
    def foreground(self) -> Iterator[None]:
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def wait_idle(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0)

    def busy(self) -> bool:
        """True while a query runs: the indexer waiting for it is not stuck (watch.IndexWorker.progressing)."""
        return self._active > 0


class SharedEmbedder:
    """One embedding model for queries and the indexer. The model is used by one thread at a time
    (its tokenizer is not thread-safe); the indexer embeds in batches of ``background_batch`` and
    lets every waiting query go first, so a query waits at most for one small batch."""

    def __init__(self, inner, *, priority: Priority, background_batch: int = 8):
        self.inner = inner
        self.priority = priority
        self.background_batch = background_batch
        self._lock = threading.Lock()
        self.name = inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_input_tokens(self) -> int:
        return self.inner.max_input_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]):
        with self.priority.foreground(), self._lock:
            return self.inner.embed(texts)

    def embed_background(self, texts: Sequence[str]):
        import numpy as np

        wants_bulk = getattr(self.inner, "wants_bulk", None)
        if wants_bulk is not None and wants_bulk(len(texts)):
            # A torch worker process embeds it: queries keep the in-process model to themselves.
            return self.inner.embed_bulk(texts)

        # Slices of texts of about the same length in tokens, so a slice pads little.
        order = sorted(range(len(texts)), key=lambda i: self.inner.count_tokens(texts[i]))
        vectors = None
        for start in range(0, len(texts), self.background_batch):
            rows = order[start:start + self.background_batch]
            self.priority.wait_idle()
            with self._lock:
                part = self.inner.embed([texts[i] for i in rows])
            if vectors is None:
                vectors = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
            vectors[rows] = part
        return vectors if vectors is not None else self.inner.embed([])

    def background(self) -> "_BackgroundEmbedder":
        return _BackgroundEmbedder(self)


class _BackgroundEmbedder:
    """The indexer's view of the shared embedder (the same ``Embedder`` protocol)."""

    def __init__(self, shared: SharedEmbedder):
        self._shared = shared
        self.name = shared.name

    dim = property(lambda self: self._shared.dim)
    max_input_tokens = property(lambda self: self._shared.max_input_tokens)

    def count_tokens(self, text: str) -> int:
        return self._shared.count_tokens(text)

    def embed(self, texts: Sequence[str]):
        return self._shared.embed_background(texts)

    def release(self) -> None:
        release = getattr(self._shared.inner, "release", None)
        if release is not None:
            release()


class _InFlight:
    """Counts requests being handled, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def __enter__(self) -> None:
        with self._cond:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self.count -= 1
            self._cond.notify_all()

    def wait_zero(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count == 0, timeout=timeout)


def _groups_of(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


class Engine:
    """What every request shares: settings, the warm models, reader connections, the queue."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ready = False
        self.stopping = False
        self.stage = "starting"
        self.started_at = time.time()
        self.admission = Admission(max_queue=settings.max_queue)
        self.metrics = Metrics()
        self.priority = Priority()
        self.requests = _InFlight()
        self.embedder: SharedEmbedder | None = None
        self.vectors = None  # the one in-memory matrix of chunk vectors, reloaded after commits
        self.generator = None
        self.plan = None  # the ResourcePlan the models were loaded with (resources.py)
        self.worker = None
        self.background_summaries = 0  # documents the background summarizer brought up to date
        self.restart_needed: list[str] = []  # settings a SIGHUP could not apply
        self._readers: "queue.SimpleQueue" = queue.SimpleQueue()
        # Peers: root and our own user; our primary group only when the socket is meant to be
        # shared with it (socket_access, config.py): a personal daemon admits its user alone.
        self._uid = os.getuid()
        self._gid = os.getgid() if settings.socket_access == "group" else None

    # -- loading --------------------------------------------------------------------------------

    def load(self, *, on_stage: Callable[[str], None]) -> None:
        from .resources import Models

        s = self.settings

        def stage(name: str) -> None:
            self.stage = name
            on_stage(name)

        models = Models(s)
        self.plan = plan = models.plan
        log.info("resources: %s", ", ".join(f"{name} {getattr(plan, name).value} ({getattr(plan, name).reason})"
                                            for name in plan.VALUES))
        for warning in plan.warnings:
            log.warning("resources: %s", warning)
        stage("opening the database")
        self.open_store().close()  # creates and migrates it once, before any reader opens it
        from .vectors import VectorCache

        self.vectors = VectorCache(s.db)
        stage("loading the embedding model")
        embedder = models.embedder()
        embedder.embed(["warm up"])
        self.embedder = SharedEmbedder(embedder, priority=self.priority)
        stage("loading the language model")
        generator = models.generator()
        generator.llama  # noqa: B018 - load the weights now, not on the first question
        if s.prompt_style == "completion":
            from .prompt import COMPLETION_PREFIX

            stage("warming the prompt prefix")
            warm = generator.warm_prefix(COMPLETION_PREFIX, cache_dir=s.models_dir)
            log.info("prompt prefix: %d tokens in the KV cache in %.3f s (%s %s)", warm.tokens, warm.seconds,
                     "restored from" if warm.source == "file" else "evaluated, saved to", warm.path)
        self.generator = generator

    def open_store(self):
        from .store import Store

        return Store.open(self.settings.db, create=True)

    @contextmanager
    def reader(self) -> Iterator[Any]:
        try:
            store = self._readers.get_nowait()
        except queue.Empty:
            store = self.open_store()
        try:
            yield store
        finally:
            self._readers.put(store)

    def close(self) -> None:
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break
        if self.vectors is not None:
            self.vectors.close()
        if self.generator is not None:
            self.generator.close()

    # -- work -----------------------------------------------------------------------------------

    def search(self, *, query: str, k: int, mode: str):
        from .retrieve import search

        with self.priority.foreground(), self.reader() as store:
            return search(store=store, embedder=self.embedder, query=query, k=k, mode=mode,
                          vectors=self.vectors.get(model=self.embedder.name))

    def deadline(self) -> Deadline:
        """A new request's deadline: ``request_seconds`` from now, or sooner if the daemon stops."""
        return Deadline(self.settings.request_seconds, stopping=lambda: self.stopping)

    def ask(self, *, question: str, top_k: int | None = None, max_tokens: int | None = None,
            context_tokens: int | None = None, on_token: Callable[[str], None] | None = None,
            deadline: Deadline | None = None):
        from .answer import ask

        options = self.settings.ask_options
        for key, value in (("top_k", top_k), ("context_tokens", context_tokens), ("max_tokens", max_tokens)):
            options[key] = value or options[key]  # the request's own values, where it sent them
        generator = self._cancellable_generator(deadline or self.deadline())
        with self.priority.foreground(), self.reader() as store:
            answer = ask(question=question, store=store, embedder=self.embedder, generator=generator,
                         **options, on_token=on_token, vectors=self.vectors.get(model=self.embedder.name))
        t = answer.timings
        self.metrics.generation(prompt_tokens=t.prompt_tokens, tokens=t.completion_tokens,
                                seconds=t.total_seconds - t.retrieve_seconds, tokens_per_second=t.tokens_per_second)
        return answer

    def embed(self, texts: list[str]):
        return self.embedder.embed(texts)

    def summary_path(self, path: str) -> str:
        """A requested path, if it lies inside the watched folders or is (under) an indexed path.
        Containment is checked on the resolved path, so ``..`` and symlinks cannot lead outside;
        summaries read only the index, never the file."""
        if "\0" in path:
            raise RequestError("'path' holds a NUL character")
        if not os.path.isabs(path):
            raise RequestError(f"'path' must be absolute, got {path!r}")
        absolute, real = os.path.abspath(path), os.path.realpath(path)
        roots = [os.path.realpath(f) for f in self.settings.folders]
        inside = any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
        if not inside and absolute == real:
            with self.reader() as store:
                known = store.documents()
            inside = absolute in known or any(p.startswith(absolute.rstrip(os.sep) + os.sep) for p in known)
        if not inside:
            raise RequestError(f"{path} is outside the folders this daemon serves", http_status=403)
        return absolute

    def summarize(self, *, length: str, method: str | None, path: str | None = None, topic: str | None = None,
                  deadline: Deadline | None = None):
        """The pieces of a summary, computed while the pieces are read (so a stream shows them).
        The deadline is checked between pieces and at every model call and token."""
        from .config import DEFAULT_METHOD
        from .summarize import summarize_document, summarize_folder, summarize_topic

        deadline = deadline or self.deadline()
        options = {"length": length, "method": method or DEFAULT_METHOD,
                   "generator": self._cancellable_generator(deadline)}
        with self.priority.foreground(), self.reader() as store:
            if topic is not None:
                pieces = summarize_topic(store=store, topic=topic, embedder=self.embedder,
                                         min_relevance=self.settings.min_relevance,
                                         vectors=self.vectors.get(model=self.embedder.name), **options)
            elif path is None or os.path.isdir(path):
                pieces = summarize_folder(store=store, folder=path, **options)
            else:
                pieces = summarize_document(store=store, path=path, **options)
            for piece in pieces:
                deadline.check()
                yield piece

    def summarize_in_background(self, stop: threading.Event, *, poll_seconds: float = 2.0) -> None:
        """The background summarizer's thread: after each index run that changed something, bring
        every indexed document's model summary up to date (cached branches cost nothing). It waits
        before each model call while any query runs, so a query waits for one call at most."""
        from .summarize import final_summary, summarize_document

        seen_runs = -1
        generator = self._cancellable_generator(Deadline(stopping=lambda: self.stopping), background=True)
        store = self.open_store()
        try:
            while not stop.wait(poll_seconds) and not self.stopping:
                state = self.worker.state if self.worker else None
                if state is None or state.runs == seen_runs or state.indexing:
                    continue
                changed = not state.last_stats or state.last_stats.get("added") or state.last_stats.get("changed")
                if seen_runs >= 0 and not changed:
                    seen_runs = state.runs
                    continue  # a rescan that found nothing new: the summaries are still current
                seen_runs = state.runs
                for path, document in sorted(store.documents().items()):
                    if stop.is_set() or self.stopping:
                        return
                    if document.status != "indexed":
                        continue
                    try:
                        summary = final_summary(summarize_document(store=store, path=path, method="model",
                                                                   length="medium", generator=generator))
                    except EdgeLlamaError as err:
                        if self.stopping:
                            return
                        log.warning("background summary of %s: %s", path, err)
                        continue
                    self.background_summaries += 1
                    if summary.stats.model_calls:
                        log.info("background summary of %s: %d model calls, %.1f s", path,
                                 summary.stats.model_calls, summary.stats.seconds)
        finally:
            store.close()

    def _cancellable_generator(self, deadline: Deadline, *, background: bool = False):
        engine = self

        def checked(pieces: Iterator[str]) -> Iterator[str]:
            try:
                for piece in pieces:
                    deadline.check()
                    yield piece
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()  # release the model's lock now, not when the traceback is freed

        class Cancellable:
            """The warm model, ending a generation at its next token once the deadline passes,
            the client hangs up or the daemon stops."""

            name, n_ctx = engine.generator.name, engine.generator.n_ctx
            count_tokens = staticmethod(engine.generator.count_tokens)
            last_stats = property(lambda self: engine.generator.last_stats)

            @staticmethod
            def stream(prompt, *, max_tokens, stop):
                if background:
                    engine.priority.wait_idle()  # queries first
                deadline.check()
                return checked(engine.generator.stream(prompt, max_tokens=max_tokens, stop=stop))

            @staticmethod
            def stream_chat(messages, *, max_tokens):
                deadline.check()
                return checked(engine.generator.stream_chat(messages, max_tokens=max_tokens))

            @property
            def answer_logprobs(self):
                """The model's vote on the likeliest spans (answer.score_spans), as in-process: without
                it the daemon chose other short answers than `ask --no-daemon` and `eval qa` (10 of 21
                questions on three corpus/ documents, stop 29). None if the model cannot score."""
                scorer = getattr(engine.generator, "answer_logprobs", None)
                if scorer is None:
                    return None

                def checked_scorer(prompt, answers, **options):
                    deadline.check()
                    return scorer(prompt, answers, **options)

                return checked_scorer

        return Cancellable()

    def check_chat_fits(self, messages: list[dict], *, max_tokens: int) -> None:
        for m in messages:
            if not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
                raise RequestError("each message needs a string 'role' and a string 'content'")
        # Each message costs its text plus a few template tokens (ChatML: <|im_start|>role\n ... <|im_end|>\n).
        needed = sum(self.generator.count_tokens(m["content"]) + 6 for m in messages) + max_tokens
        if needed > self.generator.n_ctx:
            raise RequestError(f"the conversation needs about {needed} tokens with max_tokens {max_tokens}; "
                               f"the model's context is {self.generator.n_ctx}", http_status=413)

    def chat(self, messages: list[dict], *, max_tokens: int, on_token: Callable[[str], None] | None,
             deadline: Deadline | None = None):
        generator = self._cancellable_generator(deadline or self.deadline())
        with self.priority.foreground():
            pieces = []
            for piece in generator.stream_chat(messages, max_tokens=max_tokens):
                pieces.append(piece)
                if on_token:
                    on_token(piece)
        stats = self.generator.last_stats
        if stats:
            self.metrics.generation(prompt_tokens=stats.prompt_tokens, tokens=stats.completion_tokens,
                                    seconds=stats.prompt_seconds + stats.completion_seconds,
                                    tokens_per_second=stats.tokens_per_second)
        usage = {"prompt_tokens": stats.prompt_tokens if stats else 0,
                 "completion_tokens": stats.completion_tokens if stats else len(pieces)}
        return "".join(pieces).strip(), usage

    # -- reports --------------------------------------------------------------------------------

    def peer_allowed(self, pid: int, uid: int, gid: int, groups: set[int] | None = None) -> bool:
        """Root and the daemon's own user may connect; members of its group too when the socket
        is shared with it (``_gid`` is None otherwise). ``groups``: the peer's groups from
        SO_PEERGROUPS; /proc is the fallback (hidden under ProtectProc=invisible)."""
        if uid in (0, self._uid):
            return True
        if self._gid is None:
            return False
        return gid == self._gid or self._gid in (groups if groups is not None else _groups_of(pid))

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body) of /health: 200 only when the models are loaded and the database
        answers a cheap query on a fresh connection (so a deleted or corrupted file shows)."""
        from .store import probe

        if self.stopping:
            return 503, {"status": "stopping"}
        if not self.ready:
            return 503, {"status": "loading", "stage": self.stage}
        problem = probe(self.settings.db)
        if problem:
            return 503, {"status": "error", "error": problem}
        return 200, {"status": "ok", "pid": os.getpid(), "db": str(self.settings.db),
                     "model": self.generator.name, "embedder": self.embedder.name}

    def daemon_state(self) -> dict:
        return {
            "pid": os.getpid(), "socket": str(self.settings.socket), "ready": self.ready, "stage": self.stage,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "queue": {"active": self.admission.active, "max_queue": self.admission.max_queue},
            "watcher": asdict(self.worker.state) if self.worker else None,
            "indexer_alive": bool(self.worker and self.worker.alive),
            "background_summaries": self.background_summaries if self.settings.summarize_background else None,
            "restart_needed": list(self.restart_needed),
        }

    def status(self) -> dict:
        from .status import status_report

        with self.reader() as store:
            report = status_report(settings=self.settings, store=store, plan=self.plan)
        if self.generator is not None:
            report["model"] = f"{self.generator.model_path} (loaded)"
        report["daemon"] = self.daemon_state()
        return report

    def prometheus(self) -> str:
        with self.reader() as store:
            stats = store.stats()
        m = self.metrics
        state = self.worker.state if self.worker else None
        lines = ["# HELP edgellama_requests_total HTTP requests by endpoint and status.",
                 "# TYPE edgellama_requests_total counter"]
        with m._lock:
            for (path, code), n in sorted(m.requests.items()):
                lines.append(f'edgellama_requests_total{{path="{path}",status="{code}"}} {n}')
            values = [
                ("generated_tokens_total", "counter", "Tokens generated.", m.tokens),
                ("prompt_tokens_total", "counter", "Prompt tokens evaluated.", m.prompt_tokens),
                ("generation_seconds_total", "counter", "Time spent in prompt eval and generation.",
                 round(m.generation_seconds, 3)),
                ("tokens_per_second", "gauge", "Generation speed of the last answer.", round(m.last_tokens_per_second, 2)),
                ("refused_peers_total", "counter", "Connections refused by the peer check.", m.refused_peers),
                ("dropped_connections_total", "counter",
                 "Connections closed for being idle when the table was full, or for not sending a request in time.",
                 m.dropped_connections),
            ]
        values += [
            ("ready", "gauge", "1 once the models are loaded.", int(self.ready)),
            ("queue_depth", "gauge", "Generation requests running or waiting.", self.admission.active),
            ("queue_limit", "gauge", "Requests that may wait beyond the running one.", self.admission.max_queue),
            ("index_documents", "gauge", "Indexed documents.", stats.documents),
            ("index_skipped_documents", "gauge", "Files skipped with a recorded reason.", stats.skipped),
            ("index_chunks", "gauge", "Indexed chunks.", stats.chunks),
            ("index_bytes", "gauge", "Database size on disk.", stats.db_bytes),
            ("indexer_pending_paths", "gauge", "Changed paths waiting to settle.", state.pending if state else 0),
            ("indexer_runs_total", "counter", "Indexing runs (events and rescans).", state.runs if state else 0),
        ]
        for name, kind, help_text, value in values:
            lines += [f"# HELP edgellama_{name} {help_text}", f"# TYPE edgellama_{name} {kind}",
                      f"edgellama_{name} {value}"]
        return "\n".join(lines) + "\n"
