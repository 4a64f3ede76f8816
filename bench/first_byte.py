"""What verifying before showing costs the first byte (issue 22): ``ask`` no longer streams the
model's words as they come, it shows the verified answer (or the passage, or "do not say") once
the answer is generated and checked. Measured in one process over the corpus questions of
bench/ttft.py: the old first byte (retrieval + prompt evaluation: when the first token used to
stream) against the new one (``timings.first_byte_seconds``), medians and their ratio.

    PYTHONPATH=. python -m bench.first_byte
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from .ttft import QUESTIONS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from edgellama.answer import ask
    from edgellama.config import resolve_settings
    from edgellama.indexer import index_paths
    from edgellama.resources import current_plan, load_planned_embedder, load_planned_generator
    from edgellama.store import Store

    settings = resolve_settings(flags={})
    plan = current_plan(settings)
    embedder = load_planned_embedder(settings=settings, plan=plan)
    generator = load_planned_generator(settings=settings, plan=plan)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "fb.db", create=True) as store:
        index_paths(store=store, embedder=embedder, paths=[ROOT / "corpus"], chunk_tokens=settings.chunk_tokens,
                    chunk_overlap=settings.chunk_overlap, max_file_bytes=50_000_000)
        ask(question="What is this about?", store=store, embedder=embedder, generator=generator)  # warm
        old, new, total, kinds = [], [], [], []
        for _ in range(2):
            for question in QUESTIONS:
                a = ask(question=question, store=store, embedder=embedder, generator=generator,
                        **settings.ask_options)
                if a.kind == "abstain":
                    continue
                old.append(a.timings.retrieve_seconds + a.timings.prompt_seconds)
                new.append(a.timings.first_byte_seconds)
                total.append(a.timings.total_seconds)
                kinds.append(a.kind)
    o, n, t = statistics.median(old), statistics.median(new), statistics.median(total)
    print(f"questions: {len(old)} ({kinds.count('answer')} answers, {kinds.count('quote')} passages)")
    print(f"FIGURE first byte: {n:.3f} s | baseline (first token streamed before): {o:.3f} s | ratio {n / o:.2f} x "
          f"(target < 1 s absolute: {'met' if n < 1 else 'NOT met'}); ask total p50 {t:.3f} s")


if __name__ == "__main__":
    main()
