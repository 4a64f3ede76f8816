"""The daemon as the tests start it (a DaemonProcess with a fake systemd notification socket, TCP
and a token), and waiting for a condition. Used by test_daemon, test_load, test_quick, test_summarize."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from conftest import run_cli
from daemon_process import QUICK_FILES, DaemonProcess, UnixHTTP, call, copy_corpus, free_port

__all__ = ["Daemon", "Notifications", "UnixHTTP", "call", "eventually"]


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

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
