"""A real ``edgellama serve`` process for tests: its socket, a fake systemd notification socket,
and small HTTP helpers. Used by test_daemon.py and test_load.py."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from conftest import CORPUS, run_cli


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(sock: Path, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    conn = UnixHTTP(sock)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=headers or ({"Content-Type": "application/json"} if data else {}))
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    try:
        decoded = json.loads(payload)
    except ValueError:
        decoded = payload.decode()
    return response.status, decoded, dict(response.getheaders())


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


class Daemon:
    def __init__(self, root: Path, shared_data: Path, *, extra_env: dict | None = None, env_without: tuple[str, ...] = (),
                 files: tuple[str, ...] = ("station/power.md", "station/water-supply.md", "manual/04-configuration.rst")):
        self.root = root
        self.docs = root / "docs"
        self.docs.mkdir()
        for name in files:
            shutil.copy(CORPUS / name, self.docs / Path(name).name)
        self.runtime = Path(tempfile.mkdtemp(prefix="el-d-"))
        self.socket = self.runtime / "edgellama" / "edgellama.sock"
        self.notify = Notifications(self.runtime / "notify")
        self.token = "test-token-" + os.urandom(8).hex()
        token_file = root / "token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.env = {
            **os.environ,
            "XDG_DATA_HOME": str(shared_data),  # the requantized model is made once per session
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "EDGELLAMA_DB": str(root / "daemon.db"),
            "EDGELLAMA_SETTLE_SECONDS": "0.5",
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "1000000",
            "EDGELLAMA_TCP_LISTEN": f"127.0.0.1:{self.port}",
            "EDGELLAMA_TOKEN_FILE": str(token_file),
            **(extra_env or {}),
        }
        for key in env_without:  # e.g. to let the config file decide what the environment would
            self.env.pop(key, None)
        self.log = open(root / "daemon.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgellama", "serve", "--folder", str(self.docs)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.health_seen: list[int] = []

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.read_log()
            if self.socket.exists():
                status, _, _ = call(self.socket, "GET", "/health")
                self.health_seen.append(status)
                if status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout} s:\n{self.read_log()}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, env={k: v for k, v in self.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")})

    def search_paths(self, query: str) -> list[str]:
        status, body, _ = call(self.socket, "POST", "/search", {"query": query, "k": 3})
        assert status == 200, body
        return [Path(r["path"]).name for r in body["results"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()
        self.log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


def eventually(check, *, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)
