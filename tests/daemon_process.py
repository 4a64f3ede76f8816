"""A real ``edgellama serve`` in a fresh process, shared by the tests and the benchmarks: start it,
poll /health until it answers, read its log, clean up; and the few corpus files a quick run uses.

Standard library only (no pytest, no edgellama import), so ``bench/`` imports it too (by putting
tests/ on sys.path); it is not part of the installed package, as only the checkout's tools use it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
# A quick run (CI's benchmark smoke, the daemon tests) indexes these three only.
QUICK_FILES = ("station/power.md", "station/water-supply.md", "manual/04-configuration.rst")


def copy_corpus(docs: Path, files: Sequence[str] | None = QUICK_FILES) -> Path:
    """``files`` of corpus/ copied flat into ``docs`` (made here); ``None``: all of corpus/ as it is."""
    if files is None:
        shutil.copytree(CORPUS, docs)
        return docs
    docs.mkdir()
    for name in files:
        shutil.copy(CORPUS / name, docs / Path(name).name)
    return docs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(sock: Path, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    """(status, decoded JSON or text, headers) of one request over the daemon's socket."""
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


class DaemonProcess:
    """``python -m edgellama serve`` (this checkout's code) with ``env`` as its whole environment,
    behind ``prefix`` (``unshare -n``, say); its socket is the default one under env's
    XDG_RUNTIME_DIR, which ``stop`` removes."""

    def __init__(self, *, env: Mapping[str, str], log: Path, folders: Sequence[Path] = (),
                 prefix: Sequence[str] = ()):
        self.env = dict(env)
        self.runtime = Path(self.env["XDG_RUNTIME_DIR"])
        self.socket = self.runtime / "edgellama" / "edgellama.sock"
        self.log = open(log, "w+")
        self.health_seen: list[int] = []  # every /health status while starting (503 while loading)
        args = [*prefix, sys.executable, "-m", "edgellama", "serve"]
        for folder in folders:
            args += ["--folder", str(folder)]
        self._started = time.perf_counter()
        self.process = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 180) -> float:
        """Poll /health until it says 200; the seconds since the process started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.process.returncode}):\n{self.read_log()[-3000:]}")
            if self.socket.exists():
                try:
                    status = call(self.socket, "GET", "/health")[0]
                except OSError:  # bound but not listening yet
                    status = None
                if status is not None:
                    self.health_seen.append(status)
                    if status == 200:
                        return time.perf_counter() - self._started
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready in {timeout} s:\n{self.read_log()[-3000:]}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, *, grace: float = 30) -> None:
        """SIGTERM and up to ``grace`` seconds to exit (0: SIGKILL at once); then the log and the
        runtime folder go."""
        if self.process.poll() is None:
            if grace > 0:
                self.process.terminate()
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)

    def __enter__(self) -> "DaemonProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
