"""Time to summarize the generated 60k-token handbook (tests/longdoc.py) by each method, the key
facts each keeps, and the speedup of a re-summary after a one-section edit against the full
model summary measured in the same run. Real models, a fresh database in a temporary folder.

    PYTHONPATH=. python bench/summarize.py [--sentences 240] [--length long]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from longdoc import make_document  # noqa: E402

from edgellama.config import resolve_settings  # noqa: E402
from edgellama.indexer import IndexOptions, index_paths  # noqa: E402
from edgellama.resources import Models  # noqa: E402
from edgellama.summarize import final_summary, summarize_document  # noqa: E402


def kept(summary, facts) -> list[str]:
    points = [*summary.overview] + [p for d in summary.documents for s in d.sections for p in s.points]
    text = " ".join(" ".join(p.text for p in points).split())
    return [f.keyword for f in facts if f.keyword in text]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=240, help="sentences per section (240: about 60k tokens)")
    parser.add_argument("--length", default="long", choices=["short", "medium", "long"])
    parser.add_argument("--edit", type=int, default=3, help="the section (0-based) edited before the re-summary")
    args = parser.parse_args()

    settings = resolve_settings()
    models = Models(settings)  # the resource plan the daemon and the CLI load with
    generator = models.generator()
    generator.llama  # noqa: B018 - load outside the timings
    embedder = models.embedder()
    options = {**IndexOptions.from_settings(settings).kwargs(), "max_file_bytes": 50_000_000}
    document = make_document(sentences_per_section=args.sentences)
    tokens = generator.count_tokens(document.text)
    print(f"load average {open('/proc/loadavg').read().split()[0]} at the start")
    print(f"document: {len(document.sections)} sections, {tokens:,} tokens ({generator.name}), "
          f"{len(document.facts)} key facts; {models.plan.threads.value} threads", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        path = folder / "handbook.md"
        path.write_text(document.text)
        with models.open_store(create=True, db=Path(tmp) / "bench.db") as store:
            started = time.perf_counter()
            index_paths(store=store, embedder=embedder, paths=[path], **options)
            print(f"indexed in {time.perf_counter() - started:.1f} s ({store.stats().chunks} chunks)")

            def run(method: str):
                started = time.perf_counter()
                summary = final_summary(summarize_document(store=store, path=str(path), method=method,
                                                           length=args.length, generator=generator))
                seconds = time.perf_counter() - started
                print(f"  {method}: {seconds:.2f} s, {summary.stats.model_calls} model calls, "
                      f"{summary.stats.cached}/{summary.stats.nodes} cached", flush=True)
                return summary, seconds

            rows = []
            extract, t_extract = run("extract")
            rows.append(("extract, fresh cache", t_extract, extract))
            model, t_model = run("model")
            rows.append(("model, fresh cache", t_model, model))
            again, t_again = run("model")
            rows.append(("model, nothing changed", t_again, again))
            path.write_text(make_document(sentences_per_section=args.sentences, edited_section=args.edit).text)
            index_paths(store=store, embedder=embedder, paths=[path], **options)
            edited, t_edited = run("model")
            rows.append((f"model, section {args.edit + 1} edited", t_edited, edited))
            extract_edited, t_extract_edited = run("extract")
            rows.append((f"extract, section {args.edit + 1} edited", t_extract_edited, extract_edited))

    print(f"\n{'run':<28} {'seconds':>8} {'nodes':>6} {'cached':>6} {'model calls':>11} {'dropped':>7} "
          f"{'fallbacks':>9} {'key facts':>9}")
    for label, seconds, s in rows:
        st = s.stats
        print(f"{label:<28} {seconds:8.2f} {st.nodes:6d} {st.cached:6d} {st.model_calls:11d} "
              f"{st.dropped_sentences:7d} {st.fallbacks:9d} {len(kept(s, document.facts)):6d}/{len(document.facts)}")
    print(f"\nre-summary after a one-section edit: {t_edited:.2f} s, {edited.stats.model_calls} model calls; "
          f"{t_model / t_edited:.0f}x faster than the full model summary ({t_model:.1f} s)")
    print(f"extract vs model, fresh cache: {t_model / t_extract:.0f}x faster "
          f"({len(kept(extract, document.facts))} vs {len(kept(model, document.facts))} key facts of "
          f"{len(document.facts)})")
    print(f"extract facts kept: {', '.join(kept(extract, document.facts))}")
    print(f"model facts kept:   {', '.join(kept(model, document.facts))}")
    print(f"load average {open('/proc/loadavg').read().split()[0]} at the end")
    print("\nmodel overview:")
    for p in model.overview:
        print(f"  - {p.text}  [{'; '.join(c.location for c in p.citations[:2])}]")
    generator.close()


if __name__ == "__main__":
    main()
