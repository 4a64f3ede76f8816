"""The daemon as the tests start it (a DaemonProcess with a fake systemd notification socket, TCP
and a token), and waiting for a condition. Used by test_daemon, test_load, test_quick, test_summarize."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import json
import time
from pathlib import Path

from conftest import run_cli
from daemon_process import QUICK_FILES, DaemonProcess, UnixHTTP, call, copy_corpus, free_port

__all__ = ["Daemon", "Notifications", "UnixHTTP", "api_fuzz_schema", "assert_no_server_error", "call", "eventually",
           "long_chat_stream"]


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.arrived: list[float] = []  # time.monotonic() of each message
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                message = self.sock.recv(4096).decode()
                self.arrived.append(time.monotonic())
                self.messages.append(message)
            except socket.timeout:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def pings(self, since: float = 0.0) -> list[float]:
        """When each WATCHDOG=1 arrived (time.monotonic()), from ``since`` on."""
        return [t for t, message in zip(list(self.arrived), list(self.messages))
                if t >= since and "WATCHDOG=1" in message.splitlines()]

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()


class Daemon(DaemonProcess):
    """The daemon as the tests run it: watching a copy of a few corpus files, with a fake systemd
    notification socket and watchdog, and TCP with a bearer token besides its UNIX socket."""

    def __init__(self, root: Path, shared_data: Path, *, extra_env: dict | None = None,
                 env_without: tuple[str, ...] = (), files: tuple[str, ...] = QUICK_FILES):
        self.root = root
        self.docs = copy_corpus(root / "docs", files)
        runtime = Path(tempfile.mkdtemp(prefix="el-d-"))
        self.notify = Notifications(runtime / "notify")
        self.token = "test-token-" + os.urandom(8).hex()
        token_file = root / "token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        self.port = free_port()
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(shared_data),  # the requantized model is made once per session
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_RUNTIME_DIR": str(runtime),
            "EDGELLAMA_DB": str(root / "daemon.db"),
            "EDGELLAMA_SETTLE_SECONDS": "0.5",
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "1000000",
            "EDGELLAMA_TCP_LISTEN": f"127.0.0.1:{self.port}",
            "EDGELLAMA_TOKEN_FILE": str(token_file),
            **(extra_env or {}),
        }
        for key in env_without:  # e.g. to let the config file decide what the environment would
            env.pop(key, None)
        super().__init__(env=env, log=root / "daemon.log", folders=(self.docs,))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, env={k: v for k, v in self.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")})

    def search_paths(self, query: str) -> list[str]:
        status, body, _ = call(self.socket, "POST", "/search", {"query": query, "k": 3})
        assert status == 200, body
        return [Path(r["path"]).name for r in body["results"]]

    def stop(self, *, grace: float = 0) -> None:
        """SIGKILL by default: a test that wants a clean shutdown sends SIGTERM itself."""
        super().stop(grace=grace)
        self.notify.close()


def eventually(check, *, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def long_chat_stream(path: Path, content: str):
    """A streamed chat completion of up to 1,000 tokens, started and read to its first event:
    (the connection, the response) for a test that interrupts it."""
    conn = UnixHTTP(path)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"rag": False, "stream": True, "max_tokens": 1000, "messages": [{"role": "user", "content": content}]}),
        headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data:")
    return conn, response


def api_fuzz_schema(*, max_examples: int, exclude: tuple[str, ...] = ()):
    """The daemon's OpenAPI document as a schemathesis schema (valid and invalid bodies alike), or
    None where schemathesis, a test extra, is not installed."""
    try:
        import schemathesis
    except ImportError:
        return None
    from edgellama.api import openapi_document

    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=max_examples)
    return schema.exclude(path=list(exclude)) if exclude else schema


def assert_no_server_error(case, daemon) -> None:
    """One fuzzed request through the TCP listener (the same handler as the UNIX socket): no 5xx but
    a 503 that says when to retry."""
    response = case.call(base_url=f"http://127.0.0.1:{daemon.port}",
                         headers={"Authorization": f"Bearer {daemon.token}"}, timeout=120)
    assert response.status_code < 500 or (response.status_code == 503 and response.headers.get("Retry-After")), (
        response.status_code, response.text[:300])
