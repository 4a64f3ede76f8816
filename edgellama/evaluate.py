"""Retrieval and answer quality as numbers (BEIR IR metrics; QA exact match, F1, citations, abstention),
through the same indexer, search and ask as users; pure metrics; never prints (progress: a callback).
``run_retrieval_eval`` and ``run_qa_eval`` do a whole ``edgellama eval`` job (a temporary database,
the models, indexing, evaluating); ``write_results`` saves its JSON.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from .embed import Embedder
from .errors import DatasetError
from .indexer import IndexProgress, IndexStats, TextRecord, index_records
from .config import SearchMode
from .errors import EdgeLlamaError
from .retrieve import search
from .store import Store
from .text import normalize_answer

if TYPE_CHECKING:
    from .answer import Answer
    from .config import Settings

__all__ = [
    "ndcg_at_k", "recall_at_k", "mrr_at_k", "exact_match", "token_f1", "contains_answer", "load_beir", "index_beir",
    "restrict", "BEIR_PREFIX", "RetrievalSettings", "evaluate_retrieval", "QaItem", "load_qa", "resolve_gold",
    "QaResult", "evaluate_qa", "summarize_qa", "MODES", "run_retrieval_eval", "run_qa_eval",
    "write_results",
]

MODES: tuple[SearchMode, ...] = ("bm25", "dense", "hybrid")
BEIR_PREFIX = "beir:"  # stored "path" of a BEIR document: the prefix, then its id


# -- metrics (pure) -------------------------------------------------------------------------------

def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains (BEIR / trec_eval): sum of rel / log2(rank + 1) over the ideal."""
    dcg = sum(relevant.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the first ``k``."""
    wanted = {d for d, g in relevant.items() if g > 0}
    if not wanted:
        return 0.0
    return len(wanted & set(ranked[:k])) / len(wanted)


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the first ``k``, else 0."""
    for rank, d in enumerate(ranked[:k], start=1):
        if relevant.get(d, 0) > 0:
            return 1.0 / rank
    return 0.0


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 if the normalized prediction equals any normalized answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Iterable[str]) -> float:
    """SQuAD token F1 of the prediction against the best-matching answer."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether a normalized answer occurs in the normalized text (as whole words)."""
    padded = f" {normalize_answer(text)} "
    return any(f" {normalize_answer(a)} " in padded for a in answers if normalize_answer(a))


# -- progress -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalProgress:
    stage: str  # "index", "bm25", "dense", "hybrid", "qa"
    done: int
    total: int


ProgressCallback = Callable[[EvalProgress], None]


# -- BEIR retrieval -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeirSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text, only queries that have judgements
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as err:
                    raise DatasetError(f"{path}:{number}: not JSON: {err.msg}") from None
                if not isinstance(item, dict):
                    raise DatasetError(f"{path}:{number}: expected a JSON object")
                yield number, item
    except FileNotFoundError:
        raise DatasetError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None


