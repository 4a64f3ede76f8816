"""``edgellama selftest --airgap``: passes on the real models, and really fails when anything tries
the network (the audit hook is tested by steps that try)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT


def run_script(script: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


WITH_STEPS = """
    import socket, sys, tempfile
    from edgellama import cli, selftest

    def connect_tcp(ctx):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routable
        return "connected?"

    def look_up(ctx):
        socket.getaddrinfo("huggingface.co", 443)
        return "resolved?"

    def talk_unix(ctx):
        path = tempfile.mktemp(dir=ctx.folder)
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen()
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close(), server.close()
        return "a UNIX socket is local"

    chosen = {name: fn for name, fn in [("tcp", connect_tcp), ("dns", look_up), ("unix", talk_unix)]}
    selftest.STEPS[:] = [(name, chosen[name], lambda ctx: True) for name in sys.argv[1].split(",")]
    sys.argv = ["edgellama", "selftest", "--airgap", "--json"]
    cli.main()
"""


def test_a_connection_and_a_name_lookup_are_recorded_blocked_and_fail_the_selftest():
    result = run_script(WITH_STEPS.replace("sys.argv[1]", "'unix,dns'"))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["network_attempts"] == ["socket.getaddrinfo 'huggingface.co'"]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["unix"]["ok"] and "blocked by edgellama selftest --airgap" in steps["dns"]["detail"]

    result = run_script(WITH_STEPS.replace("sys.argv[1]", "'tcp'"))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["network_attempts"] == ["socket.connect ('192.0.2.1', 80)"]
    assert "Traceback" not in result.stderr


def test_unix_sockets_alone_pass():
    result = run_script(WITH_STEPS.replace("sys.argv[1]", "'unix'"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["network_attempts"] == []


@pytest.mark.models
def test_selftest_airgap_passes_on_the_real_models(shared_data):
    from edgellama.selftest import STEPS, _has_summarize

    env = {**os.environ, "XDG_DATA_HOME": str(shared_data), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "edgellama", "selftest", "--airgap", "--json"], env=env,
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["network_attempts"] == []
    names = [s["name"] for s in report["steps"]]
    assert names == [name for name, _, _ in STEPS if name != "summarize" or _has_summarize()]
    assert {"index", "ask", "offline switches"} <= set(names)
    assert "210" in next(s["detail"] for s in report["steps"] if s["name"] == "ask")


@pytest.mark.models
def test_the_offline_check_fails_when_hugging_face_was_imported_online(shared_data):
    """The check is real: huggingface_hub imported before the switch is set reads it as off."""
    script = """
        import os, sys
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.pop(key, None)
        import huggingface_hub.constants  # reads HF_HUB_OFFLINE now, once
        from edgellama import cli, selftest
        selftest.STEPS[:] = [s for s in selftest.STEPS if s[0] in ("write a small folder", "index", "offline switches")]
        sys.argv = ["edgellama", "selftest", "--airgap", "--json"]
        cli.main()
    """
    result = run_script(script, env={"XDG_DATA_HOME": str(shared_data)})
    assert result.returncode == 1, result.stdout + result.stderr
    steps = {s["name"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["index"]["ok"]
    assert "imported before HF_HUB_OFFLINE was set" in steps["offline switches"]["detail"]
