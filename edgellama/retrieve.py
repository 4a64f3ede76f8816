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
from typing import TYPE_CHECKING, Iterable

from .config import SearchMode
from .embed import Embedder
from .store import ChunkRecord, Store, UnitVectors
from .text import (MONTHS, NUMBER_WORDS, STOPWORDS, WEEKDAYS, content_words, crude_stem, entry_spans, is_note_line, record_prefix,
                   sentence_spans_within_lines)

if TYPE_CHECKING:
    import numpy as np

    from .vectors import VectorMatrix

__all__ = ["ScoredChunk", "Sentence", "search", "scored_chunk_to_dict", "best_sentences", "evidence_units", "is_record_chunk",
           "ChunkUnits", "chunk_units", "stored_unit_vectors",
           "quoted_phrases", "speaker_names", "speakers_named", "question_coverage", "asks_for_quantity", "quantity_words", "quantity_missing", "asked_unit", "units_named",
           "unit_missing", "asks_for_measure", "measure_words", "fitting_quantities", "quantity_unfit",
           "preamble_end", "without_words"]



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

    # The chunks holding a phrase the question quotes, word for word: a third ranking in the fusion.
    phrases = quoted_phrases(query) if mode in ("hybrid", "bm25") else []
    phrase_ranked = [cid for cid, _ in store.bm25(" OR ".join(f'"{p}"' for p in phrases), limit=candidates)
                     if cid in position] if phrases else []
    sims.update(matrix.similarity(qvec, [cid for cid in phrase_ranked if cid not in sims]))

    fused: dict[int, float] = {}
    for ranked, weight in zip((bm25_ranked, dense_ranked, phrase_ranked), (*weights, weights[0])):
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


@dataclass(frozen=True)
class ChunkUnits:
    """A chunk's evidence units as ``best_sentences`` scores them, and what is embedded of each."""

    records: bool  # the chunk is a block of a log or transcript: its units are entries
    spans: tuple[tuple[int, int], ...]  # (start, end) in the chunk's text
    texts: tuple[str, ...]  # each unit's words, white space collapsed: what is embedded

    @property
    def key(self) -> str:
        """The hash of the unit texts: stored with their vectors, so vectors stored under other
        splitting rules are never misread as these units' (store.UnitVectors)."""
        import hashlib

        return hashlib.sha256("\n".join(self.texts).encode("utf-8", "surrogatepass")).hexdigest()


def chunk_units(text: str) -> ChunkUnits:
    """The evidence units of a chunk's ``text`` (``evidence_units``), those of more than 3 characters."""
    records = _is_record_block(text.split("\n"))
    spans, texts = [], []
    for start, end in evidence_units(text, records=records):
        unit = " ".join(text[start:end].split())
        if len(unit) > 3:
            spans.append((start, end))
            texts.append(unit)
    return ChunkUnits(records, tuple(spans), tuple(texts))


def stored_unit_vectors(units: ChunkUnits, stored: UnitVectors | None) -> "np.ndarray | None":
    """The rows of ``stored`` as one float32 row per unit of ``units``, or None when they are not
    these units' vectors (other units, another count)."""
    import numpy as np

    if stored is None or stored.units_key != units.key:
        return None
    rows = np.frombuffer(stored.vectors, dtype=np.float32)
    if stored.dim <= 0 or rows.size != stored.dim * len(units.texts):
        return None
    return rows.reshape(len(units.texts), stored.dim)


# Evidence units embedded lately, per embedder (a model object: the daemon's lives as long as it
# does), by text: questions about one part of the documents meet the same chunks, and embedding
# their units was a third of a warm transcript question (docs/retrieval.md, "Transcript latency").
# Units whose vectors were stored at index time (a log's or transcript's entries) are read from the
# store instead. At most 4096 units of 384 floats an embedder: 6 MiB.
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


# A phrase the question quotes ("What did Armstrong say after \"Houston, Tranquility Base here\"?") is
# the words the user remembers: a unit that holds it word for word comes first (s26).
QUOTED_BONUS = 0.5
_QUOTED = re.compile(r'"([^"]{4,})"|\u201c([^\u201d]{4,})\u201d')


