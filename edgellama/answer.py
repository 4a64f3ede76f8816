"""retrieve -> prompt -> generate -> verified citations. Abstains when retrieval finds nothing
relevant, and never shows a source as support unless it contains the answer's words.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Callable

from .embed import Embedder
from .generate import Generator
from .prompt import STOP, DroppedChunk, build_prompt
from .render import cite
from .retrieve import (ScoredChunk, Sentence, best_sentences, is_record_chunk, preamble_end, quantity_missing,
                       quantity_unfit, question_coverage, search, speaker_names, speakers_named,
                       unit_missing, without_words)
from .store import ChunkRecord, Store
from .text import MONTHS, NUMBER_WORDS, STOPWORDS, content_words, crude_stem, normalize_answer

__all__ = ["Answer", "ask", "answer_to_dict", "NOT_IN_DOCUMENTS", "decide", "Decision", "score_spans",
           "candidate_spans", "question_type", "head_noun", "shape_answer", "SPAN_FEATURES", "SPAN_WEIGHTS",
           "could_be_quoted", "UNVERIFIED_TOKENS"]

NOT_IN_DOCUMENTS = "The documents do not say."
_DONT_KNOW = re.compile(r"^(i (do not|don't) know|unknown|n/?a|none|the documents do not say)\b", re.I)


@dataclass(frozen=True)
class Source:
    number: int  # the [n] the model saw
    path: str
    line_start: int
    line_end: int
    page: int | None
    heading: str
    text: str
    score: float
    similarity: float
    support: float  # share of the answer's content words found in this chunk, 0..1

    @property
    def location(self) -> str:
        return cite(self.line_start, self.line_end, self.page, path=self.path)


@dataclass(frozen=True)
class Timings:
    retrieve_seconds: float
    prompt_seconds: float  # prompt evaluation: time to the first generated token
    prompt_tokens: int
    completion_tokens: int
    tokens_per_second: float
    total_seconds: float
    first_byte_seconds: float = 0.0  # until the first word shown: the verified answer, the passage or "do not say"


@dataclass(frozen=True)
class Answer:
    """Three outcomes, told apart by ``kind``:

    - "answer": ``text`` is a short answer whose words stand in a passage the model was shown
      (``verified``); that passage is cited and shown as ``evidence``.
    - "quote": retrieval found a passage that answers, but no short answer was verified: ``text``
      is that passage, cited; ``pointer`` is the span of it that fits the question's type, if any.
    - "abstain": nothing relevant was found: ``text`` is "The documents do not say."."""

    question: str
    text: str
    kind: str
    verified: bool  # a passage the model was shown contains the answer's content words
    citations: tuple[Source, ...]  # the passages that support the answer
    context: tuple[Source, ...]  # every passage the model was shown
    dropped: tuple[DroppedChunk, ...]  # selected but cut by the context budget
    timings: Timings
    reason: str = ""  # why it abstained, or why no short answer was verified
    model_text: str = ""  # what the model said, even when it was not supported; "…" where it was stopped
    method: str = ""  # "answer" only: "model" (the model's own words) or "span" (a span of the evidence it chose)
    evidence: tuple[Source, ...] = ()  # the passage shown with the outcome: the sentence(s) that hold the answer
    pointer: str = ""  # "quote" only: the span of the passage that fits the question's type, if one does
    confidence: float = 0.0  # 0..1: how sure the span scorer is of the short answer

    @property
    def abstained(self) -> bool:
        return self.kind == "abstain"


# An answer is shown only if a passage holds this share of its content words; otherwise the best
# passage is quoted instead. Calibrated on tests/data/corpus_qa.jsonl (docs/retrieval.md).
MIN_SUPPORT = 1.0
# The model is stopped once it has written this many pieces (tokens) and its words can no longer
# be read in a passage it was shown: such an answer is never shown, and its first words are what
# the span scorer's vote mostly uses. Replayed on the recorded answers of every dev set (docs/
# retrieval.md, "Stop 29"): xquad-dev 28% fewer answer tokens, answer F1 unchanged (0.427); corpus/
# loses two answers the model gave after restating the question (0.581 -> 0.567).
UNVERIFIED_TOKENS = 12


def supporting_overlap(answer: str, passage: str) -> float:
    """1.0 when the answer occurs in the passage (SQuAD-normalized, whole words); else the share of
    its content words the passage holds, just under 1: words scattered over a passage are not
    the answer quoted from it."""
    words = content_words(answer)
    if not words:
        return 0.0
    if f" {normalize_answer(answer)} " in f" {normalize_answer(passage)} ":
        return 1.0
    return min(len(words & content_words(passage)) / len(words), 0.99)


# "Nothing relevant" is decided on relevance = the best evidence sentence's score (cosine + 0.3 x
# the question's words in it) + COVERAGE_WEIGHT x (the IDF-weighted share of the question's words
# found in the evidence chunks, retrieve.question_coverage, - COVERAGE_NEUTRAL): a near-miss question
# names something the documents never mention. With min_relevance 0.55 the best sentence must score
# 0.28 when every word of the question is found, 0.78 when none is. Calibrated on xquad-dev,
# corpus_qa and two Apollo 11 transcript sets (docs/retrieval.md, "Abstention across kinds of text").
COVERAGE_WEIGHT = 0.5
COVERAGE_NEUTRAL = 0.46  # the share at which min_relevance applies to the best sentence's score alone
# Above min_relevance but below min_relevance + QUANTITY_MARGIN, a question asking for a quantity
# ("how far", "what year") is not answered when no evidence unit scoring within QUANTITY_NEAR of the
# best names a number (retrieve.quantity_missing): the near-miss that shares every rare word with a
# passage. Above the band the passage is trusted (xquad-dev's "How long did the fighting last in
# Seven Years War?" finds "six years" a sentence away). docs/retrieval.md, "Quantity check".
QUANTITY_MARGIN = 0.35
QUANTITY_NEAR = 0.15
# A chunk of a transcript or log holds ten-odd entries, and the question matches one of them: the
# chunk's rank says less about its best entry than a paragraph's rank about its best sentence, so
# the entries of two more chunks compete (Apollo 11 sets: the gold entry within the top 3 chunks for
# 80% of questions, the top 5 for 85%; docs/retrieval.md, "s25: wider for transcripts").
RECORD_CHUNKS_EXTRA = 2


def could_be_quoted(answer: str, *, passages: list[list[str]]) -> bool:
    """Whether ``answer``, its last word perhaps unfinished, is a run of words of one of ``passages``
    (each ``normalize_answer``-ed and split, as ``supporting_overlap`` compares them): whether the
    model, writing on, can still end with an answer a passage holds word for word."""
    *done, last = normalize_answer(answer).split() or [""]
    size = len(done) + 1
    return any(passage[i + size - 1].startswith(last) and passage[i:i + size - 1] == done
               for passage in passages for i in range(len(passage) - size + 1))


def _quote_refusal(decision: "Decision", picked: list[Sentence], found: list[ScoredChunk],
                   first_chunks: Callable[[str], list[ChunkRecord]]) -> str:
    """Why the passage ``decision`` would quote (no short answer verified) answers nothing, or "":
    all of it is the text before a log's entries (its title, its speakers), which describes the
    document, not what it records (docs/retrieval.md, "s25"). ``first_chunks``: a document's first
    chunks by path, as ``ask`` read them."""
    if decision.kind != "quote" or not decision.sentences or decision.sentences[0] >= len(picked):
        return ""
    units = [picked[i] for i in decision.sentences if i < len(picked)]
    chunks = [found[u.chunk_index].chunk for u in units]
    if not all(c.ordinal < 3 for c in chunks):
        return ""
    ends = {path: preamble_end(first_chunks(path)) for path in {c.path for c in chunks}}
    if all(u.line_end < ends[c.path] for u, c in zip(units, chunks)) and all(ends.values()):
        return "the closest passage is the text before the log's entries (its title, its speakers), not what it records"
    return ""


def _answer_refusal(question: str, decision: "Decision", picked: list[Sentence]) -> str:
    """Why the short answer of ``decision`` answers nothing, or "": the question asks for a quantity
    of one kind, the answer is none ("1565" for "how many soldiers", "present-day" for "how tall"),
    and no passage near the best names one (docs/retrieval.md, "s25")."""
    if decision.kind == "answer" and quantity_unfit(question=question, answer=decision.text, sentences=picked,
                                                    near=QUANTITY_NEAR):
        return (f"the question asks for a quantity; the short answer {decision.text!r} is not of that kind and no "
                "passage near the best names one")
    return ""


def _clean(text: str) -> str:
    text = re.sub(r"\[\d+\]", "", text)
    return " ".join(text.split()).strip(" \"'")


def ask(
    *,
    question: str,
    store: Store,
    embedder: Embedder,
    generator: Generator | Callable[[], Generator],
    top_k: int = 5,
    context_tokens: int = 1000,
    max_tokens: int = 48,
    min_relevance: float = 0.55,
    style: str = "completion",
    evidence_chunks: int = 3,
    evidence_sentences: int = 4,  # config.py's defaults; see bench/RESULTS.md "Context budget"
    on_token: Callable[[str], None] | None = None,
    vectors=None,
) -> Answer:
    """Answer ``question`` from the index. ``generator`` may be a factory, so a question the
    documents do not cover never loads the model.

    The completion style shows the model the ``evidence_sentences`` best sentences of the top
    ``evidence_chunks`` chunks; the chat style shows whole chunks, numbered. ``vectors``: a cached
    ``VectorMatrix`` (the daemon's), else the vectors are read from the store."""
    started = time.perf_counter()
    from .vectors import load_vectors

    matrix = vectors if vectors is not None else load_vectors(store, model=embedder.name)
    firsts: dict[str, list[ChunkRecord]] = {}  # a log's first chunks, read once a question (speakers, preamble)

    def first_chunks(path: str) -> list[ChunkRecord]:
        if path not in firsts:
            firsts[path] = store.document_chunks(path, first=3)
        return firsts[path]

    found, picked, coverage = [], [], 0.0
    if len(matrix):  # an empty index needs no embedder
        query_vector = embedder.embed([question])[0]  # once, for the chunks and for their sentences
        found = search(store=store, embedder=embedder, query=question, k=top_k, vectors=matrix,
                       query_vector=query_vector)
        log = next((c.chunk for c in found if is_record_chunk(c.chunk.text)), None)  # the preamble may rank first
        named = speakers_named(question, speaker_names(first_chunks(log.path))) if log else {}
        if named:  # a speaker's name is in the preamble's list alone: the entries are searched by the other words
            found = search(store=store, embedder=embedder, query=without_words(question, named), k=top_k,
                           vectors=matrix, query_vector=query_vector)
        pool = evidence_chunks + RECORD_CHUNKS_EXTRA if found and is_record_chunk(found[0].chunk.text) else evidence_chunks
        counts = store.chunk_counts(content_words(question))
        picked = best_sentences(query=question, chunks=found[:pool], embedder=embedder,
                                limit=evidence_sentences, query_vector=query_vector, speakers=named, store=store,
                                rarity=(counts, len(matrix)), read_back=True)
        coverage = question_coverage(query=question, chunks=found[:evidence_chunks], total=len(matrix),
                                     counts=counts, speakers=named)
    best = max(s.score for s in picked) if picked else 0.0
    relevance = best + COVERAGE_WEIGHT * (coverage - COVERAGE_NEUTRAL)
    if not found or relevance < min_relevance:
        reason = ("nothing indexed" if not found else
                  f"relevance {relevance:.2f} (best passage {best:.2f}; the question's words found, weighted by rarity: "
                  f"{coverage:.2f}), below min_relevance {min_relevance:.2f}")
        return _abstain(question, reason, time.perf_counter() - started, started)
    if relevance < min_relevance + QUANTITY_MARGIN and quantity_missing(question=question, sentences=picked,
                                                                        near=QUANTITY_NEAR):
        reason = (f"the question asks for a quantity and no passage near the best names one (relevance "
                  f"{relevance:.2f}, below {min_relevance + QUANTITY_MARGIN:.2f}, where a passage is trusted without)")
        return _abstain(question, reason, time.perf_counter() - started, started)
    unit = unit_missing(question=question, sentences=picked, near=QUANTITY_NEAR)
    if unit:
        reason = (f"the question asks for a quantity in one unit ({unit}) and the passages near the best give it "
                  "only in others")
        return _abstain(question, reason, time.perf_counter() - started, started)
    if style == "completion":
        passages = [(found[s.chunk_index], s.text, (s.line_start, s.line_end)) for s in picked]
        prompted = [s.spoken for s in picked]  # a transcript entry without its time stamp: a shorter prompt
    else:
        passages = [(c, c.chunk.text, (c.chunk.line_start, c.chunk.line_end)) for c in found]
        prompted = [c.chunk.text for c in found]
    retrieve_seconds = time.perf_counter() - started

    gen = generator() if callable(generator) and not hasattr(generator, "stream") else generator
    plan = build_prompt(
        question=question,
        chunks=[(c.chunk.context, text) for (c, _, _), text in zip(passages, prompted)],
        count_tokens=gen.count_tokens,
        context_budget=context_tokens,
        n_ctx=gen.n_ctx,
        max_tokens=max_tokens,
        style=style,
    )
    # Nothing streams before it is verified: the answer is at most ``max_tokens`` tokens, so the
    # cost is the generation of a few words (bench/RESULTS.md "First byte"), and no word the user
    # has read is ever taken back.
    stream = (gen.stream(plan.prompt, max_tokens=max_tokens, stop=STOP) if style == "completion"
              else gen.stream_chat(list(plan.messages), max_tokens=max_tokens))
    read = [f"{passages[i][0].chunk.context} {passages[i][1]}" for i in plan.included]  # what each shown passage says
    readable = [normalize_answer(r).split() for r in read]
    pieces: list[str] = []
    cut = False  # an answer no passage can hold is stopped after UNVERIFIED_TOKENS pieces
    try:
        for piece in stream:
            pieces.append(piece)
            if len(pieces) >= UNVERIFIED_TOKENS and not could_be_quoted(_clean("".join(pieces)), passages=readable):
                cut = True
                break
    finally:
        if hasattr(stream, "close"):  # the generator holds the model's lock until it is closed
            stream.close()
    text = _clean("".join(pieces))
    said = f"{text} …" if cut else text  # what the model said, marked where it was stopped
    stats = gen.last_stats
    shown = tuple(
        _source(n, passages[i][0], passages[i][1], passages[i][2], supporting_overlap(text, r))
        for n, (i, r) in enumerate(zip(plan.included, read), start=1)
    )
    # The chat style's model saw whole chunks, but what is quoted (or pointed at) when its answer is
    # not verified is still the best evidence sentences: never an empty passage.
    # Short answers are spans of what was said: a transcript entry's time stamp and speaker are
    # where it stands, shown with the evidence, not candidates (transcript more: F1 0.24 with them).
    sentences = [(s.said, s.score) for s in picked]
    model_supported = bool(text) and not _DONT_KNOW.match(text) and any(s.support >= MIN_SUPPORT for s in shown)
    # The model's log-probability of the likeliest spans as its answer, on the prompt it just answered
    # (its KV cache is still warm): one more vote for the span scorer (docs/retrieval.md, issue 22).
    scorer = getattr(gen, "answer_logprobs", None) if style == "completion" else None
    logprobs = (lambda answers: scorer(plan.prompt, answers)) if scorer else None
    decision = decide(question=question, sentences=sentences, model_text=text, model_supported=model_supported,
                      answer_logprobs=logprobs)
    if style != "completion" and model_supported:  # the chat style sees whole chunks: no span scoring
        decision = Decision("answer", text, "model", (), "", 1.0, "")
    elif style != "completion":
        decision = Decision("quote", picked[0].text, "", (0,), "", 0.0, "no passage supports the model's answer")
    refusal = _quote_refusal(decision, picked, found, first_chunks) or _answer_refusal(question, decision, picked)
    if refusal:
        decision = replace(decision, kind="abstain", text=NOT_IN_DOCUMENTS, reason=refusal)
    if decision.kind == "quote":  # the passage as written: a transcript entry with its time stamp and speaker
        decision = replace(decision, text=" ".join(picked[i].text for i in decision.sentences if i < len(picked)))
    first_byte = time.perf_counter() - started
    if decision.kind == "answer" and on_token:
        on_token(decision.text)
    timings = Timings(
        retrieve_seconds=retrieve_seconds,
        prompt_seconds=stats.prompt_seconds if stats else 0.0,
        prompt_tokens=stats.prompt_tokens if stats else plan.prompt_tokens,
        completion_tokens=stats.completion_tokens if stats else len(pieces),
        tokens_per_second=stats.tokens_per_second if stats else 0.0,
        total_seconds=time.perf_counter() - started,
        first_byte_seconds=first_byte,
    )
    if decision.kind == "abstain":
        return Answer(question, NOT_IN_DOCUMENTS, "abstain", False, (), shown, plan.dropped, timings,
                      decision.reason, said, confidence=decision.confidence)
    evidence = tuple(
        _source(0, found[picked[i].chunk_index], picked[i].text, (picked[i].line_start, picked[i].line_end),
                supporting_overlap(decision.text, picked[i].text))
        for i in decision.sentences if i < len(picked)
    )
    if decision.kind == "quote":
        return Answer(question, decision.text, "quote", False, evidence, shown, plan.dropped, timings,
                      decision.reason, said, evidence=evidence, pointer=decision.pointer,
                      confidence=decision.confidence)
    # Cite the passages that hold the answer word for word (ties), not every one sharing half its
    # words: a passage with weaker overlap is context, not evidence. The evidence sentence first.
    support = {s.number: supporting_overlap(decision.text, f"{s.heading} {s.text}") for s in shown}
    citations: list[Source] = [e for e in evidence if e.support >= MIN_SUPPORT]
    for s in sorted((s for s in shown if support[s.number] >= MIN_SUPPORT), key=lambda s: s.number):
        if all((c.path, c.line_start) != (s.path, s.line_start) for c in citations):
            citations.append(s)
    return Answer(question, decision.text, "answer", True, tuple(citations[:3]), shown, plan.dropped, timings, "",
                  said, method=decision.method, evidence=evidence, confidence=decision.confidence)



# -- short answers from the evidence --------------------------------------------------------------
# The 135M model picks the right span of the right sentence only about a quarter of the time, but
# the span is nearly always there: candidate spans of the best sentences cover the gold answer
# (token F1 >= 0.5) for 85% of xquad-dev questions. So the model's answer is one vote among
# signals that do not depend on it: the question's type and the span's shape (numbers, dates,
# names), the question's words around the span and not inside it, the sentence's rank.

_WORD = re.compile(r"\S+")
_EDGE = "\"'“”‘’()[]{},.;:!?*"  # "*": Markdown emphasis ("**Python 3.11 is required.**")
_NUMERAL = re.compile(r"^[$€£]?\d[\d,./:–-]*(%|s|th|st|nd|rd|m|km|kg|bn)?$", re.I)
_NUMBER_JOINS = frozenset({"to", "and", "-", "–", "or", "of", "by"})
_QUANTIFIERS = frozenset({"about", "around", "over", "under", "nearly", "almost", "approximately", "roughly",
                          "some", "more", "less", "than", "least"})
_NAME_JOINS = frozenset({"of", "the", "de", "du", "von", "van", "der", "la", "and", "&"})
# Function words a short answer neither starts nor ends with (besides the stopwords): "service over".
_NOT_AT_EDGE = frozenset(
    "over through during between against under within without among upon because while although though "
    "since until also only just very both each other another same all however thus often well even still "
    "yet already being became become including like per via toward towards across along behind beyond "
    "despite unlike whether either neither onto".split())
_PREPOSITIONS = frozenset({"in", "at", "by", "on", "from", "of", "to", "as", "for", "with", "into", "near"})
_QUESTION_TYPES = (
    ("number", re.compile(r"\bhow (many|much|long|old|far|big|large|tall|high|deep|often|fast|wide|heavy)\b|"
                          r"\bwhat (percentage|percent|number|amount|year|decade|century|age|date|temperature|time)\b|"
                          r"\b(in )?which year\b|\bwhen\b", re.I)),
    ("name", re.compile(r"\bwho\b|\bwhom\b|\bwhose\b", re.I)),
    ("place", re.compile(r"\bwhere\b|\bwhat (city|country|place|state|region|river|town)\b|"
                         r"\bin which (city|country|place|state|region|town)\b", re.I)),
)


_WH = re.compile(r"\b(what|which|who|whom|whose|when|where|why|how)\b", re.I)


def question_phrase(question: str) -> str:
    """The question word and the few words after it: of the clause after the last comma when that
    clause asks ("When many are arrested, what is..."), and never a capitalized "Who" or "When"
    inside the sentence ("What Doctor Who episode...")."""
    clauses = [c.strip() for c in question.split(",")]
    for clause in (clauses[-1], question.strip()) if len(clauses) > 1 else (question.strip(),):
        for m in _WH.finditer(clause):
            if m.start() == 0 or m.group().islower():
                first, *rest = clause[m.start():].split()[:4]
                return " ".join([first, *(w for w in rest if not w[:1].isupper())])
    return question


def question_type(question: str) -> str:
    """"number" (how many, when, what year...), "name" (who), "place" (where) or "other"."""
    phrase = question_phrase(question)
    return next((kind for kind, pattern in _QUESTION_TYPES if pattern.search(phrase)), "other")


@dataclass(frozen=True)
class Span:
    """A candidate short answer: words ``first``..``last`` of a sentence, at ``start``:``end``."""

    text: str
    start: int
    end: int
    first: int
    last: int
    number: bool  # holds a numeral or a number word
    name: bool  # every word capitalized (joins such as "of" aside)


def _words(sentence: str) -> list[tuple[str, int, int, bool, bool]]:
    """(word without edge punctuation, start, end, punctuation after it, punctuation before it)."""
    out = []
    for m in _WORD.finditer(sentence):
        raw = m.group()
        word = raw.strip(_EDGE)
        if not word:
            continue
        start = m.start() + raw.index(word)
        end = start + len(word)
        out.append((word, start, end, end < m.end(), start > m.start()))
    return out


def _is_number(word: str) -> bool:
    return bool(_NUMERAL.match(word)) or word.lower() in NUMBER_WORDS


def _is_capital(word: str) -> bool:
    return word[:1].isupper()


def _starts_sentence(sentence: str, words, i: int) -> bool:
    """Word ``i`` opens the unit or follows a full stop ("version.** Today"): its capital is the sentence's."""
    return i == 0 or any(c in ".!?" for c in sentence[words[i - 1][2]:words[i][1]])


def candidate_spans(sentence: str, *, max_words: int = 6) -> list[Span]:
    """Number groups ("1870 to 1939", "about 4 1/2 degrees"), runs of capitalized words ("University
    of Warsaw") and runs of content words with their sub-runs, none starting or ending on a stopword."""
    words = _words(sentence)
    n = len(words)
    keys: set[tuple[int, int]] = set()

    def add(i: int, j: int) -> None:
        if 0 <= i <= j < n and j - i < max_words:
            last, first = words[j][0].lower(), words[i][0].lower()
            if last in STOPWORDS or last in _NOT_AT_EDGE or (
                    (first in STOPWORDS or first in _NOT_AT_EDGE) and first not in _QUANTIFIERS):
                return
            keys.add((i, j))

    def run(i: int, member, joins) -> int:
        """The last word of the run starting at ``i``: members, or joins between two members."""
        j = i
        while j + 1 < n and not words[j][3]:
            if member(words[j + 1][0]) and not words[j + 1][4]:
                j += 1
            elif (words[j + 1][0].lower() in joins and j + 2 < n and member(words[j + 2][0])
                  and not words[j + 1][3]):
                j += 2
            else:
                break
        return j

    i = 0
    while i < n:  # numbers and dates, a quantifier before, a unit or two after
        word = words[i][0]
        if _is_number(word) or (word.lower() in MONTHS and i + 1 < n and _NUMERAL.match(words[i + 1][0])):
            j = run(i, lambda w: _is_number(w) or w.lower() in MONTHS, _NUMBER_JOINS)
            for s in (i, i - 1) if i and words[i - 1][0].lower() in _QUANTIFIERS and not words[i - 1][3] else (i,):
                k = j
                add(s, k)
                while k + 1 < n and k - j < 2 and not words[k][3] and words[k + 1][0].lower() not in STOPWORDS:
                    k += 1
                    add(s, k)
            i = j + 1
        else:
            i += 1
    for i in range(n - 2):  # "October 6, 1973": the comma inside a date does not end it
        if (words[i][0].lower() in MONTHS and re.fullmatch(r"\d{1,2}", words[i + 1][0]) and _YEAR.match(words[i + 2][0])
                and sentence[words[i + 1][2]:words[i + 2][1]].strip() == "," and not words[i][3]):
            add(i, i + 2)
    i = 0
    while i < n:  # names, and their parts
        if _is_capital(words[i][0]) and not _is_number(words[i][0]):
            j = run(i, lambda w: _is_capital(w) and not _is_number(w), _NAME_JOINS)
            for a in range(i, j + 1):
                for b in range(a, min(j, a + max_words - 1) + 1):
                    add(a, b)
            i = j + 1
        else:
            i += 1
    i = 0
    while i < n:  # runs of content words ("red wine stain"), their sub-runs, and "X of Y"
        if words[i][0].lower() in STOPWORDS:
            i += 1
            continue
        j = i
        while j + 1 < n and not words[j][3] and not words[j + 1][4] and words[j + 1][0].lower() not in STOPWORDS:
            j += 1
        for a in range(i, j + 1):
            for b in range(a, min(j, a + 3) + 1):
                add(a, b)
        if j + 2 < n and not words[j][3] and words[j + 1][0].lower() == "of":
            k = j + 2
            while k + 1 < n and k - j < 4 and not words[k][3] and words[k + 1][0].lower() not in STOPWORDS:
                k += 1
            add(max(i, j - 1), k)
        i = j + 1
    spans = []
    for a, b in sorted(keys):
        inner = [w[0] for w in words[a:b + 1]]
        spans.append(Span(sentence[words[a][1]:words[b][2]], words[a][1], words[b][2], a, b,
                          number=any(_is_number(w) for w in inner),
                          # a lone capitalized word opening a sentence is the sentence's capital, not a name
                          name=all(_is_capital(w) for w in inner if w.lower() not in _NAME_JOINS)
                          and not (a == b and _starts_sentence(sentence, words, a) and not inner[0].isupper())))
    return spans


SPAN_FEATURES = (
    "bias", "number_for_number", "other_for_number", "name_for_name", "other_for_name", "name_for_place",
    "name_for_other", "number_for_other", "share_in_question", "question_words_near", "proximity",
    "sentence_2", "sentence_3", "words_1", "words_2", "words_3", "words_4", "model_f1", "in_model",
    "sentence_score", "after_preposition",
    # the finer type of a number or a "what X" question, matched against the span
    "year_for_year", "other_for_year", "percent_for_percent", "unit_for_duration", "head_noun_near",
    # the model's own log-probability of the span as its whole answer, relative to the best
    # candidate's (only the likeliest candidates of the other features are asked; the rest are flagged)
    "model_logprob", "not_rescored",
)
# Weights of a conditional logit over the candidate spans of a question (softmax of w . x, fitted to
# put the probability on spans in proportion to their token F1 with the gold answer, to the 4th
# power): the features without the model on all 575 xquad-dev questions, then the model's on every
# 4th (its answer and log-probabilities recorded once). Fitted on one half of the articles, they
# pick a span of F1 0.43 on the other half (0.39 without the log-probabilities; the first pass's
# weights 0.38 on the very questions they were fitted on);
# corpus_qa and the transcript set were never fitted on (docs/retrieval.md, issue 22). Fitted with
# head_noun_near unbounded; bounded (``_names_span``) they still pick as well, and refits on a third of
# xquad-dev's questions picked worse on every set (docs/retrieval.md, s24-spans).
SPAN_WEIGHTS = {
    "bias": 0.00,
    "number_for_number": 1.15,
    "other_for_number": -1.15,
    "name_for_name": 0.97,
    "other_for_name": -0.97,
    "name_for_place": 1.20,
    "name_for_other": 1.07,
    "number_for_other": 0.20,
    "share_in_question": -1.60,
    "question_words_near": 1.42,
    "proximity": 0.70,
    "sentence_2": -0.90,
    "sentence_3": -1.72,
    "words_1": -0.56,
    "words_2": -0.05,
    "words_3": 0.22,
    "words_4": 0.39,
    "model_f1": 2.06,
    "in_model": -0.23,
    "sentence_score": 1.96,
    "after_preposition": 0.37,
    "year_for_year": 1.28,
    "other_for_year": -1.28,
    "percent_for_percent": 0.67,
    "unit_for_duration": 0.29,
    "head_noun_near": 1.56,
    "model_logprob": 1.72,
    "not_rescored": -1.06,
}
# How many of the likeliest candidates the model's log-probability is asked for (all in one decode),
# and how far below the best candidate's a log-probability still counts. 16 -> 8 at s24 (the same F1
# for half the decode); 8 -> 4 at stop 28, with MIN_SPAN_CONFIDENCE 0.18 -> 0.20. A decode of fewer
# than 64 rows costs llama.cpp about 9 ms a row here (1 row 20 ms, 25 rows 231, 64 rows 205), and
# the pass was 22% of a warm xquad-dev question: 4 spans take 0.091 s against 0.136 s, the whole
# question p50 0.868x (bench/span_pass.py). The replay of every dev set's recorded log-probabilities
# keeps answer F1 over all questions within 0.002 on xquad-dev and corpus/ (docs/retrieval.md, "Stop 28").
SPAN_RESCORE = 4
LOGPROB_FLOOR = 12.0

_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})s?$")
_PERCENT = re.compile(r"%$|^percent$", re.I)
_TIME_UNITS = frozenset(
    "second seconds minute minutes hour hours day days week weeks month months year years decade decades "
    "century centuries".split())
