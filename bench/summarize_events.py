"""Key events a summary mentions, per dev document, length and method, and the time each took.

Dev documents with key events (each a case-insensitive regular expression a point mentioning it
matches): the Apollo 11 landing day (../shared/data/summarize-dev, when present), the generated
operations log and the Node.js child_process manual (bench/data/summarize), and the generated
handbook of tests/longdoc.py (its 12 facts). Methods: the extractive tree scored by each scorer
(salience: the default; centrality: the former score; sumy's LexRank, LSA and KL-Sum fed the
same units), and salience+model: the bundled 135M model asked yes/no about the salient candidates.

A document is indexed once (fake embedder: summaries do not use vectors) into a fresh database;
every summary runs with a fresh cache. "overview" counts the events in the overview's points,
"shown" in everything `summarize` prints at that length (overview and section points). Times: wall
clock and this process's CPU time (the box is shared: CPU time is the figure to compare).

    PYTHONPATH=. python bench/summarize_events.py [--methods salience,centrality,lexrank,lsa,kl]
        [--show DOC:LENGTH:METHOD]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakes import BagOfWordsEmbedder  # noqa: E402
from longdoc import make_document  # noqa: E402

from edgellama.indexer import index_paths  # noqa: E402
from edgellama.salience import SCORERS, Unit  # noqa: E402
from edgellama.store import Store  # noqa: E402
from edgellama.summarize import final_summary, summarize_document  # noqa: E402

# ../shared/data beside the repository (CI's layout), else the team's shared folder.
SHARED = next((p for p in (ROOT.parent / "shared" / "data" / "summarize-dev", Path("/work/shared/data/summarize-dev"))
               if p.exists()), ROOT.parent / "shared" / "data" / "summarize-dev")
DATA = ROOT / "bench" / "data" / "summarize"
LENGTHS = ("short", "medium", "long")
KL_BLOCK = 200  # units a block for KL-Sum
LEXRANK_BLOCK = 400  # ... and for LexRank


def documents(tmp: Path) -> dict[str, tuple[Path, list[dict]]]:
    """name -> (file, key events)."""
    out: dict[str, tuple[Path, list[dict]]] = {}
    if (SHARED / "key-events.json").exists():
        for name, events in json.loads((SHARED / "key-events.json").read_text()).items():
            out[Path(name).stem] = (SHARED / name, events)
    for name, events in json.loads((DATA / "key-events.json").read_text()).items():
        out[Path(name).stem] = (DATA / name, events)
    book = make_document()
    path = tmp / "handbook.md"
    path.write_text(book.text)
    out["handbook"] = (path, [{"event": f.keyword, "match": re.escape(f.keyword)} for f in book.facts])
    return out


# -- sumy, fed the pipeline's own units (its default tokenizers want nltk downloads: offline) ---


def _sumy(kind: str):
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence

    from edgellama.salience import content_terms

    class Tokenizer:
        language = "english"

        def to_words(self, text: str) -> list[str]:
            return content_terms(text)

        def to_sentences(self, text: str) -> list[str]:
            return [text]

    def scores(units: list[Unit]) -> list[float]:
        if kind == "lexrank":
            from sumy.summarizers.lex_rank import LexRankSummarizer as Base
        elif kind == "lsa":
            from sumy.summarizers.lsa import LsaSummarizer as Base
        else:
            from sumy.summarizers.kl import KLSummarizer as Base
        rated: dict = {}

        class Rating(Base):  # the ratings sumy ranks by, kept instead of its top few
            def _get_best_sentences(self, sentences, count, rating, *args, **kwargs):
                rated.update({s: (rating[s] if isinstance(rating, dict) else rating(s, *args, **kwargs))
                              for s in sentences})
                return ()

        tok = Tokenizer()
        values: list[float] = []
        # KL-Sum rates every sentence by the order it would pick it in, LexRank compares every pair
        # in pure Python: both quadratic, so they are fed consecutive blocks of units (hours on a
        # whole transcript on this shared box otherwise); LSA (one SVD) gets all units.
        step = {"kl": KL_BLOCK, "lexrank": LEXRANK_BLOCK}.get(kind, len(units)) or 1
        for start in range(0, len(units), step):
            rated.clear()
            sentences = [Sentence(u.text or ".", tok) for u in units[start:start + step]]
            summarizer = Rating()
            summarizer.stop_words = ()
            summarizer(ObjectDocumentModel([Paragraph(sentences)]), 1)
            block = [float(rated.get(x, 0.0)) for x in sentences]
            if kind == "kl":  # -(order of picking): scaled to 0..1 so blocks compare
                block = [1.0 + v / len(block) for v in block]
            elif kind == "lexrank":  # stationary probabilities: scaled by the block's size so blocks compare
                block = [v * len(block) for v in block]
            values += block
        return values

    return scores


_MEMO: dict[tuple[str, tuple[str, ...]], list[float]] = {}
_GENERATOR = []

# One-shot yes/no for the bundled 135M model (completion form, not the chat template: see README).
_ASK = ("Decide if a line from a document reports something important: an event, an incident, a decision, "
        "a milestone or a key fact. Routine remarks are not important.\n"
        "Line: The weekly backup finished normally.\nImportant: no\n"
        "Line: A fire broke out in the server room and the building was evacuated.\nImportant: yes\n"
        "Line: {text}\nImportant:")
MODEL_CANDIDATES = 24  # the salient units the model is asked about, per document


def _model_assisted(units: list[Unit]) -> list[float]:
    """Salience, then the bundled model asked yes/no about the MODEL_CANDIDATES most salient
    units (one moment each): a yes adds 1, a no subtracts 1. The model only reorders candidates."""
    from edgellama.config import resolve_settings
    from edgellama.generate import load_generator
    from edgellama.salience import salient_sentences

    if not _GENERATOR:
        settings = resolve_settings()
        _GENERATOR.append(load_generator(model=settings.model, models_dir=settings.models_dir,
                                         requantize_bundled=settings.requantize, threads=settings.threads,
                                         n_ctx=settings.n_ctx))
    generator = _GENERATOR[0]
    scores = SCORERS["salience"](units)
    texts = [u.text for u in units]
    picks = salient_sentences(texts, points=MODEL_CANDIDATES, scores=scores, places=[("", i) for i in range(len(units))],
                              gap=8)
    out = list(scores)
    for pick in picks:
        i = pick.sources[0]
        answer = "".join(generator.stream(_ASK.format(text=" ".join(texts[i].split()[:60])), max_tokens=2,
                                          stop=["\n"])).strip().lower()
        out[i] += 1.0 if answer.startswith("yes") else -1.0 if answer.startswith("no") else 0.0
    return out


def scorer_for(method: str):
    """Our scorers run every time (they are part of each timing); sumy's are slow (LexRank is
    quadratic in pure Python) and the model's too, so each document is scored once by them and the
    other lengths reuse it."""
    if method in SCORERS:
        return SCORERS[method]
    inner = _model_assisted if method == "salience+model" else _sumy(method)

    def memoized(units: list[Unit]) -> list[float]:
        key = (method, tuple(u.text for u in units))
        if key not in _MEMO:
            _MEMO[key] = inner(units)
        return _MEMO[key]

    return memoized


def count(text: str, events: list[dict]) -> list[str]:
    return [e["event"] for e in events if re.search(e["match"], text, re.I)]


def measure(methods: list[str], lengths: tuple[str, ...] = LENGTHS, show: str = "") -> list[tuple]:
    """One row per method, document and length: (name, length, method, events in the overview,
    events shown, events, overview points, all points, sections, wall s, CPU s)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = documents(tmp)
        for name, (path, events) in docs.items():
            print(f"{name}: {path.stat().st_size / 1000:.0f} KB, {len(events)} key events", flush=True)
        for method in methods:
            for name, (path, events) in docs.items():
                for length in lengths:
                    # A fresh database each time: nothing cached, every figure a cold run.
                    with Store.open(tmp / f"{method}-{name}-{length}.db") as store:
                        index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[path], chunk_tokens=200,
                                    chunk_overlap=30, max_file_bytes=50_000_000)
                        started, cpu = time.perf_counter(), time.process_time()
                        summary = final_summary(summarize_document(store=store, path=str(path), length=length,
                                                                   scorer=scorer_for(method)))
                        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                    doc = summary.documents[0]
                    overview = " ".join(" ".join(p.text for p in summary.overview).split())
                    shown = overview + " " + " ".join(" ".join(p.text for s in doc.sections for p in s.points).split())
                    points = len(summary.overview) + sum(len(s.points) for s in doc.sections)
                    rows.append((name, length, method, len(count(overview, events)), len(count(shown, events)),
                                 len(events), len(summary.overview), points, len(doc.sections), seconds, cpu))
                    if show == f"{name}:{length}:{method}":
                        print(f"\n--- {name} {length} {method}: overview")
                        for p in summary.overview:
                            print(f"  - {p.text[:200]}  [{p.citations[0].location}]")
                        for s in doc.sections:
                            print(f"  ## {s.heading}")
                            for p in s.points:
                                print(f"    - {p.text[:160]}  [{p.citations[0].location}]")
                        print("missed:", [e["event"] for e in events if e["event"] not in count(shown, events)])
    return rows


