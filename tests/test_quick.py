"""The client fast path: status and ask through a running daemon without importing typer (or any
heavy library), printing what the typer CLI prints; anything else falls through to the CLI."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from daemon_harness import Daemon, eventually

pytestmark = pytest.mark.models

PROBE = (
    "import sys\n"
    "from edgellama import entry\n"
    "code = entry.run_fast(sys.argv[1:])\n"
    "heavy = sorted(m for m in ('typer', 'click', 'pydantic', 'numpy', 'torch', 'llama_cpp', 'sqlite_utils') if m in sys.modules)\n"
    "print('\\nPROBE', code, heavy)\n"
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, shared_data):
    d = Daemon(tmp_path_factory.mktemp("quick"), shared_data)
    try:
        d.wait_ready()
        assert eventually(lambda: "water-supply.md" in d.search_paths("treated water tank"), timeout=180)
        yield d
    finally:
        d.stop()


def client_env(daemon):
    return {k: v for k, v in daemon.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}


def probe(daemon, *args):
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env=client_env(daemon), cwd=ROOT, timeout=300)


def test_status_is_answered_without_typer_and_matches_the_cli(daemon):
    fast = probe(daemon, "status")
    assert "PROBE 0 []" in fast.stdout, fast.stdout + fast.stderr
    assert "daemon       pid" in fast.stdout and "database     " in fast.stdout
    assert "resources    " in fast.stdout and "\n  n_ctx " in fast.stdout  # the daemon's resource plan
    # the same lines as the typer CLI prints (skipping the uptime, which moves)
    cli = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['edgellama','status']\n"
                          "from edgellama.cli import main\nmain()"], capture_output=True, text=True,
                         env=client_env(daemon), cwd=ROOT, timeout=300)
    strip = lambda text: [line.split(", up ")[0] for line in text.splitlines() if line and not line.startswith("PROBE")]  # noqa: E731
    assert strip(fast.stdout) == strip(cli.stdout), cli.stderr
    as_json = probe(daemon, "status", "--json")
    assert json.loads(as_json.stdout.split("\nPROBE")[0])["daemon"]["ready"] is True


def test_ask_streams_a_cited_answer_without_typer(daemon):
    result = probe(daemon, "ask", "How much does the treated water tank hold?")
    assert "PROBE 0 []" in result.stdout, result.stdout + result.stderr
    assert "4,500" in result.stdout and "Sources:" in result.stdout and "water-supply.md" in result.stdout


@pytest.mark.parametrize("args", [["status", "--no-daemon"], ["ask", "--top-k", "2", "water?"], ["search", "water"],
                                  ["ask"], ["status", "extra"], ["config"]])
def test_anything_else_goes_to_the_cli(daemon, args):
    result = probe(daemon, *args)
    assert "PROBE None []" in result.stdout, result.stdout + result.stderr


def test_the_cli_entry_point_reports_daemon_errors_in_one_line(daemon):
    result = daemon.cli("ask", "x" * 5000)
    assert result.returncode == 2 and result.stderr.startswith("edgellama: error:") and "Traceback" not in result.stderr