_YEAR_QUESTION = re.compile(r"\b(what|which) (year|decade|century)\b|\bwhen\b", re.I)
_PERCENT_QUESTION = re.compile(r"\b(percentage|percent|proportion)\b", re.I)
_DURATION_QUESTION = re.compile(r"\bhow long\b|\bhow many (years|days|hours|minutes|months|weeks|seconds|decades|centuries)\b",
                                re.I)
# "what river", "which company", "how many litres": the word naming what the answer is
_HEAD_NOUN = re.compile(r"\b(?:what|which|whose|how many|how much)\s+(?:kind of |type of |sort of )?([a-z]+)", re.I)
_NOT_HEAD = frozenset("is was are were do does did has have had can could will would should may might".split())




def _stems(words) -> set[str]:
    return {crude_stem(w) for w in words}


def head_noun(question: str) -> str:
    """The word after "what", "which" or "how many" that names the answer's kind ("river" in "What
    river flows through Warsaw?"), or "" (a verb there: "What was...")."""
    m = _HEAD_NOUN.search(question_phrase(question))
    word = m.group(1).lower() if m else ""
    return "" if word in _NOT_HEAD or word in STOPWORDS else word


def _names_span(head: int, span: Span, words) -> bool:
    """The question's head noun (word ``head``) names ``span``: a name or a number within 2 words of
    it, no punctuation between ("the Vistula river", "4,500 litres"). Unbounded, "version.** Today"
    answered "Which Python version does EdgeLlama need?" with "Today" (tests/test_corpus.py q001)."""
    if not (span.name or span.number) or not span.first - 2 <= head <= span.last + 2:
        return False
    lo, hi = (head, span.first) if head < span.first else (span.last, head)
    return not any(words[k][3] for k in range(lo, hi))


