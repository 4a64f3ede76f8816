"""The context budget (issue 10): answer quality against context tokens. The corpus QA set
(tests/data/corpus_qa.jsonl over corpus/) goes through the real ``answer.ask`` (via
``evaluate.evaluate_qa``, as ``edgellama eval qa``) at a series of context sizes, and each row
prints context and prompt tokens, the measured prompt eval, token F1, EM, how often a passage of
the gold document was shown, abstention, citation precision, and its prompt eval time as a ratio
against the largest setting of the same run.

One fresh worker process indexes corpus/ into a temporary database and loads the real models
once (one llama.cpp context per prompt style, so each keeps its own fixed-prefix KV cache, as
the daemon's does). The settings take turns over blocks of questions, so a change of machine load
hits every row alike. The question embeddings and sentence embeddings are cached across settings
(``CachedEmbedder``): every row sees the same retrieval, and the sweep pays for it once.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ._common import CORPUS, QUICK_FILES, ROOT, Worker, info, isolated_env, report, temp_home

QA_FILE = ROOT / "tests" / "data" / "corpus_qa.jsonl"
BLOCK = 6  # questions per turn of each setting
# Issue 5's thresholds (tests/test_eval.py): a default must keep them.
MIN_HIT, MIN_ABSTENTION, MIN_CITATION_PRECISION = 0.95, 0.90, 0.90
PROMPT_EVAL_LIMIT = 1.0  # seconds, the target for a cited answer


@dataclass(frozen=True)
class Setting:
    style: str
    evidence_sentences: int = 0  # completion style only
    evidence_chunks: int = 0  # completion style only
    context_tokens: int = 0  # the budget; what binds in the chat style

    @property
    def label(self) -> str:
        if self.style == "completion":
            return f"completion s={self.evidence_sentences} c={self.evidence_chunks}"
        return f"chat ctx={self.context_tokens}"


def sweep(*, quick: bool, context_tokens: int) -> list[Setting]:
    """``context_tokens``: the configured budget, which the completion rows keep (their few
    sentences stay far below it)."""
    if quick:
        return [Setting("completion", 1, 3, context_tokens), Setting("completion", 4, 3, context_tokens),
                Setting("chat", context_tokens=250)]
    return ([Setting("completion", s, c, context_tokens) for c in (3, 5) for s in (1, 2, 3, 4, 6, 8)]
            + [Setting("chat", context_tokens=t) for t in (250, 500, 1000, 2000)])


def default_setting(context_tokens: int) -> Setting:
    """What ``ask`` does with no options: its own defaults and the configured budget."""
    from edgellama.answer import ask

    params = inspect.signature(ask).parameters
    return Setting("completion", params["evidence_sentences"].default, params["evidence_chunks"].default,
                   context_tokens)


# -- the worker (a fresh process: python -m bench._worker qa ...) -------------------------------


class CachedEmbedder:
    """The real embedder behind a memo: each text is embedded once per run, so the sweep's
    settings share the same retrieval and pay for it once."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.memo: dict[str, object] = {}

    def embed(self, texts):
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            for text, row in zip(missing, self.inner.embed(missing)):
                self.memo[text] = row
        return np.stack([self.memo[t] for t in texts]) if texts else self.inner.embed([])

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    @property
    def max_input_tokens(self) -> int:
        return self.inner.max_input_tokens


class FixedPrefixOnly:
    """A generator whose KV cache is cut back to the fixed prompt start before each prompt: what
    the warm daemon reuses between two different questions, and nothing more. Without it the
    sweep's own order would leak cache (the same question at the next budget shares its first
    passages with the last prompt)."""

    def __init__(self, generator, keep: int):
        self.generator, self.keep = generator, keep
        self.name, self.n_ctx = generator.name, generator.n_ctx

    @property
    def last_stats(self):
        return self.generator.last_stats

    def count_tokens(self, text: str) -> int:
        return self.generator.count_tokens(text)

    def _trim(self) -> None:
        llama = self.generator.llama
        llama.n_tokens = min(llama.n_tokens, self.keep)  # llama-cpp-python matches input_ids[:n_tokens]

    def stream(self, prompt: str, **options):
        self._trim()
        return self.generator.stream(prompt, **options)

    def stream_chat(self, messages: list, **options):
        self._trim()
        return self.generator.stream_chat(messages, **options)


