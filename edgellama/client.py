"""The thin client the CLI uses to talk to a running daemon over its UNIX socket.

Standard library only (http.client, socket, json): importing it must stay cheap, so ``edgellama
ask`` against a warm daemon starts in a few tens of milliseconds. It never loads a model.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import EdgeLlamaError

__all__ = ["DaemonClient", "connect", "DaemonError"]


class DaemonError(EdgeLlamaError):
    """The daemon answered with an error; its message is shown as is."""


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