@dataclass(frozen=True)
class ScoredSpan:
    span: Span
    sentence: int  # index into the evidence sentences
    features: tuple[float, ...]
    confidence: float  # 0..1


def score_spans(*, question: str, sentences: list[tuple[str, float]], model_text: str = "",
                weights: dict[str, float] | None = None,
                answer_logprobs: Callable[[list[str]], list[float]] | None = None,
                rescore: int = SPAN_RESCORE) -> list[ScoredSpan]:
    """Every candidate span of ``sentences`` ((text, retrieval score), best first), most likely first.
    ``answer_logprobs``: the model's log-probability of each of a list of answers (the generator's
    ``answer_logprobs`` on the prompt it answered), asked for the ``rescore`` likeliest spans."""
    import math

    weights = weights or SPAN_WEIGHTS
    w = [weights.get(name, 0.0) for name in SPAN_FEATURES]
    kind = question_type(question)
    phrase = question_phrase(question)
    wants_year = bool(_YEAR_QUESTION.search(phrase))
    wants_percent = bool(_PERCENT_QUESTION.search(question))
    wants_duration = bool(_DURATION_QUESTION.search(phrase))
    head = head_noun(question)
    head_stem = crude_stem(head) if head else ""
    question_words = content_words(question)
    question_stems = _stems(question_words)
    model_norm = f" {_as_figures(model_text)} " if model_text.strip() else ""
    rows: list[tuple[Span, int, list[float]]] = []
    for rank, (sentence, sentence_score) in enumerate(sentences):
        raw_words = _words(sentence)
        words = [normalize_answer(w[0]) for w in raw_words]
        in_question = [i for i, word in enumerate(words)
                       if word and word not in STOPWORDS and (word in question_words or crude_stem(word) in question_stems)]
        heads = [i for i, word in enumerate(words) if head_stem and crude_stem(word) == head_stem]
        for span in candidate_spans(sentence):
            own = content_words(span.text)
            if not own:
                continue
            outside = [i for i in in_question if i < span.first or i > span.last]
            distance = [min(abs(i - span.first), abs(i - span.last)) for i in outside]
            size = span.last - span.first + 1
            previous = words[span.first - 1] if span.first else ""
            inner = words[span.first:span.last + 1]
            year = any(_YEAR.match(word) for word in inner)
            x = [
                1.0,
                float(kind == "number" and span.number), float(kind == "number" and not span.number),
                float(kind == "name" and span.name and not span.number), float(kind == "name" and not span.name),
                float(kind == "place" and span.name and not span.number),
                float(kind == "other" and span.name), float(kind == "other" and span.number),
                len(_stems(own) & question_stems) / len(own),
                len({words[i] for i, d in zip(outside, distance) if d <= 6}) / max(1, len(question_words)),
                min(3.0, sum(1.0 / (1 + d) for d in distance)),
                float(rank == 1), float(rank >= 2),
                float(size == 1), float(size == 2), float(size == 3), float(size >= 4),
                _token_f1(_as_figures(span.text), model_norm) if model_norm else 0.0,
                float(bool(model_norm) and f" {_as_figures(span.text)} " in model_norm),
                sentence_score,
                float(previous in _PREPOSITIONS),
                float(wants_year and year), float(wants_year and not year),
                float(wants_percent and any(_PERCENT.search(word) for word in span.text.split())),
                float(wants_duration and span.number and any(word in _TIME_UNITS for word in inner)),
                float(any(_names_span(i, span, raw_words) for i in heads)),
                0.0, 0.0,
            ]
            rows.append((span, rank, x))
    if not rows:
        return []
    raw = [sum(a * b for a, b in zip(w, x)) for _, _, x in rows]
    if answer_logprobs is not None and rescore > 0:
        # The model is asked only about the likeliest candidates, all in one decode.
        order = sorted(range(len(rows)), key=lambda i: -raw[i])
        texts = list(dict.fromkeys(rows[i][0].text for i in order))[:rescore]
        logprobs = dict(zip(texts, answer_logprobs(texts)))
        top = max(logprobs.values())
        at = SPAN_FEATURES.index("model_logprob")
        for i, (span, _, x) in enumerate(rows):
            if span.text in logprobs:
                x[at] = max(-LOGPROB_FLOOR, logprobs[span.text] - top) / LOGPROB_FLOOR
            else:
                x[at + 1] = 1.0
            raw[i] = sum(a * b for a, b in zip(w, x))
    # A softmax over the candidates (the weights were fitted so): a span's confidence is its
    # share of the probability that one of them is the answer.
    top = max(raw)
    total = sum(math.exp(r - top) for r in raw)
    return sorted((ScoredSpan(span, rank, tuple(x), math.exp(r - top) / total) for (span, rank, x), r in zip(rows, raw)),
                  key=lambda s: -s.confidence)