def load_beir(folder: Path, *, split: str = "test") -> BeirSet:
    """A BEIR folder: ``corpus.jsonl`` ({_id, title, text}), ``queries.jsonl`` ({_id, text}) and
    ``qrels/<split>.tsv`` (header, then query-id, corpus-id, score)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder (expected corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
    corpus: dict[str, tuple[str, str]] = {}
    for number, item in _read_jsonl(folder / "corpus.jsonl"):
        if "_id" not in item or not isinstance(item.get("text"), str):
            raise DatasetError(f"{folder / 'corpus.jsonl'}:{number}: needs \"_id\" and \"text\"")
        corpus[str(item["_id"])] = (str(item.get("title") or ""), item["text"])
    queries: dict[str, str] = {}
    for number, item in _read_jsonl(folder / "queries.jsonl"):
        if "_id" not in item or not isinstance(item.get("text"), str):
            raise DatasetError(f"{folder / 'queries.jsonl'}:{number}: needs \"_id\" and \"text\"")
        queries[str(item["_id"])] = item["text"]
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    try:
        with open(qrels_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise DatasetError(f"{qrels_path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read {qrels_path}: {err}") from None
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            qid, did, score = row[0], row[1], int(row[2])
        except (IndexError, ValueError):
            raise DatasetError(f"{qrels_path}:{number}: expected query-id, corpus-id, score") from None
        qrels.setdefault(qid, {})[did] = score
    missing = sorted(q for q in qrels if q not in queries)
    if missing:
        raise DatasetError(f"{qrels_path}: {len(missing)} query ids not in queries.jsonl (first: {missing[0]})")
    if not corpus or not qrels:
        raise DatasetError(f"{folder}: empty corpus or no judgements")
    judged = {q: t for q, t in queries.items() if q in qrels}
    return BeirSet(name=folder.resolve().name, corpus=corpus, queries=judged, qrels=qrels)


def index_beir(*, store: Store, embedder: Embedder, data: BeirSet, chunk_tokens: int, chunk_overlap: int,
               title: str = "context", on_progress: ProgressCallback | None = None,
               order: Sequence[str] | None = None, should_stop: Callable[[], bool] | None = None) -> IndexStats:
    """Each document (title + text) becomes one stored document at ``beir:<id>``. ``title``:
    "context" stores it as the chunks' heading context (as a file's title is), "text" puts it
    at the start of the text as well. ``order``: these document ids first (then the rest);
    ``should_stop``: see ``indexer.index_records``."""
    ids = list(dict.fromkeys([*(d for d in order or () if d in data.corpus), *data.corpus]))
    records = [
        TextRecord(key=f"{BEIR_PREFIX}{doc_id}", title=t or None,
                   text=f"{t}\n\n{body}" if title == "text" and t else body)
        for doc_id, (t, body) in ((d, data.corpus[d]) for d in ids)
    ]

    def progress(p: IndexProgress) -> None:
        if on_progress:
            on_progress(EvalProgress("index", p.done, p.total))

    return index_records(store=store, embedder=embedder, records=records, chunk_tokens=chunk_tokens,
                         chunk_overlap=chunk_overlap, on_progress=progress, should_stop=should_stop)


def restrict(data: BeirSet, doc_ids: Iterable[str]) -> BeirSet:
    """The same queries over a part of the corpus (say, what an interrupted index run stored)."""
    keep = set(doc_ids)
    return BeirSet(f"{data.name} ({len(keep & set(data.corpus))} of {len(data.corpus)} documents)",
                   {d: v for d, v in data.corpus.items() if d in keep}, data.queries, data.qrels)


@dataclass(frozen=True)
class RetrievalSettings:
    """How a query is searched: the fusion knobs of ``retrieve.search``, and how deep to rank."""

    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)  # bm25, dense
    candidates: int = 300  # chunks taken from each ranking before fusion
    depth: int = 100  # documents ranked per query (Recall@100 needs 100)


@dataclass(frozen=True)
class ModeScores:
    mode: str
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int
    seconds: float
    queries_per_second: float
    short_rankings: int  # queries for which fewer than ``depth`` documents came back
    per_query: dict[str, float] = field(repr=False, default_factory=dict)  # query id -> nDCG@10


@dataclass(frozen=True)
class RetrievalReport:
    dataset: str
    documents: int
    queries: int
    chunks: int
    index_seconds: float
    chunks_embedded: int
    settings: RetrievalSettings
    modes: tuple[ModeScores, ...]

    def as_dict(self) -> dict:
        return {
            "dataset": self.dataset, "documents": self.documents, "queries": self.queries,
            "chunks": self.chunks, "index_seconds": round(self.index_seconds, 2),
            "chunks_embedded": self.chunks_embedded,
            "settings": {"rrf_k": self.settings.rrf_k, "weights": list(self.settings.weights),
                         "candidates": self.settings.candidates, "depth": self.settings.depth},
            "modes": {m.mode: {
                "ndcg@10": round(m.ndcg_at_10, 4), "recall@10": round(m.recall_at_10, 4),
                "recall@100": round(m.recall_at_100, 4), "mrr@10": round(m.mrr_at_10, 4),
                "queries": m.queries, "seconds": round(m.seconds, 2),
                "queries_per_second": round(m.queries_per_second, 2), "short_rankings": m.short_rankings,
                "per_query_ndcg@10": {q: round(v, 4) for q, v in m.per_query.items()},
            } for m in self.modes},
        }


def rank_documents(*, store: Store, embedder: Embedder, query: str, mode: SearchMode,
                   settings: RetrievalSettings, vectors=None) -> list[str]:
    """BEIR document ids, best first: each document ranks where its best chunk ranks."""
    found = search(store=store, embedder=embedder, query=query, k=settings.candidates * 2, mode=mode,
                   candidates=settings.candidates, rrf_k=settings.rrf_k, weights=settings.weights,
                   vectors=vectors, files_only=False)
    ranked: dict[str, None] = {}
    for hit in found:
        if hit.chunk.path.startswith(BEIR_PREFIX):
            ranked.setdefault(hit.chunk.path[len(BEIR_PREFIX):], None)
    return list(ranked)[: settings.depth]


def evaluate_retrieval(
    *,
    store: Store,
    embedder: Embedder,
    data: BeirSet,
    modes: Sequence[SearchMode] = MODES,
    settings: RetrievalSettings = RetrievalSettings(),
    index_stats: IndexStats | None = None,
    on_progress: ProgressCallback | None = None,
) -> RetrievalReport:
    """Run every judged query in each mode over an index made by ``index_beir``."""
    from .vectors import load_vectors

    vectors = load_vectors(store, model=embedder.name)
    embedder.embed(["warm-up"])  # load the model before the clock starts: every mode pays the same
    results: list[ModeScores] = []
    qids = sorted(data.queries, key=lambda q: (len(q), q))
    for mode in modes:
        started = time.perf_counter()
        ndcg, r10, r100, mrr, per_query = [], [], [], [], {}
        short = 0
        for done, qid in enumerate(qids, start=1):
            ranked = rank_documents(store=store, embedder=embedder, query=data.queries[qid], mode=mode,
                                    settings=settings, vectors=vectors)
            # BEIR's evaluation never counts a document whose id is the query's own id.
            ranked = [d for d in ranked if d != qid]
            short += len(ranked) < min(settings.depth, len(data.corpus) - 1)
            rel = data.qrels[qid]
            ndcg.append(ndcg_at_k(ranked, rel, 10))
            r10.append(recall_at_k(ranked, rel, 10))
            r100.append(recall_at_k(ranked, rel, 100))
            mrr.append(mrr_at_k(ranked, rel, 10))
            per_query[qid] = ndcg[-1]
            if on_progress:
                on_progress(EvalProgress(mode, done, len(qids)))
        seconds = time.perf_counter() - started
        n = len(qids)
        results.append(ModeScores(mode, sum(ndcg) / n, sum(r10) / n, sum(r100) / n, sum(mrr) / n, n, seconds,
                                  n / seconds if seconds else 0.0, short, per_query))
    stats = store.stats()
    return RetrievalReport(
        dataset=data.name, documents=len(data.corpus), queries=len(qids), chunks=stats.chunks,
        index_seconds=index_stats.seconds if index_stats else 0.0,
        chunks_embedded=index_stats.chunks_embedded if index_stats else 0,
        settings=settings, modes=tuple(results),
    )


# -- question answering ---------------------------------------------------------------------------

@dataclass(frozen=True)
class QaItem:
    id: str
    question: str
    answers: tuple[str, ...]  # empty: the documents do not answer it
    doc: str | None  # the file that holds the answer, as written in the QA file


def load_qa(path: Path) -> list[QaItem]:
    """One JSON object a line: ``{"id", "question", "answers": [...], "doc"?}``."""
    items: list[QaItem] = []
    seen: set[str] = set()
    for number, item in _read_jsonl(Path(path)):
        question, answers = item.get("question"), item.get("answers", [])
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{path}:{number}: needs a \"question\" string")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DatasetError(f"{path}:{number}: \"answers\" must be a list of strings")
        qid = str(item.get("id", number))
        if qid in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {qid!r}")
        seen.add(qid)
        doc = item.get("doc")
        items.append(QaItem(qid, question, tuple(answers), str(doc) if doc else None))
    if not items:
        raise DatasetError(f"{path}: no questions")
    return items


def resolve_gold(doc: str, *, docs: Path) -> str:
    """The indexed path of a gold document named relative to the docs folder, its parent or here."""
    for candidate in (docs / doc, docs.parent / doc, Path(doc)):
        if candidate.is_file():
            return str(candidate.resolve())
    raise DatasetError(f"gold document {doc} is neither under {docs} nor its parent")


@dataclass(frozen=True)
class QaResult:
    id: str
    question: str
    answerable: bool
    kind: str  # "answer", "quote" or "abstain"
    answer: str
    gold_rank: int | None  # rank of the gold document's first chunk in the search results
    exact_match: float
    f1: float
    citations: int
    citations_with_answer: int  # cited passages that contain a gold answer
    citations_with_own_answer: int  # cited passages that contain the answer given (answers only)
    seconds: float
    reason: str
    reads_gold: bool = False  # what the user reads (answer and its sentence, or the passage) holds a gold answer
    method: str = ""  # answers only: "model" or "span"
    first_byte_seconds: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """One outcome's share of the answerable questions, and what its readers got."""

    share: float
    reads_gold: float  # of these, the share whose shown text holds a gold answer
    f1: float  # of these, mean token F1 of ``answer`` (the short answer, or the passage)


