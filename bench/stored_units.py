"""Stored evidence-unit vectors (issue 22, s26), A/B in one process: a warm transcript question with
its entries' vectors read from the index against the same question embedding them at query time,
and the index run that stores them against one that does not.

    PYTHONPATH=. python -m bench.stored_units [--rounds 2] [--index-rounds 2] [--n N] [SET=QUESTIONS:DOCS ...]

Index: the documents indexed into a fresh database with the entries of log and transcript chunks
embedded and stored, and with that switched off (``indexer.is_record_chunk`` answering no: the run
before s26), alternately, ``--index-rounds`` times each; the models of ``Models`` (llama.cpp in
process, the torch bulk worker for large calls), as ``edgellama index`` runs them. A third run
sends the chunks alone to the bulk worker too: a small folder's chunks stay on llama.cpp (fewer than
resources.BULK_TEXTS), its chunks and entries together do not.

Ask: every question of every set (sets sharing a folder share its index), ``--rounds`` passes of
each mode, alternating; each pass starts with ``retrieve``'s unit cache empty, as ``eval qa`` does;
"query-time" reads no stored unit (``store.unit_vectors`` answers nothing), "stored" reads them.
The answers of the two modes are compared question by question.

Default sets: both Apollo 11 transcript sets (bench/data/apollo11_qa*.jsonl) over
../shared/data/summarize-dev ($EDGELLAMA_DEV_DATA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from .ask_stages import ROOT, SHARED
from ._common import load_average, report

DEFAULT_SETS = tuple(f"{name}={ROOT / 'bench/data' / name}.jsonl:{SHARED / 'summarize-dev'}"
                     for name in ("apollo11_qa", "apollo11_qa_more"))


def index_ab(*, models, settings, docs: Path, folder: Path, rounds: int) -> Path:
    """Index ``docs`` ``rounds`` times with and without stored unit vectors, alternately; prints the
    times and returns a database indexed with them."""
    from edgellama import indexer
    from edgellama.indexer import IndexOptions, index_paths

    embedder = models.embedder()
    bulk_texts = getattr(embedder, "bulk_texts", None)
    times: dict[str, list[float]] = {"without": [], "without, bulk": [], "with": []}
    kept = None
    for r in range(rounds):
        for mode in times:
            db = folder / f"{docs.name}-{mode.replace(', ', '-')}-{r}.db"
            original = indexer.is_record_chunk
            if mode.startswith("without"):
                indexer.is_record_chunk = lambda text: False  # the index run before s26: chunks only
            if mode == "without, bulk" and bulk_texts is not None:
                # A folder's chunks alone may be too few for the torch worker (resources.BULK_TEXTS) while
                # chunks and entries together are not: the embedding cost alone, on the same worker.
                embedder.bulk_texts = 1
            try:
                with models.open_store(create=True, db=db) as store:
                    stats = index_paths(store=store, embedder=embedder, paths=[docs],
                                        **IndexOptions.from_settings(settings).kwargs())
                    rows = store.stats().unit_vectors
            finally:
                indexer.is_record_chunk = original
                if bulk_texts is not None:
                    embedder.bulk_texts = bulk_texts
            times[mode].append(stats.seconds)
            print(f"   index {mode:13s} unit vectors: {stats.seconds:6.1f} s ({stats.chunks_embedded} chunks, "
                  f"{stats.units_embedded} units embedded; {rows} chunks with unit vectors); load {load_average()}", flush=True)
            if mode == "with":
                kept = db
    embedder.close()
    ours = statistics.median(times["with"])
    for mode, baseline_name in (("without", "without (chunks only)"),
                                ("without, bulk", "without, chunks on the bulk worker")):
        base = statistics.median(times[mode])
        report(f"index time with stored unit vectors, {docs.name}", value=ours, unit="s", baseline_name=baseline_name,
               baseline=base, ratio=ours / base, target="(cost)", met=None, reps=rounds)
    return kept


def ask_ab(*, models, settings, db: Path, questions: list[dict], rounds: int) -> None:
    """Ask every question ``rounds`` times in each mode, alternating; prints p50 and mean of each, the
    ratio, and how many answers differ between the modes."""
    from edgellama import answer, retrieve
    from edgellama.vectors import load_vectors

    embedder, generator = models.embedder(), models.generator()
    with models.open_store(db=db) as store:
        vectors = load_vectors(store, model=embedder.name)
        stored_reader = store.unit_vectors
        answer.ask(question="What is this about?", store=store, embedder=embedder, generator=generator,
                   vectors=vectors, **settings.ask_options)
        seconds: dict[str, list[list[float]]] = {"query-time": [], "stored": []}
        answers: dict[str, list[tuple[str, str]]] = {}
        for r in range(rounds):
            for mode in ("query-time", "stored"):
                store.unit_vectors = stored_reader if mode == "stored" else (lambda chunk_ids, *, model: {})
                retrieve._UNIT_CACHES.pop(embedder, None)  # each pass starts as eval qa does
                times, said = [], []
                for item in questions:
                    started = time.perf_counter()
                    a = answer.ask(question=item["question"], store=store, embedder=embedder, generator=generator,
                                   vectors=vectors, **settings.ask_options)
                    times.append(time.perf_counter() - started)
                    said.append((a.kind, a.text))
                seconds[mode].append(times)
                answers.setdefault(mode, said)
                print(f"   ask {mode:10s} pass {r + 1}: p50 {statistics.median(times):.3f} s, mean "
                      f"{statistics.mean(times):.3f} s over {len(times)} questions; load {load_average()}", flush=True)
        store.unit_vectors = stored_reader
    generator.close()
    embedder.close()
    p50 = {m: statistics.median(statistics.median(t) for t in runs) for m, runs in seconds.items()}
    mean = {m: statistics.median(statistics.mean(t) for t in runs) for m, runs in seconds.items()}
    # Per question, the median over passes: the fairest pairing of the two modes on a shared box.
    paired = [statistics.median(s[i] for s in seconds["stored"]) / statistics.median(q[i] for q in seconds["query-time"])
              for i in range(len(questions))]
    differ = [i for i, (x, y) in enumerate(zip(answers["query-time"], answers["stored"])) if x != y]
    report("warm transcript ask p50, unit vectors stored", value=p50["stored"], unit="s",
           baseline_name="embedded at query time", baseline=p50["query-time"], ratio=p50["stored"] / p50["query-time"],
           target="< 1.0x", met=p50["stored"] < p50["query-time"], reps=rounds)
    report("warm transcript ask mean, unit vectors stored", value=mean["stored"], unit="s",
           baseline_name="embedded at query time", baseline=mean["query-time"],
           ratio=mean["stored"] / mean["query-time"], target="< 1.0x", met=None, reps=rounds,
           note=f"per-question ratio median {statistics.median(paired):.3f}; {len(differ)} of {len(questions)} "
                "answers differ")
    for i in differ:
        print(f"   differs: {questions[i]['question']!r}: {answers['query-time'][i]} -> {answers['stored'][i]}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stored_units", description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=list(DEFAULT_SETS), metavar="NAME=QUESTIONS:DOCS")
    parser.add_argument("--rounds", type=int, default=2, help="passes of each ask mode")
    parser.add_argument("--index-rounds", type=int, default=2, help="index runs of each mode")
    parser.add_argument("--n", type=int, default=0, help="only the first N questions of each set (0: all)")
    args = parser.parse_args()

    from edgellama.config import resolve_settings
    from edgellama.resources import Models

    settings = resolve_settings(flags={})
    models = Models(settings)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: load {load_average()}", flush=True)
    by_docs: dict[str, list[dict]] = {}
    for spec in args.sets:
        _, _, paths = spec.partition("=")
        questions, _, docs = paths.partition(":")
        items = [json.loads(line) for line in Path(questions).read_text().splitlines() if line.strip()]
        by_docs.setdefault(docs, []).extend(items[:args.n] if args.n else items)
    with tempfile.TemporaryDirectory() as tmp:
        for docs, questions in by_docs.items():
            print(f"== {docs}: {len(questions)} questions", flush=True)
            db = index_ab(models=models, settings=settings, docs=Path(docs), folder=Path(tmp), rounds=args.index_rounds)
            ask_ab(models=models, settings=settings, db=db, questions=questions, rounds=args.rounds)


if __name__ == "__main__":
    main()