# The model writes figures where the text spells numbers out ("15 minutes" for "Fifteen minutes,
# maybe?"): its answer and a span are compared with number words as figures, so the span it meant
# gets its vote. What is shown stays the span, as written (docs/retrieval.md, "Stop 27").
_FIGURES = {word: str(n) for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {word: str(10 * n) for n, word in enumerate(
    "thirty forty fifty sixty seventy eighty ninety".split(), start=3)}


def _as_figures(text: str) -> str:
    """``text`` normalized (``normalize_answer``), its number words up to ninety as figures."""
    return " ".join(_FIGURES.get(word, word) for word in normalize_answer(text).split())


def _token_f1(prediction: str, gold: str) -> float:
    from collections import Counter

    a, b = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(a) & Counter(b)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)



# A span of the evidence is shown as the answer when the scorer gives it at least this share of
# the probability over all candidate spans; a weaker best span is only pointed at in the quoted
# passage. Chosen on the replay (docs/retrieval.md): 0.2 gives short answers to 54% / 70% / 54% of
# xquad-dev (held-out halves) / corpus_qa / transcript questions at F1 0.56 / 0.70 / 0.41, and to
# 7% of corpus/'s unanswerable ones as before; 0.15 to 65% / 86% / 66% at F1 0.50 / 0.63 / 0.38
# but to 17% of those. 0.18 since s25-spans, once spans of only the question's words share out their
# probability and the answer's edges are fitted (shape_answer): short answers on both xquad-dev
# halves by article at F1 >= 0.6 (0.16 falls below it on one), corpus/ F1 0.577 -> 0.580. 0.20 since
# stop 28, with 4 spans rescored instead of 8: fewer spans asked means a larger share for the ones
# asked, and 0.18 then fell below F1 0.6 on the first transcript set (docs/retrieval.md, "Stop 28").
MIN_SPAN_CONFIDENCE = 0.20
SPAN_SENTENCES = 4  # the evidence sentences whose spans are candidates: the ones the model saw


