"""What every benchmark shares: medians, the figure line, fresh worker processes, a real daemon
(tests/daemon_process.py's, with the bench's isolated environment).

A figure is printed as one line, ``FIGURE name: value unit | baseline: value unit | ratio R x
(target ...: met|NOT met)``, and appended as JSON to $EDGELLAMA_BENCH_JSON when that is set.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
# The real daemon and the quick corpus are tests/daemon_process.py's, shared with the tests.
sys.path.insert(0, str(ROOT / "tests"))
from daemon_process import CORPUS, QUICK_FILES, DaemonProcess, copy_corpus  # noqa: E402

PY = sys.executable


def median(values) -> float:
    return float(statistics.median(values))


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    ratio: float
    target: str
    met: bool | None  # None: no target for this line (a part of another figure)
    reps: int
    note: str = ""


def report(name: str, *, value: float, unit: str, baseline_name: str, baseline: float, ratio: float,
           target: str, met: bool | None, reps: int, note: str = "") -> Figure:
    fig = Figure(name, value, unit, baseline_name, baseline, ratio, target, met, reps, note)
    verdict = "" if met is None else (" met" if met else " NOT met")
    line = (f"FIGURE {name}: {_num(value)} {unit} | {baseline_name}: {_num(baseline)} {unit} | "
            f"ratio {ratio:.3f}x (target {target}:{verdict or ' n/a'}) [median of {reps}]")
    if note:
        line += f" - {note}"
    print(line, flush=True)
    out = os.environ.get("EDGELLAMA_BENCH_JSON")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(asdict(fig)) + "\n")
    return fig


def info(message: str) -> None:
    print(f"  {message}", flush=True)


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as a benchmark line prints them ("0.52 1.10 1.25")."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.3f}"
    return f"{x:.4f}"


# -- environment ------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    """XDG_DATA_HOME shared by every benchmark process, so the Q4_0 model is made once."""
    path = Path(os.environ.get("EDGELLAMA_BENCH_DATA") or Path(tempfile.gettempdir()) / f"edgellama-bench-{os.getuid()}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's child: our checkout first, its own config, socket and db."""
    runtime = Path(tempfile.mkdtemp(prefix="elb-"))  # short: a socket path must fit in 107 bytes
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGELLAMA_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update({
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "XDG_DATA_HOME": str(shared_data_dir()),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "EDGELLAMA_DB": str(home / "bench.db"),
        **extra,
    })
    return env


def model_paths() -> tuple[Path, Path]:
    """(the shipped Q4_1 GGUF, its requantized Q4_0 copy), made now if missing."""
    sys.path.insert(0, str(ROOT))
    from edgellama.config import physical_cores
    from edgellama.generate import bundled_gguf, resolve_model_path

    shipped = bundled_gguf()
    q4_0 = resolve_model_path(model=None, models_dir=shared_data_dir() / "edgellama" / "models",
                              requantize_bundled=True, threads=physical_cores())
    return shipped, q4_0


def threads() -> int:
    from edgellama.config import physical_cores

    return physical_cores()


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


# -- worker processes ---------------------------------------------------------------------------


class Worker:
    """A fresh Python process that loads one thing (a model, an index) and answers JSON requests
    on its stdin/stdout, so several repetitions share the load but nothing else (see _worker.py)."""

    def __init__(self, kind: str, *, env: dict | None = None, **init: Any):
        self.process = subprocess.Popen(
            [PY, "-m", "bench._worker", kind, json.dumps(init)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or isolated_env(Path(tempfile.mkdtemp(prefix="elbw-"))), cwd=ROOT,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker died:\n{self.process.stderr.read()[-3000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"bench worker failed: {reply['error']}")
        return reply

    def call(self, op: str, **args: Any) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- a real daemon ------------------------------------------------------------------------------


class Daemon(DaemonProcess):
    """The daemon as the benchmarks run it: isolated XDG dirs and database under ``home``, ready on
    return (``load_seconds``), with the real client."""

    def __init__(self, home: Path, *, folders: tuple[Path, ...] = (), env: dict | None = None):
        super().__init__(env=env or isolated_env(home), log=home / "daemon.log", folders=folders)
        try:
            self.load_seconds = self.wait_ready(timeout=600)
        except BaseException:
            self.stop()
            raise
        from edgellama.client import DaemonClient

        self.client = DaemonClient(self.socket, timeout=600)

    def wait_idle(self, timeout: float = 600) -> None:
        """Until the watcher has nothing pending and is not indexing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            watcher = self.client.request("GET", "/status")["daemon"]["watcher"] or {}
            if not watcher.get("pending") and not watcher.get("indexing"):
                return
            time.sleep(0.2)
        raise RuntimeError("daemon still indexing")


@contextmanager
def temp_home(prefix: str = "edgellama-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def corpus_copy(home: Path, *, quick: bool) -> Path:
    """corpus/ (quick: QUICK_FILES of it) copied into ``home``/docs."""
    return copy_corpus(home / "docs", QUICK_FILES if quick else None)


def time_to_first_byte(args: list[str], *, env: dict) -> tuple[float, float, str]:
    """(seconds to the first byte on stdout, seconds to exit, stdout) of a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = os.read(process.stdout.fileno(), 1)
    first_at = time.perf_counter()
    rest, err = process.communicate(timeout=600)
    ended = time.perf_counter()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} failed ({process.returncode}): {err.decode()[-2000:]}")
    return first_at - started, ended - started, (first + rest).decode()

