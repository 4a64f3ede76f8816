"""CI smoke of bench/: every benchmark runs with --quick and prints its figures with a ratio.
No timing is asserted here: the figures are for bench/RESULTS.md, not for pass or fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

from bench import BENCHMARKS

FIGURE = re.compile(r"^FIGURE (.+?): \S+ .+\| .+: \S+ .+\| ratio (\d+\.\d+)x \(target .+\)", re.M)


@pytest.mark.models
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_and_prints_a_ratio(name, shared_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGELLAMA_BENCH_DATA": str(shared_data),
           "EDGELLAMA_BENCH_JSON": str(tmp_path / "figures.jsonl")}
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", name], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    figures = FIGURE.findall(result.stdout)
    assert figures, result.stdout
    assert all(float(ratio) > 0 for _, ratio in figures), result.stdout
    assert len((tmp_path / "figures.jsonl").read_text().splitlines()) == len(figures)


def test_an_unknown_benchmark_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "bench", "nonsense"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and "unknown benchmark" in result.stderr