@dataclass(frozen=True)
class Decision:
    """What ``ask`` shows, decided from the evidence sentences and the model's answer (pure)."""

    kind: str  # "answer", "quote" or "abstain"
    text: str  # the short answer; for a quote, the passage; for abstain, NOT_IN_DOCUMENTS
    method: str  # "model", "span" or ""
    sentences: tuple[int, ...]  # the evidence sentences shown with it, the one holding the answer first
    pointer: str  # quote only: the span of the passage that fits the question's type
    confidence: float
    reason: str


def decide(*, question: str, sentences: list[tuple[str, float]], model_text: str, model_supported: bool,
           min_span_confidence: float = MIN_SPAN_CONFIDENCE, weights: dict[str, float] | None = None,
           answer_logprobs: Callable[[list[str]], list[float]] | None = None) -> Decision:
    """``sentences``: the evidence, (text, retrieval score), best first; ``model_supported``: a
    passage the model saw holds its answer word for word; ``answer_logprobs``: see ``score_spans``."""
    sentences = sentences[:SPAN_SENTENCES]
    spans = score_spans(question=question, sentences=sentences, model_text=model_text, weights=weights,
                        answer_logprobs=answer_logprobs)
    # A span made only of the question's own words is never the answer ("Poland" for "the basic
    # unit of territorial division in Poland"): its probability is shared out among the others.
    at = SPAN_FEATURES.index("share_in_question")
    kept = [s for s in spans if s.features[at] < 1.0]
    left = sum(s.confidence for s in kept)
    spans = [replace(s, confidence=s.confidence / left) for s in kept] if left > 0 else kept
    best = spans[0] if spans else None
    model_ok = model_supported and bool(content_words(model_text) - content_words(question))
    if model_ok and (best is None or best.features[SPAN_FEATURES.index("in_model")] or best.confidence < min_span_confidence):
        source = next((i for i, (s, _) in enumerate(sentences) if supporting_overlap(model_text, s) >= 1.0), 0)
        text = shape_answer(model_text, question=question, sentence=sentences[source][0] if sentences else "",
                            trim=True)
        return Decision("answer", text, "model", _passage(source, sentences), "",
                        best.confidence if best else 0.0, "")
    if best is not None and best.confidence >= min_span_confidence:
        text = shape_answer(best.span.text, question=question, sentence=sentences[best.sentence][0], trim=False)
        return Decision("answer", text, "span", _passage(best.sentence, sentences), "",
                        best.confidence, "")
    # The passage that answers: the sentence holding the likeliest span, which the user is pointed at.
    at = best.sentence if best is not None else 0
    pointer = best.span.text if best is not None else ""
    reason = ("the model's answer " + repr(model_text) + " is not in the passages" if model_text and not model_supported
              else "no short answer was verified")
    shown = _passage(at, sentences, words=QUOTE_WORDS)
    return Decision("quote", " ".join(sentences[i][0] for i in shown), "", shown, pointer,
                    best.confidence if best else 0.0, reason)