class QaWorker:
    def __init__(self, *, db: str, quick: bool):
        from edgellama.config import resolve_settings
        from edgellama.evaluate import load_qa, resolve_gold
        from edgellama.generate import LlamaGenerator, resolve_model_path
        from edgellama.indexer import IndexOptions, index_paths
        from edgellama.prompt import COMPLETION_PREFIX
        from edgellama.resources import Models

        started = time.perf_counter()
        s = self.settings = resolve_settings()
        models = Models(s)  # the resource plan the daemon loads with
        plan = models.plan
        raw = models.embedder()
        # quick: three files and the questions about them (and a few the corpus does not answer)
        paths = [CORPUS / f for f in QUICK_FILES] if quick else [CORPUS]
        self.store = models.open_store(create=True, db=Path(db))
        stats = index_paths(store=self.store, embedder=raw, paths=paths, **IndexOptions.from_settings(s).kwargs())
        self.index_seconds, self.chunks = stats.seconds, self.store.stats().chunks
        self.embedder = CachedEmbedder(raw)
        items = load_qa(QA_FILE)
        indexed = {str(p.resolve()) for p in paths}
        self.gold = {i.id: resolve_gold(i.doc, docs=CORPUS) for i in items if i.doc and i.answers}
        if quick:
            inside = [i for i in items if i.answers and any(self.gold[i.id] == p for p in indexed)]
            items = inside[:3] + [i for i in items if not i.answers][:1]
        self.items = {i.id: i for i in items}
        model = resolve_model_path(model=s.model, models_dir=s.models_dir, requantize_bundled=plan.requantize.value,
                                   threads=plan.threads.value)
        # One llama.cpp context per style: each keeps the KV cache of its own fixed prompt start,
        # as the daemon keeps the completion prefix warm.
        self.generators = {style: LlamaGenerator(model, n_ctx=plan.n_ctx.value, threads=plan.threads.value,
                                                 n_batch=plan.n_batch.value)
                           for style in ("completion", "chat")}
        self.prefix = COMPLETION_PREFIX
        # The fixed start of each style's prompts: the tokens two prompts about different
        # questions and passages share (completion: the instruction and examples; chat: the
        # template's system message and "Sources:").
        keep = {style: self._shared_start(gen, style) for style, gen in self.generators.items()}
        self.generators["completion"].warm_prefix(self.prefix)
        self.asking = {style: FixedPrefixOnly(gen, keep[style]) for style, gen in self.generators.items()}
        self.keep = keep
        self.model = model.name
        self.load_seconds = time.perf_counter() - started

    def _shared_start(self, generator, style: str) -> int:
        from edgellama.prompt import STOP, build_prompt

        seen = []
        for question, heading, text in (("Which key opens the loading dock door?", "Dock", "The door takes key K-17."),
                                        ("How often is the boiler checked?", "Boiler", "Every 2 hours, at night.")):
            plan = build_prompt(question=question, chunks=[(heading, text)], count_tokens=generator.count_tokens,
                                context_budget=250, n_ctx=generator.n_ctx, max_tokens=4, style=style)
            stream = (generator.stream(plan.prompt, max_tokens=4, stop=STOP) if style == "completion"
                      else generator.stream_chat(list(plan.messages), max_tokens=4))
            for _ in stream:
                pass
            llama = generator.llama
            seen.append(list(llama.input_ids[: llama.n_tokens]))
        shared = 0
        for a, b in zip(*seen):
            if a != b:
                break
            shared += 1
        return shared

    def ready(self) -> dict:
        return {"fixed_prefix_tokens": self.keep, "load_seconds": self.load_seconds, "index_seconds": self.index_seconds, "chunks": self.chunks,
                "ids": list(self.items), "model": self.model, "threads": self.settings.threads,
                "top_k": self.settings.top_k, "context_tokens": self.settings.context_tokens,
                "answerable": sum(bool(i.answers) for i in self.items.values())}

    def _options(self, setting: Setting) -> dict:
        s = self.settings
        options = {"top_k": s.top_k, "max_tokens": s.max_tokens, "min_relevance": s.min_relevance,
                   "style": setting.style, "context_tokens": setting.context_tokens or s.context_tokens}
        if setting.style == "completion":
            options.update(evidence_sentences=setting.evidence_sentences, evidence_chunks=setting.evidence_chunks)
        return options

    def _ask(self, setting: Setting, question: str):
        from edgellama.answer import ask

        return ask(question=question, store=self.store, embedder=self.embedder,
                   generator=self.asking[setting.style], **self._options(setting))

    def op_setting(self, *, setting: dict, ids: list) -> dict:
        """evaluate_qa over these questions with this setting: its results, and per question the
        tokens shown, the measured prompt eval and whether a passage of the gold file was shown."""
        from edgellama.evaluate import evaluate_qa
        from edgellama.prompt import build_prompt

        setting = Setting(**setting)
        gen = self.asking[setting.style]
        records = []

        def seen(item, answer) -> None:
            plan = build_prompt(question=item.question, chunks=[(c.heading, c.text) for c in answer.context],
                                count_tokens=gen.count_tokens, context_budget=10**9, n_ctx=10**9, max_tokens=0,
                                style=setting.style)
            gold = self.gold.get(item.id)
            records.append({
                "id": item.id, "kind": answer.kind, "model_ran": not answer.abstained,
                "context_tokens": plan.context_tokens if answer.context else 0,
                "prompt_tokens": answer.timings.prompt_tokens, "prompt_seconds": answer.timings.prompt_seconds,
                "gold_shown": bool(gold) and any(c.path == gold for c in answer.context),
                "dropped": len(answer.dropped),
            })

        report = evaluate_qa(store=self.store, embedder=self.embedder, generator=gen,
                             items=[self.items[i] for i in ids], gold_paths=self.gold, k=3,
                             ask_options=self._options(setting), on_answer=seen)
        return {"results": [asdict(r) for r in report.results], "flagged": report.flagged_citations,
                "records": records}

    def op_speed(self, *, tokens: int) -> dict:
        """Raw prompt eval of ``tokens`` tokens of corpus text from an empty cache: this run's
        tok/s. The completion prefix is put back in the cache afterwards."""
        gen = self.generators["completion"]
        llama = gen.llama
        text = " ".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("*.md")))
        ids = llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)[:tokens]
        llama.reset()
        started = time.perf_counter()
        llama.eval(ids)
        seconds = time.perf_counter() - started
        gen.warm_prefix(self.prefix)
        return {"seconds": seconds, "tokens": len(ids)}


