"""Time to the first token of ``ask`` through the warm daemon (retrieval + prompt build + prompt
eval, measured by the client from sending the request to the first token event) against raw
``llama_cpp`` prompt eval of the very same prompt tokens from an empty cache (+ one sampling step).
Target: <= 1.1x. Each repetition asks a different question, so only the fixed prompt prefix
(instruction and examples) can come from the daemon's KV cache, never the passages."""

from __future__ import annotations

import time

from ._common import Daemon, Worker, corpus_copy, info, median, model_paths, report, temp_home, threads

QUESTIONS = [
    "What is the usable capacity of the LiFePO4 battery bank?",
    "How much does the treated water tank hold?",
    "Which HF frequency do we use for the daytime sked?",
    "What is the default max_tokens cap on answer length?",
    "At what angle is the solar panel rack tilted?",
    "What temperature are the bunk rooms heated to?",
    "Which journal mode does the EdgeLlama SQLite database run in?",
    "What free chlorine level are we aiming for at the galley tap?",
]
# quick mode indexes power.md, water-supply.md and 04-configuration.rst only
QUICK_QUESTIONS = [QUESTIONS[0], QUESTIONS[1]]


def ask_first_token(daemon: Daemon, question: str) -> tuple[float, dict]:
    started = time.perf_counter()
    first = None
    answer = None
    for event, data in daemon.client.events("/ask", {"question": question, "stream": True}):
        if event == "token" and first is None:
            first = time.perf_counter() - started
        elif event == "answer":
            answer = data
    return (first if first is not None else time.perf_counter() - started), answer


def run(*, quick: bool) -> None:
    questions = QUICK_QUESTIONS if quick else QUESTIONS
    _, q4_0 = model_paths()
    with temp_home() as home:
        docs = corpus_copy(home, quick=quick)
        with Daemon(home, folders=(docs,)) as daemon, Worker("llama", model_path=str(q4_0), threads=threads()) as raw:
            daemon.wait_idle()
            settings = daemon.client.request("GET", "/status")
            ask_first_token(daemon, "What is this about?")  # the first request warms the prefix cache
            ratios, api_s, raw_s, tokens, retrieve_s, prompt_s = [], [], [], [], [], []
            for question in questions:
                seconds, answer = ask_first_token(daemon, question)
                if answer["kind"] == "abstain":
                    info(f"skipped (abstained, no prompt eval): {question}")
                    continue
                base = raw.call("ask_prompt", question=question, context=answer["context"],
                                context_tokens=1000, max_tokens=48)
                if base["tokens"] != answer["timings"]["prompt_tokens"]:
                    info(f"note: rebuilt prompt has {base['tokens']} tokens, the daemon's {answer['timings']['prompt_tokens']}")
                retrieve_s.append(answer["timings"]["retrieve_seconds"])
                prompt_s.append(answer["timings"]["prompt_seconds"])
                api_s.append(seconds)
                raw_s.append(base["seconds"])
                tokens.append(base["tokens"])
                ratios.append(seconds / base["seconds"])
            del settings
        info(f"prompts of {min(tokens)}-{max(tokens)} tokens (median {median(tokens):.0f}); "
             f"daemon retrieval is part of its time")
        info(f"inside the daemon (medians): retrieval + evidence sentences {median(retrieve_s):.3f} s, "
             f"prompt eval {median(prompt_s):.3f} s (its prefix comes from the KV cache)")
        report("ask first token, warm daemon", value=median(api_s), unit="s",
               baseline_name="raw prompt eval of the same tokens", baseline=median(raw_s), ratio=median(ratios),
               target="<= 1.1x", met=median(ratios) <= 1.1, reps=len(ratios),
               note="ratio is the median of per-question ratios")