# -- the answer's edges ---------------------------------------------------------------------------
# A restatement of the question is at least this many of its words (docs/retrieval.md, s25-spans)
MIN_RESTATED = 2


def _restated(word: str, question_stems: set[str]) -> bool:
    """A word the question already says (or a function word): not what the user asked for."""
    pieces = content_words(word)
    low = word.lower()
    return (not pieces or low in _PREPOSITIONS or low in _NOT_AT_EDGE
            or all(crude_stem(p) in question_stems for p in pieces))


def shape_answer(text: str, *, question: str, sentence: str, trim: bool = True) -> str:
    """``text`` (a span of ``sentence`` or the model's answer found in it) with its edges fitted to
    the question: with ``trim`` (the model's answers; spans never start or end on a function word),
    a restatement of the question and function words off its ends ("Polonia's home venue is located
    at Konwiktorska Street" -> "Konwiktorska Street", "In 1891" -> "1891"); the year alone of a date
    when the question asks for a year; a name cut short continued to its end ("John C." -> "John C.
    Messenger"). The result is always a span of ``text`` or of ``sentence``, so it stays verified."""
    words = _words(text)
    if not words:
        return text
    stems = _stems(content_words(question))
    keep = [i for i, w in enumerate(words) if not _restated(w[0], stems)]
    a, b = 0, len(words) - 1
    if keep and trim:
        # A restated question is two of its words or more; one ("Python 3.11", "14 months") is
        # part of the answer. Function words alone ("In 1891") go.
        def cut(lo: int, hi: int) -> bool:
            said = [w[0] for w in words[lo:hi] if content_words(w[0]) and w[0].lower() not in _NOT_AT_EDGE
                    and w[0].lower() not in _PREPOSITIONS]
            return len(said) == 0 or len(said) >= MIN_RESTATED
        if cut(0, keep[0]):
            a = keep[0]
        # a unit after a number is part of it ("12,000 running hours"), however often the question says it
        if not _is_number(words[keep[-1]][0]) and cut(keep[-1] + 1, len(words)):
            b = keep[-1]
        # never cut inside a name: "the European Court of Human Rights" keeps "of Human Rights"
        while b + 1 < len(words) and _is_capital(words[b][0]) and not words[b][3]:
            if _is_capital(words[b + 1][0]):
                b += 1
            elif (words[b + 1][0].lower() in _NAME_JOINS and b + 2 < len(words) and _is_capital(words[b + 2][0])
                  and not words[b + 1][3]):
                b += 2
            else:
                break
        while a > 0 and _is_capital(words[a][0]) and _is_capital(words[a - 1][0]) and not words[a - 1][3] \
                and words[a - 1][0].lower() not in STOPWORDS:
            a -= 1
    out = text[words[a][1]:words[b][2]]
    phrase = question_phrase(question)
    if _YEAR_QUESTION.search(phrase) and not re.search(r"\bwhen\b", phrase, re.I):
        years = [w[0] for w in words[a:b + 1] if _YEAR.match(w[0])]
        if len(years) == 1 and b > a:
            out = years[0]
    return _extend_name(out, sentence)