def _plain(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def quoted_phrases(question: str) -> list[str]:
    """The phrases ``question`` quotes in double quotes, lower-cased, punctuation left out."""
    return [p for p in (_plain(a or b) for a, b in _QUOTED.findall(question)) if p]


def best_sentences(*, query: str, chunks: list[ScoredChunk], embedder: Embedder, limit: int,
                   query_vector: "np.ndarray | None" = None, speakers: dict[str, str] | None = None,
                   store: Store | None = None, rarity: tuple[dict[str, int], int] | None = None,
                   read_back: bool = False) -> list[Sentence]:
    """The ``limit`` sentences (``evidence_units``: in a transcript, entries) of ``chunks`` closest
    to ``query``, best first, each once. ``store``: where the units' vectors stored at index time
    are read (one query for ``chunks``); the others are embedded now.

    A 135M model answers far better from a few sentences than from whole chunks (measured on our
    QA set: token F1 0.40 from the best 4 sentences of the top 3 chunks, 0.31 from the top chunk).
    Score: cosine similarity plus 0.3 x the share of the query's content words in the sentence, plus
    ``QUOTED_BONUS`` when it holds a phrase the question quotes; with ``read_back`` (an answer's
    evidence, not a summary's sentences, which are shown alone), a prose sentence that refers back
    (``_REFERS_BACK``) is read with the sentence before it. ``rarity``: (chunks holding each word of
    the question, chunks in the index), which ranks a transcript's entries (``RARE_WORDS_WEIGHT``)
    without changing their score. ``speakers``: the speakers the
    question names (``speakers_named``), whose names an entry by them counts as holding."""
    import numpy as np

    sentences: list[tuple[int, str, tuple[int, int]]] = []
    said_from: dict[str, int] = {}
    before: dict[str, str] = {}  # a prose sentence that refers back (_REFERS_BACK): the sentence before it
    stored_rows: dict[str, "np.ndarray"] = {}
    stored = store.unit_vectors([c.chunk.id for c in chunks], model=embedder.name) if store is not None else {}
    seen: set[str] = set()  # neighbouring chunks overlap: a sentence counts once
    for index, found in enumerate(chunks):
        text = found.chunk.text
        units = chunk_units(text)
        rows = stored_unit_vectors(units, stored.get(found.chunk.id))
        for i, ((start, end), sentence) in enumerate(zip(units.spans, units.texts)):
            if rows is not None:
                stored_rows.setdefault(sentence, rows[i])
            if read_back and i and not units.records and _REFERS_BACK.match(sentence):
                before.setdefault(sentence, units.texts[i - 1])
            if sentence not in seen:
                seen.add(sentence)
                sentences.append((index, sentence, found.chunk.source_lines(start, end)))
                prefix = record_prefix(sentence) if units.records else None
                said_from[sentence] = prefix[0] if prefix else 0
    if not sentences:
        return []
    if query_vector is None:
        query_vector = embedder.embed([query])[0]
    missing = [s for _, s, _ in sentences if s not in stored_rows]
    embedded = dict(zip(missing, _unit_vectors(embedder, missing))) if missing else {}
    vectors = np.stack([stored_rows[s] if s in stored_rows else embedded[s] for _, s, _ in sentences])
    sims = vectors @ query_vector
    similarity = {text: float(sims[i]) for i, (_, text, _) in enumerate(sentences)}
    holds = {text: content_words(text) | _speaker_words(text, speakers) for _, text, _ in sentences}
    words = content_words(query)
    phrases = quoted_phrases(query)

    def score(text: str) -> float:
        cosine, held = similarity[text], holds[text]
        if text in before:  # "It was re-established in April 1991": read with the sentence it refers to
            cosine = max(cosine, (cosine + similarity[before[text]]) / 2)
            held = held | content_words(before[text])
        return (cosine + 0.3 * len(words & held) / max(1, len(words))
                + (QUOTED_BONUS if phrases and any(p in _plain(text) for p in phrases) else 0.0))

    scored = [Sentence(index, text, score(text), lines[0], lines[1], said_from[text]) for index, text, lines in sentences]
    rare = _rarity_share(words, rarity) if rarity else {}

    def rank(s: Sentence) -> float:  # a transcript entry: its score plus the rarity of the question's words it holds
        if not rare or not s.said_from:
            return s.score
        return s.score + RARE_WORDS_WEIGHT * sum(v for w, v in rare.items() if w in holds[s.text])

    best = sorted(scored, key=lambda s: -rank(s))[:limit]
    return _with_reply(best, scored) if best and best[0].said_from and limit > 1 else best


# A transcript's entries are ranked by their score plus RARE_WORDS_WEIGHT x the share of the
# question's words they hold, each word weighted by its rarity in the index (IDF): "What K factor
# did Houston give Eagle?" wants "K factor coming at you: 90 00 00 15", not "Eagle, Houston" greetings
# that echo the question's names. The score itself, which abstention reads, is unchanged: added to
# it, the bonus gave near-misses passages (docs/retrieval.md, "Stop 27"). 0.3, the middle of the
# range 0.2-0.4 that gave the same reads on both Apollo 11 sets.
RARE_WORDS_WEIGHT = 0.3


def _rarity_share(words: set[str], rarity: tuple[dict[str, int], int]) -> dict[str, float]:
    """Each of ``words``' share of their summed rarity in the index (``rarity``: chunks holding each
    word, chunks in all), a word's rarity being its IDF, log((chunks + 1) / (chunks holding it + 0.5))."""
    import math

    counts, total = rarity
    idf = {w: math.log((total + 1) / (counts.get(w, 0) + 0.5)) for w in words}
    whole = sum(idf.values())
    return {w: v / whole for w, v in idf.items()} if whole > 0 else {}


# A prose sentence opening on a word that refers back ("It was re-established in April 1991", "His
# patents earned him ...") names its subject only in the sentence before: it is scored on the two
# together (the better of its own cosine and the mean of both; the words of both). The gold answer
# in the 4 evidence sentences: xquad-dev 90.0 -> 91.6%, corpus/ 81.9 -> 84.1% (docs/retrieval.md, "Stop 27").
# An answer's evidence only: a summary shows its sentences alone, where "It was ..." says nothing.
_REFERS_BACK = re.compile(r"(?:it|he|she|they|this|these|those|its|his|her|their|such|as such|in this way)\b", re.I)


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


def question_coverage(*, query: str, chunks: list[ScoredChunk], counts: dict[str, int], total: int,
                      speakers: dict[str, str] | None = None) -> float:
    """The share of the question's content words found in ``chunks`` (text and heading), each word
    weighted by its rarity in the index (IDF from ``counts``: chunks holding it, of ``total``): a
    near-miss question usually names one rare thing the passages never mention ("splashdown",
    "Soviet", "quarantine"), while the words it shares with them are common ones. 1.0 when the
    question has no content word. ``speakers``: as for ``best_sentences``."""
    words = {w for w in content_words(query) if len(w) > 1}
    if not words:
        return 1.0
    found = {crude_stem(w) for c in chunks
             for w in content_words(f"{c.chunk.context} {c.chunk.text}") | _speaker_words(c.chunk.text, speakers)}
    share = _rarity_share(words, (counts, total))
    return sum(v for w, v in share.items() if crude_stem(w) in found) if share else 1.0


# A question asking how many / how far / what year... is answered by a number (a figure, a number
# word, a day or a month); one whose best passage names no number asks what the passage does not
# say: "How far from the LM was the passive seismometer placed?" against "the passive seismometer
# has been deployed manually" shares every rare word and scores 0.76, above any word or cosine bar.
_ASKS_QUANTITY = re.compile(
    r"\bhow (many|much|long|far|deep|old|often|fast|big|large|high|tall|wide|heavy)\b|"
    r"\bwhat (?:(?:is|was|are|were) the )?(percentage|percent|number|amount|speed|temperature|weight|distance|size|"
    r"height|depth|altitude|velocity|year|cost|price|budget|salary)\b|"
    r"\b(which|what) (year|day)\b", re.I)
# "may" and "march" are verbs too: not counted as a quantity.
_QUANTITY_WORDS = (NUMBER_WORDS | WEEKDAYS | MONTHS | {"zero", "once"}) - {"may", "march"}


_ASKS_MEASURE = re.compile(
    r"\bhow (far|fast|heavy|deep|high|tall|wide)\b|"
    r"\bwhat (?:(?:is|was|are|were) the )?(speed|temperature|weight|distance|height|depth|altitude|velocity)\b", re.I)
# What each measure is given in: "how far" wants a length, not "four" tanks or "5,000 litres".
_MEASURE_KIND = {"far": "length", "deep": "length", "high": "length", "tall": "length", "wide": "length",
                 "distance": "length", "height": "length", "depth": "length", "altitude": "length",
                 "fast": "speed", "speed": "speed", "velocity": "speed", "heavy": "mass", "weight": "mass",
                 "temperature": "temperature"}
# Besides the units of _UNITS; a speed may also be a length per time ("30 km/h", "miles per hour").
_MEASURE_UNITS = {"degree": "temperature", "degrees": "temperature", "°": "temperature", "mph": "speed",
                  "kph": "speed", "knot": "speed", "knots": "speed", "nautical": "length"}
_MEASURE_JOINS = frozenset({"a", "an", "of", "and", "or", "to", "half"})  # "half a mile", "1 or 2 inches"


# A sum of money ("how much did the bridge cost?", "what was the price") is given in a currency, and
# "what year" by a year: "one season" is no cost, "30 kVA" no year (s26).
_ASKS_MONEY = re.compile(
    r"\bhow much (?:money\b|(?:\S+ ){0,8}?(?:cost|costs|pay|paid|earn|earned|spend|spent|charge|charged|worth)\b)|"
    r"\bwhat (?:(?:is|was|are|were) the )?(?:\w+ )?(?:cost|price|budget|salary|fee)\b", re.I)
_ASKS_YEAR = re.compile(r"\b(?:which|what) year\b", re.I)
_CURRENCY = (r"(?:dollars?|euros?|pounds?|francs?|yen|cents?|rupees?|pesos?|marks|guineas?|shillings?|crowns?|"
             r"usd|eur|gbp)")
_MONEY = re.compile(r"[$£€¥]\s?(\d[\d,.]*)|\b(\d[\d,.]*|[a-z]+)\s?(?:(?:million|billion|thousand|hundred|m|bn)\s)?"
                    + _CURRENCY + r"\b", re.I)
_YEARS = re.compile(r"(?<![\d,.])(\d{3,4})s?(?![\d,.]?\d)|\b(\d{1,4})\s?(?:bc|bce|ad|ce)\b|\b(?:ad|ce)\s?(\d{1,4})\b",
                    re.I)


def asks_for_measure(question: str) -> str:
    """The kind of measure the question asks for ("how far": "length"; "speed", "mass",
    "temperature", "money", "year"), or ""."""
    if _ASKS_MONEY.search(question):
        return "money"
    if _ASKS_YEAR.search(question):
        return "year"
    m = _ASKS_MEASURE.search(question)
    return _MEASURE_KIND[(m.group(1) or m.group(2)).lower()] if m else ""


def money_words(text: str) -> set[str]:
    """The numbers of ``text`` given as a sum of money ("$5 million", "20 dollars", "ten francs")."""
    found = set()
    for m in _MONEY.finditer(text):
        number = (m.group(1) or m.group(2)).lower()
        found |= quantity_words(number) if not number.isalpha() or number in _QUANTITY_WORDS else set()
    return found


def year_words(text: str) -> set[str]:
    """The years of ``text``: "1886", "the 1980s", "500 BC", "AD 70" (not "6,140" or "30 kVA")."""
    years = {next(g for g in m.groups() if g) for m in _YEARS.finditer(text)}
    return {y for y in years if int(y) <= 2100}


def _measure_kind(word: str) -> str:
    unit = _unit(word)
    return _UNIT_KIND[unit] if unit else _MEASURE_UNITS.get(word, "")


def measure_words(text: str, *, kind: str = "") -> set[str]:
    """The numbers of ``text`` given with a unit ("4 miles", "half a mile", "16 °C", "5km"), of the
    ``kind`` of measure if one is given: the figures and number words right before a unit word, an
    article or "of" between them allowed, and "a" or "an" right before one ("an inch")."""
    tokens = re.findall(r"\d+|[a-z]+|°", text.lower())
    wanted = {kind, "length"} if kind == "speed" else {kind}
    out = set()
    for i, t in enumerate(tokens):
        if t.isdigit() or t in _QUANTITY_WORDS or t in ("a", "an"):  # "an inch deep"
            after = [w for w in tokens[i + 1:i + 4] if not w.isdigit()]
            after = after[:1] if t in ("a", "an") else [w for w in after if w not in _MEASURE_JOINS][:1]
            found = _measure_kind(after[0]) if after else ""
            if found and (not kind or found in wanted):
                out.add(t)
    return out


def asks_for_quantity(question: str) -> bool:
    """The question asks for a number, a measure, a year or a day ("how far", "what year")."""
    return bool(_ASKS_QUANTITY.search(question))


def quantity_words(text: str) -> set[str]:
    """The figures ("108", "3" of "3.5"), number words, days and months of ``text``, lower-cased."""
    return {t for t in re.findall(r"[a-z]+|\d+", text.lower()) if t.isdigit() or t in _QUANTITY_WORDS}


_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")
_ASKS_COUNT = re.compile(r"\bhow many\b(?! (years|decades|centuries)\b)", re.I)


def fitting_quantities(question: str, text: str) -> set[str]:
    """The numbers of ``text`` of the kind ``question`` asks for, besides those it names: with a unit
    for a measure ("how far": "4 miles"), a count for "how many" (not a year such as "1565", not a
    share such as "5.3%"), any number for the other quantity questions."""
    kind = asks_for_measure(question)
    if kind == "money":
        found = money_words(text)
    elif kind == "year":
        found = year_words(text)
    elif kind:
        found = measure_words(text, kind=kind)
    elif _ASKS_COUNT.search(question):
        found = {t for t in quantity_words(re.sub(r"\d[\d.,]*\s?%", " ", text)) if not _YEAR.match(t)}
    else:
        found = quantity_words(text)
    return found - quantity_words(question)


def _near_best(sentences: list[Sentence], near: float) -> list[Sentence]:
    """The evidence units scoring within ``near`` of the best one (not always the first: a
    transcript's entries are ranked with the rarity of the words they hold)."""
    return [s for s in sentences if s.score >= max(x.score for x in sentences) - near] if sentences else []


def quantity_missing(*, question: str, sentences: list[Sentence], near: float) -> bool:
    """True when ``question`` asks for a quantity and none of the evidence units scoring within
    ``near`` of the best one (``sentences``: best first; an entry's words, not its time stamp) names a
    number of the kind it asks for that the question does not already name (``fitting_quantities``): a
    measure needs a unit of its kind ("4 miles" for "how far", not "two core tubes" for "what speed"),
    a count is not a year."""
    if not sentences or not asks_for_quantity(question):
        return False
    return not any(fitting_quantities(question, s.said) for s in _near_best(sentences, near))


def _bare_number(text: str) -> set[str]:
    """The numbers of ``text`` when it gives them with no unit, share or year ("zero", "40"), else none."""
    if "%" in text or units_named(text) or any(_measure_kind(w) for w in re.findall(r"[a-z]+|°", text.lower())):
        return set()
    return {t for t in quantity_words(text) if not _YEAR.match(t)}


def quantity_unfit(*, question: str, answer: str, sentences: list[Sentence], near: float) -> bool:
    """True when ``question`` asks for a quantity, the short answer ``answer`` is none of the kind
    it asks for ("1565" for "how many soldiers", "present-day" for "how tall"; a bare number such as
    "zero" may answer a measure), and no evidence unit scoring within ``near`` of the best names one
    either: the passages say something else."""
    if not sentences or not asks_for_quantity(question) or fitting_quantities(question, answer):
        return False
    kind = asks_for_measure(question)
    if kind not in ("", "money", "year") and _bare_number(answer) - quantity_words(question):
        return False  # "zero" for "what temperature was the camera showing?": the unit may go without saying
    return not any(fitting_quantities(question, s.said) for s in _near_best(sentences, near))


# A quantity asked for in a unit ("how many kilograms") is not what the documents say when the
# passages give it only in another unit of the same kind ("20 pounds"): a conversion is the
# reader's, not a quote of the documents. Units, by kind; abbreviations as written after a figure.
_UNITS = {
    "mass": "kilogram kilo kg gram g milligram mg pound lb lbs ounce oz ton tonne",
    "length": "metre meter m kilometre kilometer km centimetre centimeter cm millimetre millimeter mm mile mi "
              "foot feet ft inch yard yd",
    "volume": "litre liter l millilitre milliliter ml gallon gal pint quart cup",
    "energy": "calorie cal kcal kilocalorie joule kj kilojoule",
    "temperature": "celsius centigrade fahrenheit kelvin",
    "time": "minute min hour hr h day week month year decade century",
}
# Other spellings of a unit, by the one it is counted as ("kg" and "kilo" are "kilogram").
_UNIT_ALIASES = {
    "kcal": "calorie", "kilocalorie": "calorie", "cal": "calorie", "kilo": "kilogram", "kg": "kilogram", "g": "gram",
    "mg": "milligram", "lb": "pound", "lbs": "pound", "oz": "ounce", "tonne": "ton", "meter": "metre", "m": "metre",
    "kilometer": "kilometre", "km": "kilometre", "centimeter": "centimetre", "cm": "centimetre",
    "millimeter": "millimetre", "mm": "millimetre", "mi": "mile", "feet": "foot", "ft": "foot", "yd": "yard",
    "liter": "litre", "l": "litre", "milliliter": "millilitre", "ml": "millilitre", "gal": "gallon", "kj": "kilojoule",
    "min": "minute", "hr": "hour", "h": "hour", "centigrade": "celsius"}
_UNIT_KIND = {word: kind for kind, words in _UNITS.items() for word in words.split()}
# A word of one or two letters in a question ("in m") is not read as the unit it asks in.
_SHORT_UNIT = 2
_ASKED_UNIT = re.compile(r"\bhow (?:many|much) (\w+)|\bin (\w+)\W*$", re.I)


def _unit(word: str) -> str | None:
    """The unit a word names, in one spelling ("kilograms", "kg" -> "kilogram"), or None."""
    word = word.lower()
    for form in (word, word[:-2] if word.endswith("es") else word, word[:-1] if word.endswith("s") else word):
        if form in _UNIT_KIND:
            return _UNIT_ALIASES.get(form, form)
    return None


def units_named(text: str) -> set[str]:
    """The units ``text`` gives a quantity in: a unit right after a number ("20 pounds", "5km",
    "half a mile", "a day"); a unit word without one ("every year", "pounds of rock") gives none."""
    tokens = re.findall(r"\d+|[a-z]+", text.lower())
    found = set()
    for i, t in enumerate(tokens):
        if t.isdigit() or t in _QUANTITY_WORDS or t in ("a", "an"):
            after = [w for w in tokens[i + 1:i + 3] if w not in _MEASURE_JOINS or t in ("a", "an")][:1]
            unit = _unit(after[0]) if after else None
            if unit:
                found.add(unit)
    return found


def asked_unit(question: str) -> str | None:
    """The unit a question asks a quantity in ("How many kilograms ...", "... in miles?"), or None."""
    m = _ASKED_UNIT.search(question)
    word = m and (m.group(1) or m.group(2))
    return _unit(word) if word and len(word) > _SHORT_UNIT else None


def unit_missing(*, question: str, sentences: list[Sentence], near: float) -> str:
    """The unit ``question`` asks a quantity in when the evidence units scoring within ``near`` of
    the best give a quantity of that kind only in other units ("pounds" for "how many kilograms");
    "" otherwise (no unit asked, the asked unit found, or no unit of its kind at all)."""
    unit = asked_unit(question)
    if not unit or not sentences:
        return ""
    kind = _UNIT_KIND[unit]
    given = set().union(*(units_named(s.said) for s in _near_best(sentences, near)))
    others = {u for u in given if _UNIT_KIND.get(u) == kind and u != unit}
    return unit if others and unit not in given else ""


def _entries_follow(lines: list[str]) -> bool:
    """The next few filled lines are entries of a log or transcript, the first of them stamped with
    a time (a preamble's "Speakers: ..." line starts like an entry too, but with no stamp)."""
    filled = [line for line in lines if line.strip()][:6]
    return (bool(filled) and record_prefix(filled[0]) is not None and filled[0].lstrip(" [")[:1].isdigit()
            and _is_record_block(filled))


_PREAMBLE_LOG = 10  # filled lines after a preamble, most of them entries: a log, not a few "Weekly:" rules


# A transcript's preamble often keys its speakers' labels ("Speakers: CDR = Commander Neil Armstrong;
# CMP = Command Module Pilot Michael Collins"): a question names the person ("What did Collins excuse
# himself to have?"), the entries only the label ("CMP (COLUMBIA): ... I'm going to have a cup of
# coffee"), so the name alone never meets them (s26).
_SPEAKER_KEY = re.compile(r"\b([A-Z][A-Z0-9]{1,5})\s*=\s*(.+?)(?=;|\.\s|\s[A-Z][A-Z0-9]{1,5}\s*=|$)")


def speaker_names(first_chunks: list[ChunkRecord]) -> dict[str, str]:
    """The speakers a log's preamble keys (the text before ``preamble_end``), by the capitalized
    words of each label's description, lower-cased ("collins": "CMP", "houston": "CC"); a word in two
    descriptions ("pilot") names neither. ``first_chunks``: the document's first chunks, in order."""
    end = preamble_end(first_chunks)
    lines = [line for chunk, start, line in _chunk_lines(first_chunks) if end and chunk.source_lines(start, start + 1)[0] < end]
    names: dict[str, set[str]] = {}
    for label, described in _SPEAKER_KEY.findall(" ".join(lines)):
        for word in re.findall(r"\b[A-Z][a-z]+[A-Za-z]*", described):
            names.setdefault(word.lower(), set()).add(label)
    return {word: next(iter(labels)) for word, labels in names.items() if len(labels) == 1}


def speakers_named(question: str, speakers: dict[str, str]) -> dict[str, str]:
    """The words of ``question`` that name a speaker of ``speakers`` (``speaker_names``), written
    with a capital as a name is, not as its first word: {"collins": "CMP"}."""
    words = re.findall(r"\b[A-Z][a-z]+[A-Za-z]*", question)[0 if question[:1].islower() else 1:] if speakers else []
    return {w.lower(): speakers[w.lower()] for w in words if w.lower() in speakers}


def without_words(text: str, words: Iterable[str]) -> str:
    """``text`` without ``words`` (whole words, any case). A question naming a transcript's speakers
    ("What did Aldrin say right after Armstrong called it a magnificent sight?") is searched by
    full text without their names, which only the preamble's list of speakers spells: with them
    that list ranked first and the entries holding "magnificent sight" fell out of the top 5
    (docs/retrieval.md, "Stop 27"). The question's vector keeps them."""
    words = list(words)
    return re.sub(r"\b(?:%s)\b" % "|".join(map(re.escape, words)), " ", text, flags=re.I) if words else text


def _speaker_words(text: str, speakers: dict[str, str] | None) -> set[str]:
    """The names of ``speakers`` whose label ``text`` (an entry, or a chunk) gives as a speaker's."""
    if not speakers:
        return set()
    labels = {m.group(1) for m in re.finditer(r"(?m)^\S+\s+([A-Z][A-Z0-9]{1,5})\b", text)}
    return {w for w, label in speakers.items() if label in labels}


def _chunk_lines(chunks: list[ChunkRecord]) -> list[tuple[ChunkRecord, int, str]]:
    """(chunk, offset in its text, line) of every line of ``chunks``, in order."""
    rows = []
    for chunk in chunks:
        start = 0
        for line in chunk.text.split("\n"):
            rows.append((chunk, start, line))
            start += len(line) + 1
    return rows


def preamble_end(first_chunks: list[ChunkRecord]) -> int:
    """The line where a log's or transcript's entries begin, when text stands before them (a title,
    what its columns mean, its list of speakers); 0 when the document does not start that way.
    ``first_chunks``: the document's first chunks, in order (the preamble may fill the first)."""
    rows = _chunk_lines(first_chunks)
    lines = [line for _, _, line in rows]
    for k, (chunk, start, _) in enumerate(rows):
        if _entries_follow(lines[k:]):
            log = sum(1 for line in lines[k:] if line.strip()) >= _PREAMBLE_LOG and _is_record_block(lines[k:])
            return chunk.source_lines(start, start + 1)[0] if k > 0 and log else 0
    return 0
