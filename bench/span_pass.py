"""How many spans the model's log-probability is asked for (``answer.SPAN_RESCORE``, issue 22, stop 28),
A/B in one process: a warm question with the current count against the same question with another.

    PYTHONPATH=. python -m bench.span_pass [--n 100] [--baseline 8] [--baseline-confidence 0.18] [SET=QUESTIONS:DOCS]

Every question is asked once in each mode, the order alternating by question. Before each ask the
generator's KV cache is left holding the few-shot prefix and a dummy question, as the question
before leaves it in ``eval qa``, so the second mode does not find the first's whole prompt cached.
The baseline runs with ``--baseline`` spans and ``MIN_SPAN_CONFIDENCE`` ``--baseline-confidence``
(the pair before stop 28). Prints p50 and mean of a whole ``ask``, the span pass's own seconds
(``answer_logprobs``), their ratios, and how many answers differ.

Default set: xquad-dev (../shared/data/xquad-dev; $EDGELLAMA_DEV_DATA).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ._common import load_average, report
from .ask_stages import SHARED

DEFAULT_SET = f"xquad={SHARED / 'xquad-dev/questions.jsonl'}:{SHARED / 'xquad-dev/docs'}"


def ask_ab(*, models, settings, db: Path, questions: list, modes: dict[str, tuple[int, float]]) -> None:
    from edgellama import answer
    from edgellama.prompt import COMPLETION_PREFIX, STOP
    from edgellama.vectors import load_vectors

    embedder, generator = models.embedder(), models.generator()
    span_seconds = [0.0]
    scorer = generator.answer_logprobs

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return scorer(*args, **kwargs)
        finally:
            span_seconds[0] += time.perf_counter() - started

    generator.answer_logprobs = timed
    rescore, confidence = answer.score_spans.__kwdefaults__["rescore"], answer.decide.__kwdefaults__["min_span_confidence"]
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    span: dict[str, list[float]] = {m: [] for m in modes}
    said: dict[str, list[tuple[str, str]]] = {m: [] for m in modes}
    try:
        with models.open_store(db=db) as store:
            vectors = load_vectors(store, model=embedder.name)
            answer.ask(question="What is this about?", store=store, embedder=embedder, generator=generator,
                       vectors=vectors, **settings.ask_options)
            names = list(modes)
            for i, item in enumerate(questions):
                for mode in (names if i % 2 == 0 else names[::-1]):
                    answer.score_spans.__kwdefaults__["rescore"] = modes[mode][0]
                    answer.decide.__kwdefaults__["min_span_confidence"] = modes[mode][1]
                    list(generator.stream(f"{COMPLETION_PREFIX} -\nQuestion: -\nAnswer:", max_tokens=1, stop=STOP))
                    span_seconds[0] = 0.0
                    started = time.perf_counter()
                    a = answer.ask(question=item.question, store=store, embedder=embedder, generator=generator,
                                   vectors=vectors, **settings.ask_options)
                    seconds[mode].append(time.perf_counter() - started)
                    span[mode].append(span_seconds[0])
                    said[mode].append((a.kind, a.text))
    finally:
        answer.score_spans.__kwdefaults__["rescore"] = rescore
        answer.decide.__kwdefaults__["min_span_confidence"] = confidence
        generator.answer_logprobs = scorer
        generator.close()
        embedder.close()
    ours, base = names
    for mode in names:
        print(f"   {mode}: p50 {statistics.median(seconds[mode]):.3f} s, mean {statistics.mean(seconds[mode]):.3f} s, "
              f"span pass mean {statistics.mean(span[mode]):.3f} s over {len(questions)} questions; load {load_average()}")
    differ = sum(x != y for x, y in zip(said[ours], said[base]))
    p50 = {m: statistics.median(v) for m, v in seconds.items()}
    report(f"warm ask p50, {modes[ours][0]} spans rescored", value=p50[ours], unit="s",
           baseline_name=f"{modes[base][0]} spans", baseline=p50[base], ratio=p50[ours] / p50[base],
           target="< 1.0x", met=p50[ours] < p50[base], reps=len(questions),
           note=f"{differ} of {len(questions)} answers differ (quality: docs/retrieval.md, 'Stop 28')")
    mean_span = {m: statistics.mean(v) for m, v in span.items()}
    report(f"span pass mean, {modes[ours][0]} spans", value=mean_span[ours], unit="s",
           baseline_name=f"{modes[base][0]} spans", baseline=mean_span[base],
           ratio=mean_span[ours] / max(mean_span[base], 1e-9), target="(part of the above)", met=None,
           reps=len(questions))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.span_pass", description=__doc__.split("\n\n")[0])
    parser.add_argument("set", nargs="?", default=DEFAULT_SET, metavar="NAME=QUESTIONS:DOCS")
    parser.add_argument("--n", type=int, default=100, help="the set's first N questions")
    parser.add_argument("--baseline", type=int, default=8)
    parser.add_argument("--baseline-confidence", type=float, default=0.18)
    parser.add_argument("--db-dir", type=Path, help="keep the index here (default a temporary folder)")
    args = parser.parse_args()

    from edgellama import answer
    from edgellama.config import resolve_settings
    from edgellama.evaluate import load_qa
    from edgellama.indexer import IndexOptions, index_paths
    from edgellama.resources import Models

    name, spec = args.set.split("=", 1)
    questions_path, docs = (Path(p) for p in spec.split(":", 1))
    settings = resolve_settings()
    models = Models(settings)
    modes = {"current": (answer.SPAN_RESCORE, answer.MIN_SPAN_CONFIDENCE),
             "baseline": (args.baseline, args.baseline_confidence)}
    with tempfile.TemporaryDirectory(prefix="edgellama-span-pass-") as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / f"{name}.db"
        with models.open_store(create=True, db=db) as store:
            index_paths(store=store, embedder=models.embedder(), paths=[docs],
                        **IndexOptions.from_settings(settings).kwargs())
        print(f"== {name}: {modes}; load {load_average()}", flush=True)
        ask_ab(models=models, settings=settings, db=db, questions=load_qa(questions_path)[:args.n], modes=modes)


if __name__ == "__main__":
    main()
