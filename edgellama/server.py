"""The daemon's listeners: its UNIX socket and the optional loopback TCP one, served by uvicorn
(h11's HTTP/1.1 framing) on an event loop in a thread of its own.

Owns the socket file (its folder, its mode, a stale one left by a crash), the peer check on every
accepted connection (SO_PEERCRED/SO_PEERGROUPS), the TCP listener's bearer token, the bound on
open connections and the time a client has to send its request. The routes are ``api.py``; uvicorn
is imported only when a server starts, so ``import edgellama.server`` stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from .api import ROUTES, build_app, openapi_document, refusal_app
from .config import parse_loopback
from .errors import EdgeLlamaError

if TYPE_CHECKING:
    from .engine import Engine

# ROUTES and openapi_document are the API's (api.py); they stay importable from here.
__all__ = ["HTTPServer", "bind_unix", "bind_loopback", "read_token", "peer_credentials", "peer_groups",
           "RECEIVE_SECONDS", "KEEP_ALIVE_SECONDS", "ROUTES", "openapi_document"]

log = logging.getLogger("edgellama.server")

RECEIVE_SECONDS = 10.0  # from connect (or the end of the last answer) to the whole next request
KEEP_ALIVE_SECONDS = 5.0  # an idle keep-alive connection is closed after this (uvicorn's timer)
BACKLOG = 4096  # connections the kernel queues for accept() (capped at somaxconn); full, connect() fails


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    if sock.family != socket.AF_UNIX:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


def peer_groups(sock: socket.socket) -> set[int] | None:
    """The supplementary groups of the process at the other end (SO_PEERGROUPS, Linux 4.13+), as
    the kernel saw them at connect(); None where the option is missing."""
    if sock.family != socket.AF_UNIX:
        return None
    option = getattr(socket, "SO_PEERGROUPS", 59)  # 59 on Linux; Python 3.11 lacks the constant
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, option, 4 * 256)
    except OSError:
        return None
    return set(struct.unpack(f"{len(data) // 4}I", data))


def read_token(path) -> bytes:
    """The bearer token for the TCP listener: the file must be private (mode 0600 or stricter)."""
    try:
        st = os.stat(path)
        token = open(path, "rb").read().strip()
    except OSError as err:
        raise EdgeLlamaError(f"cannot read token_file {path}: {err.strerror or err}") from None
    if st.st_mode & 0o077:
        raise EdgeLlamaError(f"token_file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if len(token) < 16:
        raise EdgeLlamaError(f"token_file {path} holds fewer than 16 characters")
    return token


def _prepare_socket(path: Path, *, access: str) -> None:
    """Make the socket's folder (0750 when the socket is shared with the group, else 0700) and
    clear a stale socket left by a crash. Refuses when another daemon still answers there, and
    never deletes anything but a socket."""
    if not path.parent.exists():
        mode = 0o750 if access == "group" else 0o700
        path.parent.mkdir(parents=True, mode=mode)
        os.chmod(path.parent, mode)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "a file"
        raise EdgeLlamaError(f"{path} is {kind}, not a socket; not removing it: move it away or set 'socket'")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise EdgeLlamaError(f"another daemon is already serving on {path}")
    finally:
        probe.close()


def bind_unix(path: Path, *, access: str) -> socket.socket:
    """The listening UNIX socket, born 0660 (``access`` "group") or 0600 ("user"): the umask is
    set around bind(), so there is no window before a chmod."""
    _prepare_socket(path, access=access)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117 if access == "group" else 0o177)
    try:
        sock.bind(str(path))
    except OSError as err:
        sock.close()
        raise EdgeLlamaError(f"cannot listen on {path}: {err.strerror or err}") from None
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock


def bind_loopback(address: str) -> socket.socket:
    """The optional TCP listener: loopback only (config refuses other addresses; this is the last line)."""
    import ipaddress

    host, port = parse_loopback(address)
    if not ipaddress.ip_address(host).is_loopback:
        raise EdgeLlamaError(f"refusing to listen on {host}: not a loopback address")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise EdgeLlamaError(f"cannot listen on {address}: {err.strerror or err}") from None
    return sock


def _connection_cap(wanted: int) -> int:
    """``max_connections``, kept well under the open-files limit (the models, the database and
    the watcher need descriptors too), so accept() never fails with EMFILE."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - 128:
        return wanted
    cap = max(16, soft // 2)
    log.warning("max_connections %d is above what the open-files limit (%d) allows; using %d", wanted, soft, cap)
    return cap


class HTTPServer:
    """uvicorn serving ``engine``'s API on the UNIX socket (and the TCP listener, which SIGHUP can
    open, move or close), on an event loop in the thread "edgellama-http"."""

    def __init__(self, engine: "Engine", *, max_connections: int):
        self.engine = engine
        self.max_connections = _connection_cap(max_connections)
        self.token: bytes | None = None
        self.tcp_address = ""
        self.unix_app = build_app(engine)
        self.tcp_app = build_app(engine, token=lambda: self.token or b"\0")
        self.refused_app = refusal_app(engine)
        self._server = None
        self._config = None
        self._protocol = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tcp = None  # the asyncio Server of the TCP listener
        # The connection table: how many are open, and the idle ones, longest idle first. The
        # event loop's thread alone touches them.
        self._open = 0
        self._idle: "OrderedDict[asyncio.Protocol, None]" = OrderedDict()
        self._full_logged = 0.0

    def start(self, unix: socket.socket, *, timeout: float = 30.0) -> None:
        import uvicorn

        self._protocol = _protocol_class(self)
        self._config = uvicorn.Config(
            self.unix_app, http=self._protocol, lifespan="off", log_config=None, access_log=False,
            proxy_headers=False, server_header=False, timeout_keep_alive=KEEP_ALIVE_SECONDS, backlog=BACKLOG,
            timeout_graceful_shutdown=10,
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve([unix]),), name="edgellama-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EdgeLlamaError("the HTTP server did not start")
            time.sleep(0.01)

    async def _serve(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=sockets)

    def set_tcp(self, address: str, token: bytes | None) -> None:
        """Listen on ``address`` (host:port, "" for none) with ``token`` from now on. Connections
        already open stay open; the new token applies to their next request."""
        if address != self.tcp_address:
            sock = bind_loopback(address) if address else None  # fails before anything changes
            asyncio.run_coroutine_threadsafe(self._swap_tcp(sock), self._loop).result(timeout=10)
            self.tcp_address = address
        self.token = token

    async def _swap_tcp(self, sock: socket.socket | None) -> None:
        if self._tcp is not None:
            self._tcp.close()
            self._server.servers.remove(self._tcp)
            self._tcp = None
        if sock is not None:
            loop = asyncio.get_running_loop()

            def create_protocol() -> asyncio.Protocol:
                return self._protocol(config=self._config, server_state=self._server.server_state, app_state={},
                                      _loop=loop)

            self._tcp = await loop.create_server(create_protocol, sock=sock, backlog=BACKLOG)
            self._server.servers.append(self._tcp)  # so uvicorn's shutdown closes it too

    def stop(self, *, timeout: float) -> None:
        """Stop accepting, close idle connections, let running requests finish (they end at their
        next token once the engine is stopping), within ``timeout``."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=2)

    def opened(self, conn) -> bool:
        """Count a new connection in. With the table full, close the connection idle the longest
        (nginx does the same with keep-alive ones); False when none is idle (refuse this one)."""
        self._open += 1
        if self._open <= self.max_connections:
            return True
        now = time.monotonic()
        if now - self._full_logged > 60:
            self._full_logged = now
            log.warning("%d connections open (max_connections %d): closing the longest idle ones",
                        self._open, self.max_connections)
        self.engine.metrics.dropped_connections += 1
        if not self._idle:
            return False
        oldest, _ = self._idle.popitem(last=False)
        oldest.drop()
        return True

    def idle(self, conn) -> None:
        """``conn`` waits for a request (and just heard from its client)."""
        self._idle[conn] = None
        self._idle.move_to_end(conn)

    def busy(self, conn) -> None:
        """``conn`` has a request running: never closed to make room."""
        self._idle.pop(conn, None)

    def closed(self, conn) -> None:
        self._open -= 1
        self._idle.pop(conn, None)


def _protocol_class(server: HTTPServer):
    """uvicorn's h11 protocol, plus what it lacks for a daemon other local users can reach: the
    peer check at accept, a bounded connection table, and a deadline for receiving a request
    (uvicorn's keep-alive timer is reset by every byte, so a client trickling a header would
    otherwise hold its connection forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DaemonProtocol(H11Protocol):
        _receiving: asyncio.TimerHandle | None = None
        _counted = False  # in the server's table

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._counted = True
            if not server.opened(self):
                self.drop()
                return
            sock = transport.get_extra_info("socket")
            if sock.family == socket.AF_UNIX:
                creds = peer_credentials(sock)
                if server.engine.peer_allowed(*creds, groups=peer_groups(sock)):
                    self.app = server.unix_app
                else:
                    server.engine.metrics.refused_peers += 1
                    log.warning("refused peer pid=%d uid=%d gid=%d", *creds)
                    self.app = server.refused_app
            else:
                self.app = server.tcp_app  # the bearer token is checked per request
            self._watch_receipt()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_receipt()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_receipt()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._uncount()
            super().connection_lost(exc)

        def _watch_receipt(self) -> None:
            """Arm the receipt deadline while a request is awaited or arriving, disarm it once
            the request is complete (its answer may take minutes)."""
            if self.transport.is_closing():
                return self._disarm()
            cycle = self.cycle
            waiting = cycle is None or cycle.response_complete
            if waiting:
                server.idle(self)  # the most recently active last: the longest silent is closed first
            else:
                server.busy(self)
            if waiting or cycle.more_body:
                if self._receiving is None:
                    self._receiving = self.loop.call_later(RECEIVE_SECONDS, self._too_slow)
            else:
                self._disarm()

        def _disarm(self) -> None:
            if self._receiving is not None:
                self._receiving.cancel()
                self._receiving = None

        def _too_slow(self) -> None:
            self._receiving = None
            if not self.transport.is_closing():
                server.engine.metrics.dropped_connections += 1
                log.debug("closed a connection that sent no complete request within %g s", RECEIVE_SECONDS)
                self.drop()

        def drop(self) -> None:
            self._disarm()
            self._uncount()
            self.transport.close()  # connection_lost follows, and tells a running request

        def _uncount(self) -> None:
            if self._counted:
                self._counted = False
                server.closed(self)

    return DaemonProtocol
