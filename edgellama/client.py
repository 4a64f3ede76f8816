"""The thin client the CLI uses to talk to a running daemon over its UNIX socket: the requests,
finding the daemon that serves our database (``find_daemon``), and a streamed answer (``ask_stream``).

Standard library only (http.client, socket, json): importing it must stay cheap, so ``edgellama
ask`` against a warm daemon starts in a few tens of milliseconds. It never loads a model.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .errors import DaemonError, EdgeLlamaError

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["DaemonClient", "connect", "find_daemon", "ask_body", "ask_stream"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, *, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DaemonClient:
    """Requests to the daemon at ``socket_path``. Each call opens its own connection."""

    def __init__(self, socket_path: Path, *, timeout: float = 600.0):
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self.status: dict | None = None  # the /status report ``find_daemon(ready=False)`` checked

    def _send(self, method: str, path: str, body: dict | None, *, timeout: float | None = None):
        conn = _UnixConnection(self.socket_path, timeout=timeout or self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise DaemonError(f"lost the daemon at {self.socket_path}: {err}") from None

    def request(self, method: str, path: str, body: dict | None = None, *, timeout: float | None = None) -> Any:
        """One JSON request; a non-2xx answer raises ``DaemonError`` with the daemon's message."""
        conn, response = self._send(method, path, body, timeout=timeout)
        try:
            data = response.read()
        finally:
            conn.close()
        decoded = _decode(data)
        if response.status >= 400:
            raise _error(response.status, decoded)
        return decoded

    def events(self, path: str, body: dict) -> Iterator[tuple[str, Any]]:
        """Server-sent events of a streaming request, as (event name, decoded data)."""
        conn, response = self._send("POST", path, body)
        try:
            if response.status >= 400:
                raise _error(response.status, _decode(response.read()))
            event, data = "message", []
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        yield event, _decode("\n".join(data).encode())
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except (OSError, http.client.HTTPException) as err:
            raise DaemonError(f"lost the daemon at {self.socket_path}: {err}") from None
        finally:
            conn.close()

    def health(self, *, timeout: float = 2.0) -> dict:
        conn, response = self._send("GET", "/health", None, timeout=timeout)
        try:
            return {**_decode(response.read()), "http_status": response.status}
        finally:
            conn.close()

    def wait_ready(self, *, timeout: float = 300.0) -> dict:
        """Block while the daemon loads its models."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["http_status"] == 200:
                return health
            if time.monotonic() > deadline:
                raise DaemonError(f"the daemon at {self.socket_path} is still {health.get('status')} after {timeout:.0f} s")
            time.sleep(0.2)


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"error": {"message": data.decode("utf-8", "replace")[:200]}}


def _error(status: int, decoded: Any) -> DaemonError:
    error = decoded.get("error") if isinstance(decoded, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(decoded)[:200]
    err = DaemonError(message or f"daemon error {status}")
    err.exit_code = 2 if status in (400, 413, 422) else 1
    return err


def connect(socket_path: Path) -> DaemonClient | None:
    """A client for the daemon listening on ``socket_path``, or None when none answers there."""
    path = Path(socket_path)
    if not path.exists():
        return None
    client = DaemonClient(path)
    try:
        client.health()
    except DaemonError:
        return None
    return client


def find_daemon(settings: "Settings", *, ready: bool = True, wait: bool = True) -> DaemonClient | None:
    """A client for the daemon on our socket that serves our database (``settings.db``), or None:
    then the caller works in-process. No daemon answering there is None.

    ``ready``: a daemon that has loaded its models; not ready: one in any state (``status`` works while
    the daemon loads; the report it read is kept in ``client.status``). ``wait`` (the CLI): block while it loads, and a daemon that fails after its first
    answer is an error. Not ``wait`` (the fast path, entry.py): anything but that is None, so the CLI runs."""
    path = Path(settings.socket)
    if not path.exists():
        return None
    client = DaemonClient(path)
    try:
        health = client.health() if ready or wait else None
    except DaemonError:
        return None
    try:
        if not ready:
            client.status = client.request("GET", "/status")
            served = client.status.get("db")
        elif health["http_status"] == 200:
            served = health.get("db")
        elif wait:
            served = client.wait_ready().get("db")
        else:
            return None  # loading: the CLI waits for it
    except DaemonError:
        if wait:
            raise
        return None
    return client if served == str(settings.db) else None


def ask_body(settings: "Settings", question: str) -> dict:
    """The /ask request of ``edgellama ask QUESTION`` with these settings."""
    return {"question": question, "top_k": settings.top_k, "max_tokens": settings.max_tokens,
            "context_tokens": settings.context_tokens, "stream": True}


def ask_stream(client: DaemonClient, body: dict, *, on_token: Callable[[str], None] | None) -> dict:
    """Ask the daemon, passing each streamed token to ``on_token``; the final answer dict."""
    answer = None
    for event, data in client.events("/ask", body):
        if event == "token" and on_token is not None:
            on_token(data["text"])
        elif event == "answer":
            answer = data
        elif event == "error":
            raise DaemonError(data["error"]["message"])
    if answer is None:
        raise EdgeLlamaError("the daemon ended the answer early")
    return answer