# -- the parent: turns, the table, the choice ---------------------------------------------------


@dataclass(frozen=True)
class Row:
    setting: Setting
    questions: int
    context_mean: float
    context_p90: float
    prompt_mean: float
    prompt_p90: float
    eval_median: float  # measured prompt eval seconds, over questions that reached the model
    eval_p90: float
    fresh_mean: float  # prompt tokens past the cached fixed start: what the model evaluated
    fresh_p90: float
    f1: float
    exact_match: float
    gold_shown: float
    hit_at_3: float
    abstention: float
    citation_precision: float
    dropped: int
    f1_per_item: dict  # answerable id -> F1
    eval_per_item: dict  # id -> measured prompt eval seconds, questions that reached the model


def p90(values) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(0.9 * len(values)) - 1)] if values else 0.0


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def summarize(setting: Setting, results: list, records: list, flagged: int, gold: dict, ids: set,
              fixed: int) -> Row:
    """``fixed``: tokens of the prompt start that stay in the KV cache between questions."""
    from edgellama.evaluate import QaResult, summarize_qa

    results = [QaResult(**r) for r in results if r["id"] in ids]
    records = [r for r in records if r["id"] in ids]
    qa = summarize_qa(results, k=3, gold_paths=gold, flagged_citations=flagged)
    ran = [r for r in records if r["model_ran"]]
    answerable = {r.id for r in results if r.answerable}
    fresh = [max(0, r["prompt_tokens"] - fixed) for r in ran]
    return Row(
        setting=setting, questions=len(results),
        context_mean=mean(r["context_tokens"] for r in ran), context_p90=p90(r["context_tokens"] for r in ran),
        prompt_mean=mean(r["prompt_tokens"] for r in ran), prompt_p90=p90(r["prompt_tokens"] for r in ran),
        eval_median=statistics.median(r["prompt_seconds"] for r in ran) if ran else 0.0,
        eval_p90=p90(r["prompt_seconds"] for r in ran), fresh_mean=mean(fresh), fresh_p90=p90(fresh),
        f1=qa.f1, exact_match=qa.exact_match,
        gold_shown=mean(r["gold_shown"] for r in records if r["id"] in answerable),
        hit_at_3=qa.hit_at_k, abstention=qa.abstention, citation_precision=qa.citation_precision,
        dropped=sum(r["dropped"] for r in records), f1_per_item={r.id: r.f1 for r in results if r.answerable},
        eval_per_item={r["id"]: r["prompt_seconds"] for r in ran},
    )


