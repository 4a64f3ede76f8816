"""Where a warm ``ask`` spends its time (issue 22: p50 <= 0.5 s on 2 cores), stage by stage, and what a
decode of n rows costs the generator over a prompt in its KV cache (why prompt lookup and padding
the span pass to 64 rows do not pay on this CPU: bench/RESULTS.md "s25").

Every stage is timed (wall and CPU) around the very functions ``ask`` calls, in one process, on the
first N questions of each set, after one warm-up question:

    PYTHONPATH=. python -m bench.ask_stages [--n 20] [--db-dir DIR] [SET=QUESTIONS:DOCS ...]

Since s26 the index stores the vectors of a transcript's entries, so "embed" is the question's alone
there; bench.stored_units sets that against query-time embedding (the ``--stored-units`` option this
script had simulated it with the unit cache: bench/RESULTS.md "s25").

Default sets: the transcript (bench/data/apollo11_qa.jsonl over ../shared/data/summarize-dev) and
xquad-dev (../shared/data/xquad-dev; $EDGELLAMA_DEV_DATA). Indexes are kept in --db-dir (default a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from ._common import load_average

ROOT = Path(__file__).resolve().parent.parent
# The team's dev sets: ../shared/data beside the checkout (or beside the worktrees' folder), or $EDGELLAMA_DEV_DATA.
SHARED = Path(os.environ.get("EDGELLAMA_DEV_DATA") or next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.exists()),
    ROOT.parent / "shared" / "data"))
DEFAULT_SETS = (
    f"transcript={ROOT / 'bench/data/apollo11_qa.jsonl'}:{SHARED / 'summarize-dev'}",
    f"xquad={SHARED / 'xquad-dev/questions.jsonl'}:{SHARED / 'xquad-dev/docs'}",
)
STAGES = ("search", "best_sentences", "question_coverage", "build_prompt", "decide")


class Timers:
    """Wall and CPU seconds per stage, summed over the questions."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - wall, time.process_time() - cpu)

        setattr(owner, name, timed)

    def add(self, label: str, wall: float, cpu: float = 0.0) -> None:
        self.wall[label] = self.wall.get(label, 0.0) + wall
        self.cpu[label] = self.cpu.get(label, 0.0) + cpu


def decode_rows(generator, prompt: str, rows=(1, 2, 4, 8, 16, 40, 63, 64)) -> dict[int, float]:
    """Median seconds of one decode of ``n`` rows (one sequence) after ``prompt`` in the KV cache."""
    import llama_cpp

    llama = generator.llama
    tokens = llama.tokenize(prompt.encode(), add_bos=True, special=True)
    llama.n_tokens = 0
    llama.eval(tokens)
    past, batch, out = llama.n_tokens, llama._batch.batch, {}
    for n in rows:
        times = []
        for _ in range(3):
            batch.n_tokens = n
            for j in range(n):
                batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = tokens[j % len(tokens)], past + j, 1, True
                batch.seq_id[j][0] = 0
            started = time.perf_counter()
            llama._ctx.decode(llama._batch)
            times.append(time.perf_counter() - started)
            llama_cpp.llama_memory_seq_rm(llama._ctx.memory, -1, past, -1)
        out[n] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ask_stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=list(DEFAULT_SETS), metavar="NAME=QUESTIONS:DOCS")
    parser.add_argument("--n", type=int, default=20, help="questions of each set")
    parser.add_argument("--db-dir", type=Path, default=None)
    args = parser.parse_args()

    from edgellama import answer
    from edgellama.config import resolve_settings
    from edgellama.indexer import IndexOptions, index_paths
    from edgellama.resources import Models
    from edgellama.vectors import load_vectors

    settings = resolve_settings(flags={})
    models = Models(settings)
    embedder, generator = models.embedder(), models.generator()
    timers = Timers()
    for name in STAGES:
        timers.wrap(answer, name, name)
    timers.wrap(embedder, "embed", "embed (question and units)")
    timers.wrap(generator, "answer_logprobs", "answer_logprobs (span pass)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in args.sets:
            label, _, paths = spec.partition("=")
            questions, _, docs = paths.partition(":")
            with models.open_store(create=True, db=folder / f"{label}.db") as store:
                if not len(load_vectors(store, model=embedder.name)):  # a kept index is used as it is
                    index_paths(store=store, embedder=embedder, paths=[Path(docs)],
                                **IndexOptions.from_settings(settings).kwargs())
                vectors = load_vectors(store, model=embedder.name)
                items = [json.loads(line) for line in Path(questions).read_text().splitlines() if line.strip()][:args.n]
                answer.ask(question="What is this about?", store=store, embedder=embedder, generator=generator,
                           vectors=vectors, **settings.ask_options)
                timers.wall.clear()
                timers.cpu.clear()
                totals, cpus, tokens = [], [], [0, 0]
                for item in items:
                    wall, cpu = time.perf_counter(), time.process_time()
                    a = answer.ask(question=item["question"], store=store, embedder=embedder, generator=generator,
                                   vectors=vectors, **settings.ask_options)
                    totals.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                    if a.kind != "abstain":
                        stats = generator.last_stats
                        timers.add("prompt evaluation", stats.prompt_seconds)
                        timers.add("answer tokens", stats.completion_seconds)
                        tokens[0] += stats.prompt_tokens
                        tokens[1] += stats.completion_tokens
                load = load_average()
                print(f"== {label}: {len(items)} questions, p50 {statistics.median(totals):.3f} s, mean "
                      f"{statistics.mean(totals):.3f} s (CPU {statistics.mean(cpus):.3f} s); prompt "
                      f"{tokens[0] / len(items):.0f} tokens, answer {tokens[1] / len(items):.1f} tokens a question; load {load}")
                for stage, seconds in sorted(timers.wall.items(), key=lambda kv: -kv[1]):
                    print(f"   {stage:30s} {seconds / len(items):.3f} s a question "
                          f"({seconds / sum(totals):5.1%}), CPU {timers.cpu.get(stage, 0.0) / len(items):.3f} s")
    # The generator's cost of one decode by its number of rows, over a transcript-sized prompt.
    prompt = "Context: " + " ".join(["The crew reported the 1202 program alarm during the powered descent."] * 18)
    prompt += "\nQuestion: Which alarm did the crew report?\nAnswer:"
    costs = decode_rows(generator, prompt)
    load = load_average()
    print(f"== one decode after a {generator.count_tokens(prompt)}-token prompt, by rows (load {load}):")
    print("   " + ", ".join(f"{n}: {s * 1000:.0f} ms" for n, s in costs.items()))
    generator.close()


if __name__ == "__main__":
    main()