@dataclass(frozen=True)
class QaReport:
    questions: int
    answerable: int
    unanswerable: int
    k: int
    hit_at_k: float  # answerable questions whose gold document is in the top k chunks
    exact_match: float  # over answerable questions; an abstention scores 0
    f1: float
    answered: float  # share of answerable questions given an answer (not a quote, not abstained)
    citation_precision: float  # of answers' cited passages, those that contain the answer given
    citation_gold: float  # of all cited passages (answers and quotes), those that contain a gold answer
    flagged_citations: int  # passages the model was shown that lacked the answer's words: not cited
    abstention: float  # share of unanswerable questions given no short answer ("do not say" or a passage)
    abstained_outright: float  # share of unanswerable questions told "The documents do not say." (not a quote)
    false_abstention: float  # share of answerable questions that got "the documents do not say"
    seconds_mean: float
    seconds_p50: float
    seconds_p95: float
    results: tuple[QaResult, ...]
    reads_gold: float = 0.0  # answerable questions whose shown text (answer + its sentence, or passage) holds gold
    short_answer_f1: float = 0.0  # mean F1 of the verified short answers alone
    seconds_first_byte_p50: float = 0.0
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # "answer", "quote", "abstain" over answerable

    def as_dict(self) -> dict:
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()
               if k not in ("results", "outcomes")}
        out["outcomes"] = {k: {f: round(v, 4) for f, v in o.__dict__.items()} for k, o in self.outcomes.items()}
        out["results"] = [r.__dict__ for r in self.results]
        return out


