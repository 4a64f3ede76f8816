"""Generation tokens/s through the daemon's OpenAI-compatible API (plain chat, streamed over the
UNIX socket) against raw ``llama_cpp.Llama`` on the same GGUF, same threads, same messages.
Target: >= 0.97x. Both sides time token 1 to token N of the same greedy reply, alternating."""

from __future__ import annotations

import time

from ._common import Daemon, Worker, info, median, model_paths, report, temp_home, threads

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def _rate(times: list[float], n: int) -> float:
    return (n - 1) / (times[n - 1] - times[0])


def run(*, quick: bool) -> None:
    max_tokens = 32 if quick else 96
    reps = 2 if quick else 5
    _, q4_0 = model_paths()
    with temp_home() as home, Daemon(home) as daemon, \
            Worker("llama", model_path=str(q4_0), threads=threads()) as raw:
        raw_rates, api_rates = [], []
        for _ in range(reps):
            r = raw.call("chat", messages=MESSAGES, max_tokens=max_tokens)
            n = len(r["times"])
            raw_rates.append(_rate(r["times"], n))
            started = time.perf_counter()
            times = []
            for _event, data in daemon.client.events(
                    "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": max_tokens, "stream": True,
                                             "rag": False}):
                if isinstance(data, dict) and data.get("choices") and data["choices"][0]["delta"].get("content"):
                    times.append(time.perf_counter() - started)
            # The same greedy reply: compare token 1..N of it (a trailing "rest" chunk is not a token).
            api_rates.append(_rate(times, min(n, len(times))))
        info(f"{n} tokens per reply; model {q4_0.name}, {threads()} threads")
        api, base = median(api_rates), median(raw_rates)
        report("generation tok/s (daemon API)", value=api, unit="tok/s", baseline_name="raw llama_cpp.Llama",
               baseline=base, ratio=api / base, target=">= 0.97x", met=api / base >= 0.97, reps=reps)