_INITIAL = re.compile(r"^[A-Z]\.$")


def _extend_name(text: str, sentence: str) -> str:
    """A name cut short in ``sentence`` continued to the end of its run of capitalized words: after
    an initial ("John C." + "Messenger") or a possessive's apostrophe ("Polish United Workers'
    Party"), or straight on ("DuMont Television" + "Network")."""
    at = sentence.find(text)
    if at < 0 or not text:
        return text
    end = at + len(text)
    words = _words(sentence)
    last = max((i for i, w in enumerate(words) if w[1] < end), default=None)
    if last is None or not _is_capital(words[last][0]):
        return text
    j = last
    while j + 1 < len(words):
        gap = sentence[words[j][2]:words[j + 1][1]]
        nxt = words[j + 1][0]
        if not _is_capital(nxt) or _is_number(nxt):
            break
        if gap.strip() and not (_INITIAL.match(words[j][0] + ".") and gap.strip() == ".") and gap.strip() not in ("'", "’"):
            break
        j += 1
    return sentence[at:words[j][2]] if j > last else text


PASSAGE_WORDS = 70  # what the user reads beside a short answer: two or three sentences
# A passage given instead of a short answer is cited whole, every sentence of it: kept shorter.
QUOTE_WORDS = 60


def _passage(first: int, sentences: list[tuple[str, float]], *, words: int = PASSAGE_WORDS) -> tuple[int, ...]:
    """The sentence holding the answer, then the best others that are more than a heading, within
    PASSAGE_WORDS words (at least one other): two sentences of prose, three or four entries of a
    transcript. The best sentence holds a gold answer for 75% of xquad-dev questions, the best two
    for 85%; on the transcript the best entry 60%, the best three 77%."""
    shown, used = [first], len(sentences[first][0].split()) if first < len(sentences) else 0
    for i, (text, _) in enumerate(sentences):
        size = len(text.split())
        if i == first or size <= 3:
            continue
        if len(shown) > 1 and used + size > words:
            break
        shown.append(i)
        used += size
    return tuple(shown)


