"""Shared fixtures: an isolated home (config, data, database) per test, and the real models once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test reads or writes the user's real config or data."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # Never the user's running daemon; and a short path, as a socket's path must fit in 107 bytes.
    runtime = tempfile.mkdtemp(prefix="el-run-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    for key in list(os.environ):
        if key.startswith("EDGELLAMA_") or key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(key)
    yield tmp_path
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A data dir shared by the slow tests, so the Q4_0 model is made once per session."""
    return tmp_path_factory.mktemp("shared-data")


@pytest.fixture(scope="session")
def embedder():
    from edgellama.embed import load_embedder

    return load_embedder(None, threads=2)


@pytest.fixture(scope="session")
def generator(shared_data):
    from edgellama.config import physical_cores
    from edgellama.generate import load_generator

    gen = load_generator(model=None, models_dir=shared_data / "edgellama" / "models", requantize_bundled=True,
                         threads=physical_cores(), n_ctx=4096)
    yield gen
    gen.close()


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: int = 300,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run the real ``edgellama`` command in a fresh process, as a user would."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "edgellama", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input, timeout=timeout,
        cwd=ROOT,
    )
