"""Time to the first answer byte of ``edgellama ask`` (a fresh client process) against the warm
daemon, against the same command with ``--no-daemon`` (imports, model loads, retrieval, prompt
eval, all in-process, cold). Targets: >= 3x faster, and < 1 s with the default context budget."""

from __future__ import annotations

from ._common import PY, Daemon, corpus_copy, info, median, report, temp_home
from .ttft import QUESTIONS, QUICK_QUESTIONS


def run(*, quick: bool) -> None:
    questions = QUICK_QUESTIONS if quick else QUESTIONS[:5]
    with temp_home() as home:
        docs = corpus_copy(home, quick=quick)
        with Daemon(home, folders=(docs,)) as daemon:
            daemon.wait_idle()
            env = {k: v for k, v in daemon.env.items()}
            warm, cold = [], []
            for question in questions:
                w, _, out = _first_byte([PY, "-m", "edgellama", "ask", question], env)
                c, _, out_cold = _first_byte([PY, "-m", "edgellama", "ask", "--no-daemon", question], env)
                warm.append(w)
                cold.append(c)
            info(f"last answer (warm): {out.splitlines()[0][:100] if out else ''!r}")
        w, c = median(warm), median(cold)
        report("ask first byte, warm daemon", value=w, unit="s", baseline_name="cold ask --no-daemon", baseline=c,
               ratio=c / w, target=">= 3x faster", met=c / w >= 3, reps=len(warm),
               note="ratio = cold / warm (how many times faster)")
        report("ask first byte, warm daemon, absolute", value=w, unit="s", baseline_name="1 s target", baseline=1.0,
               ratio=w / 1.0, target="< 1 s (ratio < 1)", met=w < 1.0, reps=len(warm))


def _first_byte(args, env):
    from ._common import time_to_first_byte

    return time_to_first_byte(args, env=env)