def table(rows: list[tuple]) -> None:
    print(f"\n{'document':<22} {'length':<7} {'method':<11} {'overview':>9} {'shown':>7} {'points':>9} "
          f"{'sections':>8} {'seconds':>8} {'cpu s':>6}")
    for name, length, method, ov, shown, total, n_ov, n_all, secs, seconds, cpu in rows:
        print(f"{name:<22} {length:<7} {method:<11} {ov:>5}/{total:<3} {shown:>3}/{total:<3} {n_ov:>3}+{n_all - n_ov:<5} "
              f"{secs:>8} {seconds:8.2f} {cpu:6.2f}")


# The targets for the Apollo 11 day with the default method (events of 8).
TARGETS = {"long": 6, "medium": 4}


def run(*, quick: bool) -> None:
    """``python -m bench summarize_events``: the key events each dev document's summary keeps
    (default method: salience; baseline: the former centrality score) at medium and long, and
    the time of the extract on the longest document against the 2 s limit."""
    from bench._common import report

    rows = measure(["salience", "centrality"], ("long",) if quick else ("medium", "long"))
    table(rows)
    by = {(r[0], r[1], r[2]): r for r in rows}
    for (name, length, method), r in by.items():
        if method != "salience":
            continue
        base = by[(name, length, "centrality")]
        target = TARGETS.get(length) if name.startswith("apollo11") else None
        for what, k in (("overview", 3), ("shown", 4)):
            report(f"key events {what}, {name} {length}", value=r[k], unit="events",
                   baseline_name="all key events", baseline=r[5], ratio=r[k] / r[5],
                   target=f">= {target} of {r[5]} shown" if target and what == "shown" else "as many as possible",
                   met=(r[k] >= target) if target and what == "shown" else None, reps=1,
                   note=f"centrality: {base[k]}")
    name = max({r[0] for r in rows}, key=lambda n: n.startswith("apollo11"))
    r, base = by[(name, "long", "salience")], by[(name, "long", "centrality")]
    report(f"extract seconds, {name} long", value=r[9], unit="s", baseline_name="centrality", baseline=base[9],
           ratio=r[9] / base[9], target="< 2 s wall", met=r[9] < 2.0, reps=1, note=f"CPU {r[10]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="salience,centrality,lexrank,lsa,kl")
    parser.add_argument("--show", default="", help="print the summary of DOC:LENGTH:METHOD")
    args = parser.parse_args()
    methods = args.methods.split(",")
    try:
        import sumy  # noqa: F401
    except ImportError:
        left = [m for m in methods if m in ("lexrank", "lsa", "kl")]
        if left:
            print(f"sumy is not installed (pip install -e '.[bench]'): {', '.join(left)} left out")
        methods = [m for m in methods if m not in left]
    print(f"load average {open('/proc/loadavg').read().split()[0]} at the start")
    rows = measure(methods, show=args.show)
    print("(sumy and model methods: seconds at short include scoring the document; medium and long reuse its scores)")
    table(rows)
    print(f"load average {open('/proc/loadavg').read().split()[0]} at the end")


if __name__ == "__main__":
    main()