def _source(number: int, found: ScoredChunk, text: str, lines: tuple[int, int], support: float) -> Source:
    c = found.chunk
    return Source(number=number, path=c.path, line_start=lines[0], line_end=lines[1], page=c.page,
                  heading=c.context, text=text, score=found.score, similarity=found.similarity, support=support)


def _abstain(question: str, reason: str, retrieve_seconds: float, started: float) -> Answer:
    elapsed = time.perf_counter() - started
    timings = Timings(retrieve_seconds, 0.0, 0, 0, 0.0, elapsed, elapsed)
    return Answer(question, NOT_IN_DOCUMENTS, "abstain", False, (), (), (), timings, reason, "")


def answer_to_dict(answer: Answer) -> dict:
    """The JSON form of an answer: what ``ask --json`` prints and what the daemon sends. ``kind``
    tells the three outcomes apart ("answer", "quote": the passage that answers, "abstain");
    ``evidence`` is the passage shown with it, ``pointer`` the span of a quote that fits the question."""

    def source(s: Source) -> dict:
        return {"number": s.number, "path": s.path, "line_start": s.line_start, "line_end": s.line_end,
                "page": s.page, "heading": s.heading, "support": round(s.support, 3),
                "similarity": round(s.similarity, 4), "text": s.text}

    return {
        "question": answer.question,
        "answer": answer.text,
        "kind": answer.kind,
        "abstained": answer.abstained,
        "reason": answer.reason,
        "model_answer": answer.model_text,
        "verified": answer.verified,
        "method": answer.method,
        "confidence": round(answer.confidence, 3),
        "pointer": answer.pointer,
        "evidence": [source(s) for s in answer.evidence],
        "sources": [source(s) for s in answer.citations],
        "context": [source(s) for s in answer.context],
        "dropped": [{"rank": d.index + 1, "reason": d.reason} for d in answer.dropped],
        "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in answer.timings.__dict__.items()},
    }
