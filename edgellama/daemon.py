"""The daemon's process lifecycle: bind the socket, load the models once, start the indexing thread,
tell systemd (READY, STATUS, WATCHDOG, STOPPING), handle SIGTERM and SIGHUP, shut down cleanly.

What requests share is ``engine.Engine``; the HTTP routes are ``api.py``, the listeners
``server.py``; the live index is ``watch.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Mapping, TextIO

from .config import Settings, resolve_settings
from .engine import Engine, Priority, SharedEmbedder
from .errors import EdgeLlamaError
from .server import HTTPServer, bind_unix, read_token

# Engine, Priority and SharedEmbedder live in engine.py; they stay importable from here.
__all__ = ["log_stream", "sd_notify", "serve", "Engine", "Priority", "SharedEmbedder"]

log = logging.getLogger("edgellama.daemon")


def log_stream() -> TextIO:
    """Where the daemon's log goes: its own duplicate of stderr's file descriptor. llama-cpp-python
    points descriptor 2 at /dev/null while it loads a model (``suppress_stdout_stderr``, for the whole
    process), and a line that another thread logged meanwhile was lost: a refused peer's warning
    was, in CI, while the embedder loaded. The duplicate still points at the journal or the log file."""
    return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="backslashreplace")


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notification socket, if there is one (stdlib only)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as err:
        log.warning("cannot notify systemd at %s: %s", address, err)
        return False


def serve(*, flags: Mapping[str, Any] | None = None, stop_timeout: float = 20.0) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the exit code (0 after a clean stop)."""
    from .indexer import IndexOptions
    from .watch import IndexWorker

    settings = resolve_settings(flags=flags)
    engine = Engine(settings)
    stop = threading.Event()
    reload = threading.Event()
    token = read_token(settings.token_file) if settings.tcp_listen else None
    unix = bind_unix(settings.socket, access=settings.socket_access)
    server = HTTPServer(engine, max_connections=settings.max_connections)
    try:
        server.start(unix)
        log.info("listening on %s (pid %d, %s access)", settings.socket, os.getpid(), settings.socket_access)
        if settings.tcp_listen:
            server.set_tcp(settings.tcp_listen, token)
            log.info("also listening on %s (bearer token required)", settings.tcp_listen)
    except EdgeLlamaError:
        server.stop(timeout=5)
        unix.close()
        settings.socket.unlink(missing_ok=True)
        raise

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: reload.set())
    try:
        engine.load(on_stage=lambda name: (log.info("%s", name), sd_notify(f"STATUS={name}")))
        worker = IndexWorker(
            open_store=engine.open_store, embedder=engine.embedder.background(), folders=settings.folders,
            **IndexOptions.from_settings(settings).kwargs(), settle_seconds=settings.settle_seconds,
            reconcile_seconds=settings.reconcile_seconds,
            pause=engine.priority.wait_idle, busy=engine.priority.busy,
            stall_seconds=_stall_seconds(settings.max_extract_seconds),
        )
        engine.worker = worker
        if not stop.is_set():
            worker.start()
            if settings.summarize_background:
                threading.Thread(target=engine.summarize_in_background, args=(stop,), name="edgellama-summaries",
                                 daemon=True).start()
            engine.ready = True
            engine.stage = "ready"
            sd_notify(f"READY=1\nSTATUS=ready: watching {len(settings.folders)} folder(s)")
            log.info("ready: model %s, %d folder(s) watched", engine.generator.name, len(settings.folders))
        _main_loop(engine, server, stop, reload, flags)
    finally:
        engine.stopping = True
        engine.ready = False
        sd_notify("STOPPING=1\nSTATUS=stopping")
        log.info("stopping")
        # Running generations end at their next token (Engine.deadline); uvicorn stops accepting,
        # closes idle connections and waits for the running requests.
        server.stop(timeout=stop_timeout / 2)
        settings.socket.unlink(missing_ok=True)
        idle = engine.requests.wait_zero(stop_timeout / 4)
        if not idle:
            log.warning("%d request(s) still running at shutdown", engine.requests.count)
        if engine.worker is not None:
            engine.worker.stop(timeout=stop_timeout / 2)
        if idle:
            engine.close()  # never free the model under a request that is still running
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return 0


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2  # ping at twice the rate systemd expects
    except ValueError:
        return None


