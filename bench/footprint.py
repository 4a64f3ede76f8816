"""Issue 19, a small board: the daemon's RSS and a cold ``ask --no-daemon`` with the embedder on llama.cpp
(``embed_backend = auto``) against the same with sentence-transformers in process (``torch``, what ran
before), measured in this run; a cold ask against ``python -c pass``; the llama.cpp query vectors against
sentence-transformers'; and where a bulk worker process pays for its start (the crossover).
Targets: daemon <= 400 MB, cold ask <= 1.5 s, cosine >= 0.9999."""

from __future__ import annotations

import subprocess
import time

from ._common import PY, Daemon, corpus_copy, info, isolated_env, median, report, rss_mb, temp_home, time_to_first_byte
from .ttft import QUESTIONS, QUICK_QUESTIONS

TORCH = {"EDGELLAMA_EMBED_BACKEND": "torch"}


def run(*, quick: bool) -> None:
    questions = QUICK_QUESTIONS if quick else QUESTIONS[:5]
    _daemon_rss(quick=quick)
    _cold_ask(questions)
    _vectors(quick=quick)
    _single_file(quick=quick)
    _crossover(quick=quick)


def _daemon_rss(*, quick: bool) -> None:
    found = {}
    for label, extra in (("llama.cpp", {}), ("torch", TORCH)):
        with temp_home() as home:
            docs = corpus_copy(home, quick=quick)
            with Daemon(home, folders=(docs,), env=isolated_env(home, **extra)) as daemon:
                daemon.wait_idle()
                list(daemon.client.events("/ask", {"question": "How much does the treated water tank hold?",
                                                   "stream": True}))
                time.sleep(1)  # a bulk worker, if one ran, has exited
                found[label] = rss_mb(daemon.process.pid)
                idle = _cpu_seconds(daemon.process.pid)
                time.sleep(10)
                idle_pct = 100 * (_cpu_seconds(daemon.process.pid) - idle) / 10
                info(f"{label}: idle CPU over 10 s {idle_pct:.2f}% of one core")
                backend = daemon.client.request("GET", "/status").get("resources", {}).get("values", {}) \
                    .get("embed_backend", {}).get("value")
                info(f"{label}: daemon RSS {found[label][0]:.0f} MB (peak {found[label][1]:.0f}), backend {backend}")
    new, old = found["llama.cpp"][0], found["torch"][0]
    report("daemon RSS, both models, index of corpus/", value=new, unit="MB", baseline_name="embedder in process (torch)",
           baseline=old, ratio=new / old, target="<= 400 MB", met=new <= 400, reps=1)


def _cpu_seconds(pid: int) -> float:
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cold_ask(questions: list[str]) -> None:
    with temp_home() as home:
        docs = corpus_copy(home, quick=True)
        env = isolated_env(home)
        subprocess.run([PY, "-m", "edgellama", "index", str(docs)], env=env, check=True, capture_output=True)
        new, old, bare, same = [], [], [], 0
        for question in questions:
            _, t_new, out_new = time_to_first_byte([PY, "-m", "edgellama", "ask", "--no-daemon", question], env=env)
            _, t_old, out_old = time_to_first_byte([PY, "-m", "edgellama", "ask", "--no-daemon", question],
                                                   env={**env, **TORCH})
            started = time.perf_counter()
            subprocess.run([PY, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - started)
            new.append(t_new)
            old.append(t_old)
            same += out_new == out_old
        info(f"same answer and citations for {same} of {len(questions)} questions")
    report("cold ask --no-daemon, whole command", value=median(new), unit="s", baseline_name="torch embedder",
           baseline=median(old), ratio=median(new) / median(old), target="<= 1.5 s", met=median(new) <= 1.5,
           reps=len(new))
    report("cold ask --no-daemon vs bare python", value=median(new), unit="s", baseline_name="python -c pass",
           baseline=median(bare), ratio=median(new) / median(bare), target="n/a", met=None, reps=len(new))


def _single_file(*, quick: bool) -> None:
    """What a user waits for after editing one file: ``edgellama index DIR`` in a fresh process, its
    few new chunks embedded by llama.cpp in process (auto) against torch in process (what ran before)."""
    reps = 2 if quick else 3
    with temp_home() as home:
        docs = corpus_copy(home, quick=True)
        env = isolated_env(home)
        subprocess.run([PY, "-m", "edgellama", "index", str(docs)], env=env, check=True, capture_output=True)
        target = sorted(p for p in docs.rglob("*.md"))[0]
        times: dict[str, list[float]] = {"auto": [], "torch": []}
        for n in range(reps):
            for label, extra in (("auto", {}), ("torch", TORCH)):
                target.write_text(target.read_text() + f"\nEdit {label} {n}: the filter was replaced.\n")
                started = time.perf_counter()
                subprocess.run([PY, "-m", "edgellama", "index", str(docs)], env={**env, **extra}, check=True,
                               capture_output=True)
                times[label].append(time.perf_counter() - started)
    new, old = median(times["auto"]), median(times["torch"])
    report("index after editing 1 file, whole command", value=new, unit="s", baseline_name="torch embedder",
           baseline=old, ratio=new / old, target="not slower", met=new <= old, reps=reps)


def _vectors(*, quick: bool) -> None:
    from ._common import Worker

    with Worker("embed_equality", quick=quick) as w:
        result = w.call("compare")
    info(f"{result['texts']} texts (corpus chunks and questions)")
    report("query vectors, llama.cpp vs sentence-transformers float32 (min cosine)", value=result["min_cosine"],
           unit="", baseline_name="target", baseline=0.9999, ratio=result["min_cosine"] / 0.9999,
           target=">= 0.9999", met=result["min_cosine"] >= 0.9999, reps=1)


def _crossover(*, quick: bool) -> None:
    """Chunks embedded per call on llama.cpp in process, against the torch worker including its start:
    the size above which the worker wins is where ``BULK_TEXTS`` belongs."""
    from ._common import Worker

    with Worker("embed_crossover", quick=quick) as w:
        result = w.call("measure")
    for n, llama_s, worker_s in result["rows"]:
        info(f"{n:5d} chunks: llama.cpp {llama_s:.2f} s, torch worker (start included) {worker_s:.2f} s")
    n, llama_s, worker_s = result["rows"][-1]
    report(f"bulk embedding of {n} chunks, torch worker incl. start", value=worker_s, unit="s",
           baseline_name="llama.cpp in process", baseline=llama_s, ratio=worker_s / llama_s, target="n/a", met=None,
           reps=1, note=f"worker start {result['start_s']:.2f} s; crossover about {result['crossover']} chunks")