def evaluate_qa(
    *,
    store: Store,
    embedder: Embedder,
    generator,
    items: Sequence[QaItem],
    gold_paths: Mapping[str, str],
    k: int = 3,
    ask_options: Mapping[str, object] | None = None,
    on_progress: ProgressCallback | None = None,
    on_answer: Callable[[QaItem, "Answer"], None] | None = None,
) -> QaReport:
    """Ask every question through ``answer.ask``. ``gold_paths``: item id -> indexed gold path.
    ``on_answer`` sees each full ``Answer`` (what the model was shown, its timings)."""
    from .answer import ask
    from .vectors import load_vectors

    vectors = load_vectors(store, model=embedder.name)
    results: list[QaResult] = []
    flagged = 0
    for done, item in enumerate(items, start=1):
        gold = gold_paths.get(item.id)
        rank = None
        if gold:
            found = search(store=store, embedder=embedder, query=item.question, k=k, vectors=vectors)
            rank = next((i for i, f in enumerate(found, start=1) if f.chunk.path == gold), None)
        started = time.perf_counter()
        answer = ask(question=item.question, store=store, embedder=embedder, generator=generator,
                     vectors=vectors, **dict(ask_options or {}))
        seconds = time.perf_counter() - started
        shown = "" if answer.abstained else answer.text
        read = " ".join([shown, *(e.text for e in answer.evidence)]) if shown else ""
        cited = [c for c in answer.citations]
        flagged += sum(1 for c in answer.context if c.support < 0.5) if answer.kind == "answer" else 0
        results.append(QaResult(
            id=item.id, question=item.question, answerable=bool(item.answers), kind=answer.kind, answer=shown,
            gold_rank=rank,
            exact_match=exact_match(shown, item.answers) if item.answers else 0.0,
            f1=token_f1(shown, item.answers) if item.answers else 0.0,
            citations=len(cited),
            citations_with_answer=sum(contains_answer(f"{c.heading} {c.text}", item.answers) for c in cited),
            citations_with_own_answer=(sum(contains_answer(f"{c.heading} {c.text}", [shown]) for c in cited)
                                       if answer.kind == "answer" else 0),
            seconds=seconds, reason=answer.reason,
            reads_gold=bool(item.answers) and contains_answer(read, item.answers),
            method=answer.method, first_byte_seconds=answer.timings.first_byte_seconds,
        ))
        if on_answer:
            on_answer(item, answer)
        if on_progress:
            on_progress(EvalProgress("qa", done, len(items)))
    return summarize_qa(results, k=k, gold_paths=gold_paths, flagged_citations=flagged)


