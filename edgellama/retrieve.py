"""Hybrid retrieval: BM25 over the FTS5 index and cosine similarity over the chunk vectors, fused
by reciprocal rank, and the best sentences of what was found. Never generates or prints.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import SearchMode
from .embed import Embedder
from .store import ChunkRecord, Store
from .text import (MONTHS, NUMBER_WORDS, STOPWORDS, WEEKDAYS, content_words, crude_stem, entry_spans, is_note_line, record_prefix,
                   sentence_spans_within_lines)

if TYPE_CHECKING:
    import numpy as np

    from .vectors import VectorMatrix

__all__ = ["ScoredChunk", "search", "scored_chunk_to_dict", "best_sentences", "evidence_units", "is_record_chunk", "question_coverage",
           "asks_for_quantity", "quantity_words", "quantity_missing"]



@dataclass(frozen=True)
class ScoredChunk:
    chunk: ChunkRecord
    score: float  # fused reciprocal-rank score: higher is better
    similarity: float  # cosine similarity of chunk and question, -1..1
    bm25_rank: int | None  # 1-based, None when the chunk had no keyword match
    dense_rank: int | None


def scored_chunk_to_dict(found: ScoredChunk) -> dict:
    """The JSON form of a search hit: what ``search --json`` prints and what the daemon sends."""
    c = found.chunk
    return {"path": c.path, "line_start": c.line_start, "line_end": c.line_end, "page": c.page,
            "heading": c.context, "score": found.score, "similarity": found.similarity,
            "bm25_rank": found.bm25_rank, "dense_rank": found.dense_rank, "text": c.text}


@dataclass(frozen=True)
class Sentence:
    """One sentence of a retrieved chunk, scored against the question."""

    chunk_index: int  # position of its chunk in the search results
    text: str
    score: float
    line_start: int  # where the sentence stands in the source file
    line_end: int
    said_from: int = 0  # a transcript or log entry: where its words start, after the time stamp and speaker

    @property
    def said(self) -> str:
        """The words of the sentence: an entry without its time stamp and speaker."""
        return self.text[self.said_from:]

    @property
    def spoken(self) -> str:
        """What the model is shown: an entry without its time stamp, its speaker kept ("CDR (EVA): The
        laser reflector is installed"). A stamp such as 04:15:03:57 is 11 of the 135M model's tokens:
        four entries' stamps were a seventh of a transcript prompt, which the model reads before its
        first word (docs/retrieval.md, "Transcript latency")."""
        if not self.said_from:
            return self.text
        prefix = record_prefix(self.text)
        label = prefix[1] if prefix else ""
        return f"{label}: {self.said}" if label else self.said


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression: the question's content words, quoted, OR-ed."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS and len(w) > 1]
    unique = list(dict.fromkeys(words))
    return " OR ".join(f'"{w}"' for w in unique)


def search(
    *,
    store: Store,
    embedder: Embedder,
    query: str,
    k: int = 5,
    mode: SearchMode = "hybrid",
    candidates: int = 50,
    rrf_k: int = 60,
    weights: tuple[float, float] = (1.0, 1.0),
    vectors: "VectorMatrix | None" = None,
    files_only: bool = True,
    query_vector: "np.ndarray | None" = None,
) -> list[ScoredChunk]:
    """The ``k`` best chunks for ``query``. ``vectors``: the daemon's cached matrix (else loaded);
    ``query_vector``: the query already embedded (else embedded here).

    ``weights``: how much the BM25 and the dense ranking each count in the fused score.
    ``files_only``: drop chunks whose file is gone; False for stored records that are not files
    (``indexer.index_records``)."""
    from .vectors import load_vectors

    matrix = vectors if vectors is not None else load_vectors(store, model=embedder.name)
    if not len(matrix):
        return []
    qvec = embedder.embed([query])[0] if query_vector is None else query_vector
    position = matrix.position

    dense_ranked: list[int] = []
    sims: dict[int, float] = {}
    if mode in ("hybrid", "dense"):
        dense_ranked, dense_sims = matrix.nearest(qvec, candidates)
        sims = {cid: float(s) for cid, s in zip(dense_ranked, dense_sims)}
    bm25_ranked: list[int] = []
    if mode in ("hybrid", "bm25"):
        bm25_ranked = [cid for cid, _ in store.bm25(fts_query(query), limit=candidates) if cid in position]
        sims.update(matrix.similarity(qvec, [cid for cid in bm25_ranked if cid not in sims]))

    fused: dict[int, float] = {}
    for ranked, weight in zip((bm25_ranked, dense_ranked), weights):
        for rank, cid in enumerate(ranked, start=1):
            fused[cid] = fused.get(cid, 0.0) + weight / (rrf_k + rank)
    ranked = sorted(fused, key=lambda cid: (-fused[cid], -sims[cid]))
    records = store.chunks(ranked[: k * 3])
    # A file deleted since it was indexed is never cited, even before the next index run sees it.
    exists: dict[str, bool] = {}
    best = [cid for cid in ranked[: k * 3]
            if cid in records and (not files_only or exists.setdefault(records[cid].path, os.path.exists(records[cid].path)))][:k]
    bm25_pos = {cid: r for r, cid in enumerate(bm25_ranked, start=1)}
    dense_pos = {cid: r for r, cid in enumerate(dense_ranked, start=1)}
    return [
        ScoredChunk(
            chunk=records[cid],
            score=fused[cid],
            similarity=sims[cid],
            bm25_rank=bm25_pos.get(cid),
            dense_rank=dense_pos.get(cid),
        )
        for cid in best
        if cid in records
    ]


def _is_record_block(lines: list[str]) -> bool:
    """A chunk of a log or transcript: at least 3 entries, most of its lines start like one."""
    filled = [line for line in lines if line.strip() and not is_note_line(line)]
    return len(filled) >= 3 and sum(1 for line in filled if record_prefix(line)) >= 0.6 * len(filled)


def is_record_chunk(text: str) -> bool:
    """``text`` (a chunk's) is a block of a log or transcript."""
    return _is_record_block(text.split("\n"))


def evidence_units(text: str, *, records: bool | None = None) -> list[tuple[int, int]]:
    """(start, end) of each unit of a chunk's text that can be evidence: its sentences, or in a log
    or transcript each entry whole, with its time stamp and speaker (a line not starting like an
    entry continues the one before it; notes are left out). Split into sentences, an utterance
    leaves "Roger." and "Houston." as units and parts its answer from its question: on the Apollo
    11 transcript the best two sentences hold the gold answer for 51% of questions, the best two
    entries for 69% (docs/retrieval.md). ``records``: whether ``text`` is a log or transcript block,
    if the caller already knows."""
    lines = text.split("\n")
    if not (_is_record_block(lines) if records is None else records):
        return sentence_spans_within_lines(text)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return [(a, b) for a, b, note in entry_spans(lines, starts) if not note]


# Evidence units embedded lately, per embedder (a model object: the daemon's lives as long as it
# does), by text: questions about one part of the documents meet the same chunks, and embedding
# their units was a third of a warm transcript question (docs/retrieval.md, "Transcript latency").
# At most 4096 units of 384 floats an embedder: 6 MiB.
_UNIT_CACHES: "weakref.WeakKeyDictionary[object, OrderedDict[str, np.ndarray]]" = weakref.WeakKeyDictionary()
_UNIT_CACHE_SIZE = 4096
_UNIT_LOCK = threading.Lock()


def _unit_vectors(embedder: Embedder, texts: list[str]) -> "np.ndarray":
    """``embedder.embed(texts)``, the units this embedder embedded lately taken from its cache."""
    import numpy as np

    with _UNIT_LOCK:
        try:
            cache = _UNIT_CACHES.setdefault(embedder, OrderedDict())
        except TypeError:  # an embedder that cannot be referenced weakly is not cached
            cache = OrderedDict()
        known = {t: cache[t] for t in texts if t in cache}
        for t in known:
            cache.move_to_end(t)
    new = [t for t in dict.fromkeys(texts) if t not in known]
    if new:
        known.update(zip(new, embedder.embed(new)))
        with _UNIT_LOCK:
            for t in new:
                cache[t] = known[t]
            while len(cache) > _UNIT_CACHE_SIZE:
                cache.popitem(last=False)
    return np.stack([known[t] for t in texts])


def best_sentences(*, query: str, chunks: list[ScoredChunk], embedder: Embedder, limit: int,
                   query_vector: "np.ndarray | None" = None) -> list[Sentence]:
    """The ``limit`` sentences (``evidence_units``: in a transcript, entries) of ``chunks`` closest
    to ``query``, best first, each once.

    A 135M model answers far better from a few sentences than from whole chunks (measured on our
    QA set: token F1 0.40 from the best 4 sentences of the top 3 chunks, 0.31 from the top chunk).
    Score: cosine similarity plus 0.3 x the share of the query's content words in the sentence."""
    sentences: list[tuple[int, str, tuple[int, int]]] = []
    said_from: dict[str, int] = {}
    seen: set[str] = set()  # neighbouring chunks overlap: a sentence counts once
    for index, found in enumerate(chunks):
        text = found.chunk.text
        records = _is_record_block(text.split("\n"))
        for start, end in evidence_units(text, records=records):
            sentence = " ".join(text[start:end].split())
            if len(sentence) > 3 and sentence not in seen:
                seen.add(sentence)
                sentences.append((index, sentence, found.chunk.source_lines(start, end)))
                prefix = record_prefix(sentence) if records else None
                said_from[sentence] = prefix[0] if prefix else 0
    if not sentences:
        return []
    if query_vector is None:
        query_vector = embedder.embed([query])[0]
    vectors = _unit_vectors(embedder, [s for _, s, _ in sentences])
    sims = vectors @ query_vector
    words = content_words(query)
    scored = [
        Sentence(index, text, float(sims[i]) + 0.3 * (len(words & content_words(text)) / max(1, len(words))),
                 lines[0], lines[1], said_from[text])
        for i, (index, text, lines) in enumerate(sentences)
    ]
    best = sorted(scored, key=lambda s: -s.score)[:limit]
    return _with_reply(best, scored) if best and best[0].said_from and limit > 1 else best


def _with_reply(best: list[Sentence], scored: list[Sentence]) -> list[Sentence]:
    """In a log or transcript, the entry after the best one second: what was said in reply. An
    exchange's answer is the turn after its question ("What's your glycol evap out temp?" / "48
    degrees"), which shares few words with a question about it: on the two Apollo 11 sets, the best
    entry holds the gold answer for 62% of questions, the best entry or its reply for 69%
    (docs/retrieval.md, "s25: the reply")."""
    at = scored.index(best[0])
    if at + 1 >= len(scored) or scored[at + 1].chunk_index != best[0].chunk_index or not scored[at + 1].said_from:
        return best
    reply = scored[at + 1]
    rest = [s for s in best[1:] if s is not reply]
    return [best[0], reply, *rest][:len(best)]


def question_coverage(*, query: str, chunks: list[ScoredChunk], counts: dict[str, int], total: int) -> float:
    """The share of the question's content words found in ``chunks`` (text and heading), each word
    weighted by its rarity in the index (IDF from ``counts``: chunks holding it, of ``total``): a
    near-miss question usually names one rare thing the passages never mention ("splashdown",
    "Soviet", "quarantine"), while the words it shares with them are common ones. 1.0 when the
    question has no content word."""
    import math

    words = {w for w in content_words(query) if len(w) > 1}
    if not words:
        return 1.0
    found = {crude_stem(w) for c in chunks for w in content_words(f"{c.chunk.context} {c.chunk.text}")}
    weight = {w: math.log((total + 1) / (counts.get(w, 0) + 0.5)) for w in words}
    whole = sum(weight.values())
    if whole <= 0:
        return 1.0
    return sum(v for w, v in weight.items() if crude_stem(w) in found) / whole


# A question asking how many / how far / what year... is answered by a number (a figure, a number
# word, a day or a month); one whose best passage names no number asks what the passage does not
# say: "How far from the LM was the passive seismometer placed?" against "the passive seismometer
# has been deployed manually" shares every rare word and scores 0.76, above any word or cosine bar.
_ASKS_QUANTITY = re.compile(
    r"\bhow (many|much|long|far|deep|old|often|fast|big|large|high|tall|wide|heavy)\b|"
    r"\bwhat (percentage|percent|number|amount|speed|temperature|weight|distance|size|year)\b|"
    r"\b(which|what) (year|day)\b", re.I)
# "may" and "march" are verbs too: not counted as a quantity.
_QUANTITY_WORDS = (NUMBER_WORDS | WEEKDAYS | MONTHS | {"zero", "once"}) - {"may", "march"}


def asks_for_quantity(question: str) -> bool:
    """The question asks for a number, a measure, a year or a day ("how far", "what year")."""
    return bool(_ASKS_QUANTITY.search(question))


def quantity_words(text: str) -> set[str]:
    """The figures ("108", "3" of "3.5"), number words, days and months of ``text``, lower-cased."""
    return {t for t in re.findall(r"[a-z]+|\d+", text.lower()) if t.isdigit() or t in _QUANTITY_WORDS}


def quantity_missing(*, question: str, sentences: list[Sentence], near: float) -> bool:
    """True when ``question`` asks for a quantity and none of the evidence units scoring within
    ``near`` of the best one (``sentences``: best first; an entry's words, not its time stamp) names a
    number the question does not already name."""
    if not sentences or not asks_for_quantity(question):
        return False
    asked = quantity_words(question)
    top = sentences[0].score
    return not any(quantity_words(s.said) - asked for s in sentences if s.score >= top - near)