def eval_ratio(row: Row, baseline: Row) -> tuple[float, float, float, int]:
    """(ratio, row median, baseline median, questions): measured prompt eval over the questions
    both rows sent to the model, so rows run on different subsets still compare like with like."""
    ids = set(row.eval_per_item) & set(baseline.eval_per_item)
    if not ids:
        return 0.0, 0.0, 0.0, 0
    a = statistics.median(row.eval_per_item[i] for i in ids)
    b = statistics.median(baseline.eval_per_item[i] for i in ids)
    return (a / b if b else 0.0), a, b, len(ids)


def paired_gap(best: Row, row: Row) -> tuple[float, float]:
    """(best F1 - this row's F1, two standard errors of that gap), paired over the same questions."""
    ids = sorted(set(best.f1_per_item) & set(row.f1_per_item))
    diffs = [best.f1_per_item[i] - row.f1_per_item[i] for i in ids]
    if len(diffs) < 2:
        return mean(diffs), float("inf")
    return mean(diffs), 2 * statistics.stdev(diffs) / math.sqrt(len(diffs))


# Full run: the completion rows ask every 4th question, the chat rows (whole chunks: 5-10x the
# prompt, and answers up to max_tokens) every 12th. Every 12th is among every 4th. About 20
# minutes in all on a quiet 2-core box (a block of 6 questions took 173 s at 704 tok/s), over 40
# at load average 5. The full set at the default is tests/test_eval.py's run.
STRIDES = {"completion": 4, "chat": 12}


def run(*, quick: bool) -> None:
    raw_path = os.environ.get("EDGELLAMA_BENCH_RAW")  # every answer's numbers, written as they come
    with temp_home() as home:
        started = time.perf_counter()
        with Worker("qa", env=isolated_env(home), db=str(home / "budget.db"), quick=quick) as worker:
            ready = worker.ready
            default = default_setting(ready["context_tokens"])
            swept = sweep(quick=quick, context_tokens=ready["context_tokens"])
            if default not in swept:
                swept.append(default)
            ids = ready["ids"]
            strides = {style: 1 if quick else n for style, n in STRIDES.items()}
            info(f"{ready['chunks']} chunks indexed in {ready['index_seconds']:.1f} s; models loaded, "
                 f"{ready['load_seconds']:.1f} s in all; model {ready['model']}, {ready['threads']} threads, "
                 f"top_k {ready['top_k']}")
            info(f"{len(ids)} questions ({ready['answerable']} answerable); "
                 + "; ".join(f"{style} rows on every {n}. question ({len(ids[::n])})" for style, n in strides.items())
                 + f"; KV cache kept between prompts: the fixed start only ({ready['fixed_prefix_tokens']} tokens)")
            raw = {"ready": ready, "strides": strides, "default": asdict(default), "speeds": [],
                   "settings": [{"setting": asdict(s), "results": [], "records": [], "flagged": 0} for s in swept]}
            # In a fixed random order, so a run stopped early still holds a fair sample (the file
            # lists the unanswerable questions last).
            order = list(ids[::strides["completion"]])
            random.Random(10).shuffle(order)
            # EDGELLAMA_BENCH_BLOCKS=N: stop after N blocks (a short run on a quiet spell)
            order = order[:BLOCK * int(os.environ.get("EDGELLAMA_BENCH_BLOCKS") or len(order))]
            for start in range(0, len(order), BLOCK):
                block = order[start:start + BLOCK]
                probe = worker.call("speed", tokens=200 if quick else 1000)
                raw["speeds"].append(probe["tokens"] / probe["seconds"])
                for setting, out in zip(swept, raw["settings"]):
                    subset = set(ids[::strides[setting.style]])
                    chosen = [i for i in block if i in subset]
                    if not chosen:
                        continue
                    reply = worker.call("setting", setting=asdict(setting), ids=chosen)
                    out["results"] += reply["results"]
                    out["records"] += reply["records"]
                    out["flagged"] += reply["flagged"]
                if raw_path:
                    Path(raw_path).write_text(json.dumps(raw))
                info(f"  {min(start + BLOCK, len(order))}/{len(order)} questions, {time.perf_counter() - started:.0f} s, "
                     f"prompt eval {raw['speeds'][-1]:.0f} tok/s")
    print_report(raw, quick=quick)


