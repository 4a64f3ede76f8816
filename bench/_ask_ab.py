"""A/B of a warm ``ask`` in one process: every question asked once in each mode, the order
alternating by question (bench.span_pass, bench.unverified_cut).

Before each ask the generator's KV cache is left holding the few-shot prefix and a dummy question,
as the question before leaves it in ``eval qa``, so the second mode does not find the first's
whole prompt cached. A mode is a function that sets it (a constant of ``edgellama.answer``, say);
``restore`` puts back what was there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ._common import load_average
from .ask_stages import SHARED

XQUAD_DEV = f"xquad={SHARED / 'xquad-dev/questions.jsonl'}:{SHARED / 'xquad-dev/docs'}"


@dataclass(frozen=True)
class Asked:
    seconds: float  # the whole ask
    span_seconds: float  # of which the span pass (the generator's answer_logprobs)
    completion_tokens: int
    kind: str
    text: str


def ask_ab(*, models, settings, db: Path, questions: list, modes: dict[str, Callable[[], None]],
           restore: Callable[[], None]) -> dict[str, list[Asked]]:
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
    asked: dict[str, list[Asked]] = {m: [] for m in modes}
    try:
        with models.open_store(db=db) as store:
            vectors = load_vectors(store, model=embedder.name)
            answer.ask(question="What is this about?", store=store, embedder=embedder, generator=generator,
                       vectors=vectors, **settings.ask_options)
            names = list(modes)
            for i, item in enumerate(questions):
                for mode in (names if i % 2 == 0 else names[::-1]):
                    modes[mode]()
                    list(generator.stream(f"{COMPLETION_PREFIX} -\nQuestion: -\nAnswer:", max_tokens=1, stop=STOP))
                    span_seconds[0] = 0.0
                    started = time.perf_counter()
                    a = answer.ask(question=item.question, store=store, embedder=embedder, generator=generator,
                                   vectors=vectors, **settings.ask_options)
                    asked[mode].append(Asked(time.perf_counter() - started, span_seconds[0],
                                             a.timings.completion_tokens, a.kind, a.text))
    finally:
        restore()
        generator.answer_logprobs = scorer
        generator.close()
        embedder.close()
    for mode in names:
        runs = asked[mode]
        print(f"   {mode}: p50 {statistics.median(r.seconds for r in runs):.3f} s, "
              f"mean {statistics.mean(r.seconds for r in runs):.3f} s, "
              f"span pass mean {statistics.mean(r.span_seconds for r in runs):.3f} s, "
              f"answer tokens mean {statistics.mean(r.completion_tokens for r in runs):.1f} "
              f"over {len(runs)} questions; load {load_average()}")
    return asked


def differ(a: list[Asked], b: list[Asked]) -> int:
    """How many questions got another outcome or text."""
    return sum((x.kind, x.text) != (y.kind, y.text) for x, y in zip(a, b))


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    out.add_argument("set", nargs="?", default=XQUAD_DEV, metavar="NAME=QUESTIONS:DOCS")
    out.add_argument("--n", type=int, default=100, help="the set's first N questions")
    out.add_argument("--db-dir", type=Path, help="keep the index here (default a temporary folder)")
    return out


def run(args: argparse.Namespace, *, modes: dict[str, Callable[[], None]], restore: Callable[[], None],
        describe: str) -> dict[str, list[Asked]]:
    """Index the set named by ``args.set`` and A/B its first ``args.n`` questions."""
    from edgellama.config import resolve_settings
    from edgellama.evaluate import load_qa
    from edgellama.indexer import IndexOptions, index_paths
    from edgellama.resources import Models

    name, spec = args.set.split("=", 1)
    questions_path, docs = (Path(p) for p in spec.split(":", 1))
    settings = resolve_settings()
    models = Models(settings)
    with tempfile.TemporaryDirectory(prefix="edgellama-ask-ab-") as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / f"{name}.db"
        with models.open_store(create=True, db=db) as store:
            index_paths(store=store, embedder=models.embedder(), paths=[docs],
                        **IndexOptions.from_settings(settings).kwargs())
        print(f"== {name}: {describe}; load {load_average()}", flush=True)
        return ask_ab(models=models, settings=settings, db=db, questions=load_qa(questions_path)[:args.n],
                      modes=modes, restore=restore)