def summarize_qa(results: Sequence[QaResult], *, k: int, gold_paths: Mapping[str, str],
                 flagged_citations: int = 0) -> QaReport:
    """The report over ``results`` (say, of several ``evaluate_qa`` runs over parts of a set)."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    with_gold = [r for r in answerable if gold_paths.get(r.id)]
    cited = [r for r in answerable if r.citations]
    answered = [r for r in results if r.kind == "answer" and r.citations]
    seconds = sorted(r.seconds for r in results)
    first_bytes = sorted(r.first_byte_seconds for r in results)

    def share(rows: list[QaResult], test: Callable[[QaResult], bool]) -> float:
        return sum(map(test, rows)) / len(rows) if rows else 0.0

    return QaReport(
        questions=len(results), answerable=len(answerable), unanswerable=len(unanswerable), k=k,
        hit_at_k=share(with_gold, lambda r: r.gold_rank is not None),
        exact_match=share(answerable, lambda r: r.exact_match == 1.0),
        f1=sum(r.f1 for r in answerable) / len(answerable) if answerable else 0.0,
        answered=share(answerable, lambda r: r.kind == "answer"),
        citation_precision=(sum(r.citations_with_own_answer for r in answered) / sum(r.citations for r in answered)
                            if answered else 0.0),
        citation_gold=(sum(r.citations_with_answer for r in cited) / sum(r.citations for r in cited)
                       if cited else 0.0),
        flagged_citations=flagged_citations,
        abstention=share(unanswerable, lambda r: r.kind != "answer"),
        abstained_outright=share(unanswerable, lambda r: r.kind == "abstain"),
        false_abstention=share(answerable, lambda r: r.kind == "abstain"),
        seconds_mean=statistics.fmean(seconds) if seconds else 0.0,
        seconds_p50=seconds[len(seconds) // 2] if seconds else 0.0,
        seconds_p95=seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))] if seconds else 0.0,
        results=tuple(results),
        reads_gold=share(answerable, lambda r: r.reads_gold),
        short_answer_f1=(statistics.fmean(r.f1 for r in answerable if r.kind == "answer")
                         if any(r.kind == "answer" for r in answerable) else 0.0),
        seconds_first_byte_p50=first_bytes[len(first_bytes) // 2] if first_bytes else 0.0,
        outcomes={kind: _outcome(answerable, kind) for kind in ("answer", "quote", "abstain")},
    )


def _outcome(answerable: Sequence[QaResult], kind: str) -> Outcome:
    rows = [r for r in answerable if r.kind == kind]
    if not rows:
        return Outcome(0.0, 0.0, 0.0)
    return Outcome(len(rows) / len(answerable), sum(r.reads_gold for r in rows) / len(rows),
                   statistics.fmean(r.f1 for r in rows))


# -- whole runs (``edgellama eval``) ------------------------------------------------------------------


def _eval_store(models, db: Path | None, tmp: str) -> Store:
    return models.open_store(create=True, db=db if db is not None else Path(tmp) / "eval.db")


def run_retrieval_eval(*, settings: "Settings", folder: Path, modes: Sequence[SearchMode] = MODES,
                       retrieval: RetrievalSettings, title: str = "context", db: Path | None = None,
                       on_progress: ProgressCallback | None = None) -> RetrievalReport:
    """``edgellama eval retrieval``: index the BEIR folder into ``db`` (or a temporary database) and
    evaluate each search mode on it."""
    import tempfile

    from .resources import Models

    data = load_beir(folder)
    with tempfile.TemporaryDirectory(prefix="edgellama-eval-") as tmp:
        models = Models(settings)
        embedder = models.embedder()
        with _eval_store(models, db, tmp) as store:
            stats = index_beir(store=store, embedder=embedder, data=data, chunk_tokens=settings.chunk_tokens,
                               chunk_overlap=settings.chunk_overlap, title=title, on_progress=on_progress)
            return evaluate_retrieval(store=store, embedder=embedder, data=data, modes=modes, settings=retrieval,
                                      index_stats=stats, on_progress=on_progress)


def run_qa_eval(*, settings: "Settings", questions: Path, docs: Path, k: int = 3, db: Path | None = None,
                on_progress: ProgressCallback | None = None) -> QaReport:
    """``edgellama eval qa``: index the ``docs`` folder into ``db`` (or a temporary database) and ask
    every question of the ``questions`` file."""
    import tempfile

    from .indexer import IndexOptions, index_paths
    from .resources import Models

    items = load_qa(questions)
    gold = {item.id: resolve_gold(item.doc, docs=docs) for item in items if item.doc and item.answers}
    with tempfile.TemporaryDirectory(prefix="edgellama-eval-") as tmp:
        models = Models(settings)
        embedder = models.embedder()
        generator = models.generator()
        try:
            with _eval_store(models, db, tmp) as store:
                index_paths(store=store, embedder=embedder, paths=[docs], **IndexOptions.from_settings(settings).kwargs())
                return evaluate_qa(store=store, embedder=embedder, generator=generator, items=items, gold_paths=gold,
                                   k=k, ask_options=settings.ask_options, on_progress=on_progress)
        finally:
            generator.close()


def write_results(*, data_dir: Path, out: Path | None, kind: str, name: str, data: dict) -> Path:
    """Save an evaluation's JSON to ``out``, or ``DATA_DIR/eval/KIND-NAME-TIME.json``; the path written."""
    path = out or data_dir / "eval" / f"{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    except OSError as err:
        raise EdgeLlamaError(f"cannot write results to {path}: {err.strerror or err}") from None
    return path