def print_report(raw: dict, *, quick: bool) -> None:
    """The table, the choice and the figures from the numbers ``run`` gathered (or a saved run's)."""
    gold = _gold_paths()
    ids = raw["ready"]["ids"]
    fixed = raw["ready"]["fixed_prefix_tokens"]
    default = Setting(**raw["default"])
    rows = []
    for entry in raw["settings"]:
        setting = Setting(**entry["setting"])
        done = [r["id"] for r in entry["results"]]
        subset = set(ids[::raw["strides"][setting.style]]) & set(done)
        rows.append(summarize(setting, entry["results"], entry["records"], entry["flagged"], gold, subset,
                              fixed[setting.style]))
    speed = statistics.median(raw["speeds"])
    _print_table(rows, default, speed, raw["speeds"])
    _figures(rows, default, speed, quick)


def _gold_paths() -> dict:
    from edgellama.evaluate import load_qa, resolve_gold

    return {i.id: resolve_gold(i.doc, docs=CORPUS) for i in load_qa(QA_FILE) if i.doc and i.answers}


def _print_table(rows: list[Row], default: Setting, speed: float, speeds: list) -> None:
    largest = max(rows, key=lambda r: (r.context_mean, r.setting.context_tokens))
    best = max(rows, key=lambda r: r.f1)
    info(f"raw prompt eval from an empty cache, this run: median {speed:.0f} tok/s "
         f"(min {min(speeds):.0f}, max {max(speeds):.0f}, {len(speeds)} probes of 1,000 tokens)")
    info(f"measured: time to the first token (ask's prompt_seconds), the fixed prompt start cached; ratio: "
         f"median of the row / median of the largest setting ({largest.setting.label}) over the questions both "
         f"sent to the model. At run speed: prompt tokens past the cached start / the run's median tok/s "
         f"(load-independent). ΔF1: best row ({best.setting.label}) minus this row, ± 2 SE paired over the same "
         f"questions; no loss: ΔF1 <= min(1/n answerable, 2 SE)")
    header = ("| setting | questions | context tok mean / p90 | prompt tok mean / p90 | measured prompt eval s "
              "median / p90 | ratio vs largest | at run speed s mean / p90 | token F1 | ΔF1 vs best ± 2SE | EM "
              "| gold shown | gold in top 3 | abstention | citation precision |")
    print(header)
    print("|" + "---|" * (header.count(" | ") + 1))
    for r in rows:
        gap, noise = paired_gap(best, r)
        label = r.setting.label + (" (default)" if r.setting == default else "")
        print(f"| {label} | {r.questions} | {r.context_mean:.0f} / {r.context_p90:.0f} | "
              f"{r.prompt_mean:.0f} / {r.prompt_p90:.0f} | {r.eval_median:.3f} / {r.eval_p90:.3f} | "
              f"{eval_ratio(r, largest)[0]:.2f}x | {r.fresh_mean / speed:.2f} / {r.fresh_p90 / speed:.2f} | "
              f"{r.f1:.3f} | {gap:+.3f} ± {noise:.3f} | {r.exact_match:.1%} | {r.gold_shown:.1%} | {r.hit_at_3:.1%} | "
              f"{r.abstention:.1%} | {r.citation_precision:.1%} |", flush=True)
    choice, why = choose(rows, speed)
    info(f"choice: {choice.setting.label if choice else 'none'} - {why}")