def _stall_seconds(max_extract_seconds: float) -> float | None:
    """How long the indexer may go without a checkpoint before the pings stop: a file's deadline
    plus twice the watchdog's own tolerance (WatchdogSec); None (watch.py's default) without one."""
    from .sources import EXTRACT_GRACE_SECONDS

    interval = _watchdog_interval()
    return None if interval is None else max_extract_seconds + EXTRACT_GRACE_SECONDS + 4 * interval


def _main_loop(engine: Engine, server: HTTPServer, stop: threading.Event, reload: threading.Event, flags) -> None:
    interval = _watchdog_interval()
    last_status = ""
    while not stop.is_set():
        stop.wait(min(interval or 1.0, 1.0))
        if reload.is_set():
            reload.clear()
            _reload(engine, server, flags)
        worker = engine.worker
        if interval and worker is not None and worker.progressing():
            sd_notify("WATCHDOG=1")  # only while indexing moves on: a stuck or dead indexer gets us restarted
        if worker is not None:
            state = worker.state
            text = (f"STATUS=ready: {state.pending} change(s) pending, "
                    f"{'indexing' if state.indexing else 'idle'}, queue {engine.admission.active}")
            if text != last_status:
                sd_notify(text)
                last_status = text


_RESTART_ONLY = ("db", "model", "embed_model", "socket", "socket_access", "max_connections", "threads", "n_ctx",
                 "summarize_background", "n_batch", "embed_batch_size", "embed_precision", "requantize")


def _reload(engine: Engine, server: HTTPServer, flags) -> None:
    """SIGHUP: read the config again; apply what can change live (the TCP listener and its token
    included), keep the loaded models, and say which changes need a restart (log and /status)."""
    try:
        new = resolve_settings(flags=flags)
    except EdgeLlamaError as err:
        log.error("reload failed, keeping the old settings: %s", err)
        return
    sd_notify("RELOADING=1")
    old = engine.settings
    fixed = [k for k in _RESTART_ONLY if getattr(old, k) != getattr(new, k)]
    if fixed:
        log.warning("reload: %s changed; that takes a restart", ", ".join(fixed))
        new = resolve_settings(flags={**(flags or {}), **{k: getattr(old, k) for k in fixed}})
    new = _reload_listener(server, old, new)
    engine.restart_needed = sorted(set(engine.restart_needed) | set(fixed))
    engine.settings = new
    engine.admission.max_queue = new.max_queue
    if engine.worker is not None:
        engine.worker.settle_seconds = new.settle_seconds
        engine.worker.reconcile_seconds = new.reconcile_seconds
        engine.worker.set_folders(new.folders)
    log.info("reloaded: %d folder(s) watched", len(new.folders))
    sd_notify("READY=1\nSTATUS=ready (reloaded)")


def _reload_listener(server: HTTPServer, old: Settings, new: Settings) -> Settings:
    """Open, move or close the TCP listener and re-read its token; on failure keep the old ones."""
    if (new.tcp_listen, new.token_file) == (old.tcp_listen, old.token_file) and not new.tcp_listen:
        return new
    try:
        token = read_token(new.token_file) if new.tcp_listen else None
        server.set_tcp(new.tcp_listen, token)
    except EdgeLlamaError as err:
        log.error("reload: keeping the TCP listener %s: %s", old.tcp_listen or "(none)", err)
        from dataclasses import replace

        return replace(new, tcp_listen=old.tcp_listen, token_file=old.token_file)
    if new.tcp_listen != old.tcp_listen:
        log.info("reload: TCP listener %s -> %s", old.tcp_listen or "(none)", new.tcp_listen or "(none)")
    elif new.tcp_listen:
        log.info("reload: token re-read from %s", new.token_file)
    return new
