"""The daemon, as an edge box runs it: a real ``edgellama serve`` process with the real models,
a real UNIX socket, real clients (curl, the openai package, our own CLI), a real watched folder
and a real systemd notification socket.

The tests share one daemon and run in file order; the last one stops it with SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import CORPUS, run_cli

pytestmark = pytest.mark.models

QUESTION = "How much energy can the battery bank store?"


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
    def __init__(self, root: Path, shared_data: Path):
        self.root = root
        self.docs = root / "docs"
        self.docs.mkdir()
        for name in ("station/power.md", "station/water-supply.md", "manual/04-configuration.rst"):
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
        }
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


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, shared_data):
    d = Daemon(tmp_path_factory.mktemp("daemon"), shared_data)
    try:
        d.wait_ready()
        assert eventually(lambda: call(d.socket, "GET", "/status")[1]["documents"] == 3, timeout=60)
        yield d
    finally:
        d.stop()


def eventually(check, *, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_health_says_loading_then_ok_and_systemd_hears_ready(daemon):
    assert daemon.health_seen[0] == 503 and daemon.health_seen[-1] == 200
    lines = daemon.notify.lines()
    assert any(line.startswith("STATUS=loading") for line in lines)
    ready = lines.index("READY=1")
    assert all(not line.startswith("STATUS=loading") for line in lines[ready:])
    assert eventually(lambda: "WATCHDOG=1" in daemon.notify.lines(), timeout=5)
    mode = daemon.socket.stat().st_mode & 0o777
    assert mode == 0o660
    assert daemon.socket.parent.stat().st_mode & 0o777 == 0o750


def test_curl_gets_a_cited_answer(daemon):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-s", "--unix-socket", str(daemon.socket), "http://localhost/ask", "-H", "Content-Type: application/json",
         "-d", json.dumps({"question": QUESTION})], capture_output=True, text=True, timeout=120)
    answer = json.loads(out.stdout)
    assert "210" in answer["answer"]
    assert answer["sources"][0]["path"].endswith("power.md")


def test_openai_client_over_the_unix_socket(daemon):
    openai = pytest.importorskip("openai")
    import httpx2

    client = openai.OpenAI(base_url="http://localhost/v1", api_key="unused", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=str(daemon.socket))))
    reply = client.chat.completions.create(model="edgellama", messages=[{"role": "user", "content": QUESTION}])
    assert "210" in reply.choices[0].message.content
    assert "power.md" in reply.choices[0].message.content  # any client shows where it came from
    assert reply.model_extra["sources"][0]["path"].endswith("power.md")

    pieces, sources = [], None
    for chunk in client.chat.completions.create(model="edgellama", stream=True,
                                                messages=[{"role": "user", "content": QUESTION}]):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.model_extra.get("sources") is not None:
            sources = chunk.model_extra["sources"]
    assert len(pieces) > 2 and "210" in "".join(pieces)
    assert sources and sources[0]["path"].endswith("power.md")

    models = [m.id for m in client.models.list()]
    assert any(m.endswith(".gguf") for m in models)
    vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["battery", "water"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384


def test_the_cli_uses_the_daemon_and_says_the_same_as_in_process(daemon):
    before = call(daemon.socket, "GET", "/metrics")[1].count('path="/ask",status="200"')
    via_daemon = daemon.cli("ask", QUESTION)
    assert via_daemon.returncode == 0, via_daemon.stderr
    metrics = call(daemon.socket, "GET", "/metrics")[1]
    assert 'edgellama_requests_total{path="/ask",status="200"}' in metrics and before is not None
    in_process = daemon.cli("ask", "--no-daemon", QUESTION)
    assert in_process.returncode == 0, in_process.stderr
    assert via_daemon.stdout == in_process.stdout
    assert "Sources:" in via_daemon.stdout and "power.md" in via_daemon.stdout

    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["daemon"]["ready"] is True and status["documents"] == 3


def test_the_client_path_imports_no_model_library(daemon):
    code = (
        "import sys\n"
        "from edgellama import cli\n"
        "for argv in (['status'], ['search', 'battery'], ['ask', 'How much energy can the battery bank store?']):\n"
        "    sys.argv = ['edgellama', *argv]\n"
        "    try:\n"
        "        cli.main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'llama_cpp', 'sentence_transformers', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {k: v for k, v in daemon.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "210" in out.stdout


def test_the_watcher_follows_create_modify_rename_delete(daemon):
    note = daemon.docs / "zebra.md"
    note.write_text("# Gate\n\nThe zebra protocol needs three purple lanterns at the north gate.\n")
    assert eventually(lambda: daemon.search_paths("purple lanterns zebra protocol")[:1] == ["zebra.md"])

    note.write_text("# Gate\n\nThe zebra protocol now needs seven orange lanterns at the north gate.\n")
    assert eventually(lambda: "seven orange" in call(daemon.socket, "POST", "/search",
                                                    {"query": "orange lanterns", "k": 1})[1]["results"][0]["text"])

    moved = daemon.docs / "sub" / "zebra-moved.md"
    moved.parent.mkdir()
    note.rename(moved)
    assert eventually(lambda: daemon.search_paths("orange lanterns zebra protocol")[:1] == ["zebra-moved.md"])
    state = call(daemon.socket, "GET", "/status")[1]["daemon"]["watcher"]
    assert state["last_stats"]["chunks_embedded"] == 0  # a rename keeps its vectors

    moved.unlink()
    assert eventually(lambda: "zebra-moved.md" not in daemon.search_paths("orange lanterns zebra protocol"))
    for _ in range(5):  # and it stays gone
        assert "zebra-moved.md" not in daemon.search_paths("orange lanterns zebra protocol")
        time.sleep(0.1)
    assert call(daemon.socket, "GET", "/status")[1]["documents"] == 3


def test_the_tcp_listener_is_loopback_only_and_needs_the_token(daemon):
    def get(headers):
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        conn.request("GET", "/health", headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status

    assert get({}) == 401
    assert get({"Authorization": "Bearer wrong-token-0123456789"}) == 401
    assert get({"Authorization": f"Bearer {daemon.token}"}) == 200
    refused = run_cli("serve", env={"EDGELLAMA_TCP_LISTEN": "0.0.0.0:8088", "EDGELLAMA_TOKEN_FILE": "/nonexistent"})
    assert refused.returncode == 2 and "not a loopback address" in refused.stderr


def test_bad_requests_get_clear_4xx(daemon):
    s = daemon.socket
    assert call(s, "POST", "/ask", raw=b"{not json")[0] == 400
    status, body, _ = call(s, "POST", "/ask", {"question": ""})
    assert status == 400 and "question" in body["error"]["message"]
    assert call(s, "POST", "/ask", {"question": "x" * 5000})[0] == 413
    assert call(s, "POST", "/ask", raw=b"{" + b" " * 1_100_000 + b"}")[0] == 413
    assert call(s, "GET", "/nope")[0] == 404
    assert call(s, "GET", "/ask")[0] == 405
    assert call(s, "POST", "/search", {"query": "x", "mode": "fuzzy"})[0] == 400
    assert call(s, "POST", "/v1/chat/completions", {"messages": []})[0] == 400
    status, body, _ = call(s, "POST", "/v1/chat/completions",
                           {"rag": False, "messages": [{"role": "user", "content": "word " * 5000}]})
    assert status == 413 and "context" in body["error"]["message"]
    assert call(s, "GET", "/health")[0] == 200  # and it still serves


def test_openapi_document_matches_what_is_served(daemon):
    from edgellama.server import ROUTES

    status, doc, _ = call(daemon.socket, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == set(ROUTES)
    for path, operations in doc["paths"].items():
        (method,) = operations
        if method == "get":
            assert call(daemon.socket, "GET", path)[0] == 200, path
        else:
            assert call(daemon.socket, "GET", path)[0] == 405, path
    metrics = call(daemon.socket, "GET", "/metrics")[1]
    for name in ("edgellama_generated_tokens_total", "edgellama_tokens_per_second", "edgellama_queue_depth",
                 "edgellama_index_chunks"):
        assert f"\n{name} " in metrics


def test_a_full_queue_answers_503_with_retry_after(daemon):
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "edgellama" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("max_queue = 0\n")
    daemon.process.send_signal(signal.SIGHUP)
    assert eventually(lambda: call(daemon.socket, "GET", "/status")[1]["daemon"]["queue"]["max_queue"] == 0)

    results = []

    def long_chat() -> None:
        results.append(call(daemon.socket, "POST", "/v1/chat/completions",
                            {"rag": False, "max_tokens": 300, "messages": [{"role": "user", "content": "Tell a long story."}]}))

    threads = [threading.Thread(target=long_chat) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=120)
    codes = sorted(r[0] for r in results)
    assert codes[0] == 200 and 503 in codes, codes
    busy = next(r for r in results if r[0] == 503)
    assert busy[2].get("Retry-After") and "busy" in busy[1]["error"]["message"]
    config.write_text("max_queue = 4\n")
    daemon.process.send_signal(signal.SIGHUP)
    assert eventually(lambda: call(daemon.socket, "GET", "/status")[1]["daemon"]["queue"]["max_queue"] == 4)
    assert daemon.process.poll() is None  # SIGHUP reloaded, it did not stop


def test_sigterm_stops_cleanly_and_says_stopping(daemon):
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
    assert not daemon.socket.exists()
    assert "STOPPING=1" in daemon.notify.lines()
    from edgellama.store import Store

    with Store.open(Path(daemon.env["EDGELLAMA_DB"]), create=False) as store:
        assert store.integrity_problems() == []
