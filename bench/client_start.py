"""Client start: ``edgellama status`` (a fresh ``python -m edgellama`` process) against a running
daemon, against ``python -c pass``. Target: less than 100 ms above it. Alternating, medians."""

from __future__ import annotations

import subprocess
import time

from ._common import PY, ROOT, Daemon, info, median, report, temp_home


def _seconds(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def run(*, quick: bool) -> None:
    reps = 3 if quick else 15
    with temp_home() as home, Daemon(home) as daemon:
        env = daemon.env
        status, empty = [], []
        out = subprocess.run([PY, "-m", "edgellama", "status"], env=env, cwd=ROOT, capture_output=True, text=True)
        if "daemon       pid" not in out.stdout:
            raise RuntimeError(f"status did not reach the daemon:\n{out.stdout}{out.stderr}")
        for _ in range(reps):
            status.append(_seconds([PY, "-m", "edgellama", "status"], env))
            empty.append(_seconds([PY, "-c", "pass"], env))
        s, e = median(status), median(empty)
        info(f"status {s * 1000:.0f} ms, python -c pass {e * 1000:.0f} ms: {1000 * (s - e):.0f} ms above")
        report("client start (status vs running daemon)", value=s, unit="s", baseline_name="python -c pass",
               baseline=e, ratio=s / e, target="< 100 ms above", met=s - e < 0.100, reps=reps,
               note=f"{1000 * (s - e):.0f} ms above")
