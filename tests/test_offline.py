"""Offline, proven two ways: an audit hook sees no network call, and the ask path runs with no
network at all (inside ``unshare -n``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import CORPUS, ROOT, run_cli

pytestmark = pytest.mark.models

AUDITED = textwrap.dedent(
    """
    import json, os, sys

    from edgellama import cli
    from edgellama.selftest import NetworkAudit

    audit = NetworkAudit.install()  # the hook behind `edgellama selftest --airgap`
    audit.active = True
    for argv in (["index", sys.argv[1]], ["ask", "How much energy can the battery bank store?"]):
        sys.argv = ["edgellama", *argv]
        try:
            cli.main()
        except SystemExit as exit:
            assert not exit.code, exit.code
    print(json.dumps({"attempts": audit.attempts,
                      "offline": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}}))
    """
)


def test_no_network_call_during_index_and_ask(tmp_path, shared_data):
    env = {"XDG_DATA_HOME": str(shared_data), "EDGELLAMA_DB": str(tmp_path / "audit.db")}
    result = subprocess.run([sys.executable, "-c", AUDITED, str(CORPUS)], capture_output=True, text=True,
                            env={**__import__("os").environ, **env}, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["offline"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert "210 kWh" in result.stdout


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.netns
@pytest.mark.skipif(not _unshare_works(), reason="unshare -n is not permitted here (needs CAP_SYS_ADMIN)")
def test_index_and_ask_inside_a_network_namespace_with_no_network(tmp_path, shared_data):
    env = {"XDG_DATA_HOME": str(shared_data), "EDGELLAMA_DB": str(tmp_path / "netns.db")}
    probe = subprocess.run(["unshare", "-n", sys.executable, "-c",
                            "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)"],
                           capture_output=True, text=True)
    assert probe.returncode != 0, "the namespace must really have no network"
    indexed = run_cli("index", "corpus", env=env, prefix=("unshare", "-n"))
    assert indexed.returncode == 0, indexed.stderr
    answer = run_cli("ask", "--json", "How much energy can the battery bank store?", env=env, prefix=("unshare", "-n"))
    assert answer.returncode == 0, answer.stderr
    data = json.loads(answer.stdout)
    assert data["answer"] == "210 kWh" and data["sources"][0]["path"].endswith("power.md")


@pytest.mark.netns
@pytest.mark.skipif(not _unshare_works(), reason="unshare -n is not permitted here (needs CAP_SYS_ADMIN)")
def test_selftest_airgap_passes_inside_a_network_namespace(shared_data):
    """Both proofs at once: no network exists, and the audit hook sees no attempt to use one."""
    result = run_cli("selftest", "--airgap", "--json", env={"XDG_DATA_HOME": str(shared_data)},
                     prefix=("unshare", "-n"), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["network_attempts"] == []
    assert {s["name"] for s in report["steps"]} >= {"index", "ask", "offline switches"}


@pytest.mark.netns
@pytest.mark.skipif(not _unshare_works(), reason="unshare -n is not permitted here (needs CAP_SYS_ADMIN)")
def test_the_daemon_serves_inside_a_network_namespace(tmp_path, shared_data):
    import os
    import tempfile

    from daemon_harness import eventually
    from daemon_process import DaemonProcess, copy_corpus

    docs = copy_corpus(tmp_path / "docs", ("station/power.md",))
    env = {**os.environ, "XDG_DATA_HOME": str(shared_data), "EDGELLAMA_DB": str(tmp_path / "ns.db"),
           "XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix="el-ns-")}
    daemon = DaemonProcess(env=env, log=tmp_path / "daemon.log", folders=(docs,), prefix=("unshare", "-n"))

    def answer() -> dict | None:
        # A path socket is reachable from outside the namespace: the client runs out here.
        result = run_cli("ask", "--json", "How much energy can the battery bank store?", env=env)
        reply = json.loads(result.stdout) if result.returncode == 0 else {}
        return reply if reply.get("sources") else None

    try:
        daemon.wait_ready()
        answered = eventually(answer, timeout=180)
        assert answered is not None, daemon.read_log()
        assert "210" in answered["answer"] and answered["sources"][0]["path"].endswith("power.md")
        assert daemon.socket.exists()
    finally:
        daemon.stop()
    assert daemon.process.returncode == 0  # SIGTERM: a clean shutdown