def f1_tolerance(best: Row, row: Row) -> float:
    """How far below the best F1 a row may be and still count as no loss: one answerable question's
    worth (1/n), as long as that is also within two paired standard errors."""
    n = len(set(best.f1_per_item) & set(row.f1_per_item))
    return min(1 / n, paired_gap(best, row)[1]) if n else 0.0


def choose(rows: list[Row], speed: float) -> tuple[Row | None, str]:
    """The smallest context that keeps F1 within noise of the best (``f1_tolerance``), issue 5's
    thresholds, and a p90 prompt eval within 1 s at this run's speed (the fixed start cached, as
    in the daemon). Of rows with the same sentences and (nearly) the same tokens, the fewer
    chunks: ``ask`` embeds every sentence of those chunks."""
    best = max(rows, key=lambda r: r.f1)
    fits = [r for r in rows
            if best.f1 - r.f1 <= f1_tolerance(best, r) + 1e-9 and r.hit_at_3 >= MIN_HIT
            and r.abstention >= MIN_ABSTENTION and r.citation_precision >= MIN_CITATION_PRECISION
            and r.fresh_p90 / speed <= PROMPT_EVAL_LIMIT]
    if not fits:
        return None, "no row keeps F1 within noise of the best, the thresholds and 1 s"
    pick = min(fits, key=lambda r: r.context_mean)
    pick = min((r for r in fits if r.setting.style == pick.setting.style
                and r.setting.evidence_sentences == pick.setting.evidence_sentences
                and r.context_mean <= pick.context_mean * 1.05),
               key=lambda r: (r.setting.evidence_chunks, r.context_mean))
    return pick, (f"the smallest context of {len(fits)} rows with F1 within one question's worth of the best "
                  f"({best.f1:.3f}, {best.setting.label}) that keep the thresholds and 1 s: "
                  f"{pick.context_mean:.0f} context tokens, F1 {pick.f1:.3f}, p90 prompt eval "
                  f"{pick.fresh_p90 / speed:.3f} s at run speed ({pick.eval_p90:.3f} s measured)")


def _figures(rows: list[Row], default: Setting, speed: float, quick: bool) -> None:
    largest = max(rows, key=lambda r: (r.context_mean, r.setting.context_tokens))
    for r in rows:
        ratio, value, base, n = eval_ratio(r, largest)
        report(f"context budget {r.setting.label}, prompt eval", value=value, unit="s",
               baseline_name=f"largest setting ({largest.setting.label})", baseline=base,
               ratio=ratio, target="-", met=None, reps=n,
               note=f"F1 {r.f1:.3f}, {r.context_mean:.0f} context tokens")
    d = next(r for r in rows if r.setting == default)
    p90_at_speed = d.fresh_p90 / speed
    report("context budget, default setting, p90 prompt eval at run speed", value=p90_at_speed, unit="s",
           baseline_name="1 s target", baseline=PROMPT_EVAL_LIMIT, ratio=p90_at_speed / PROMPT_EVAL_LIMIT,
           target="< 1 s (ratio < 1)", met=p90_at_speed < PROMPT_EVAL_LIMIT, reps=len(d.eval_per_item),
           note=f"p90, not median: {d.fresh_p90:.0f} tokens past the cached start at {speed:.0f} tok/s; "
                f"measured p90 {d.eval_p90:.3f} s; {default.label}" + (" (quick)" if quick else ""))


if __name__ == "__main__":  # python -m bench.context_budget RAW.json: the report of a saved run
    import sys

    print_report(json.loads(Path(sys.argv[1]).read_text()), quick=False)
