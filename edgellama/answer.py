"""retrieve -> prompt -> generate -> verified citations. Abstains when retrieval finds nothing
relevant, and never shows a source as support unless it contains the answer's words.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

from .embed import Embedder
from .generate import Generator
from .prompt import STOP, DroppedChunk, build_prompt
from .render import cite
from .retrieve import ScoredChunk, best_sentences, search
from .store import Store
from .text import content_words, normalize_answer

__all__ = ["Answer", "ask", "answer_to_dict", "NOT_IN_DOCUMENTS"]

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


@dataclass(frozen=True)
class Answer:
    """``kind`` is "answer" (the model's answer, verified against the passages it was shown),
    "quote" (the model's answer was not supported, so ``text`` is the best passage, quoted) or
    "abstain" (nothing relevant was retrieved: ``text`` says the documents do not say)."""

    question: str
    text: str
    kind: str
    verified: bool  # a passage the model was shown contains the answer's content words
    citations: tuple[Source, ...]  # the passages that support the answer
    context: tuple[Source, ...]  # every passage the model was shown
    dropped: tuple[DroppedChunk, ...]  # selected but cut by the context budget
    timings: Timings
    reason: str = ""  # why it abstained
    model_text: str = ""  # what the model said, even when it was not supported

    @property
    def abstained(self) -> bool:
        return self.kind == "abstain"


# An answer is shown only if a passage holds this share of its content words; otherwise the best
# passage is quoted instead. Calibrated on tests/data/corpus_qa.jsonl (docs/retrieval.md).
MIN_SUPPORT = 1.0


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
    found, picked = [], []
    if len(matrix):  # an empty index needs no embedder
        query_vector = embedder.embed([question])[0]  # once, for the chunks and for their sentences
        found = search(store=store, embedder=embedder, query=question, k=top_k, vectors=matrix,
                       query_vector=query_vector)
        picked = best_sentences(query=question, chunks=found[:evidence_chunks], embedder=embedder,
                                limit=evidence_sentences, query_vector=query_vector)
    best = picked[0].score if picked else 0.0
    if not found or best < min_relevance:
        reason = "nothing indexed" if not found else f"best passage scores {best:.2f}, below min_relevance {min_relevance:.2f}"
        return _abstain(question, reason, time.perf_counter() - started, started)
    if style == "completion":
        passages = [(found[s.chunk_index], s.text, (s.line_start, s.line_end)) for s in picked]
    else:
        passages = [(c, c.chunk.text, (c.chunk.line_start, c.chunk.line_end)) for c in found]
    retrieve_seconds = time.perf_counter() - started

    gen = generator() if callable(generator) and not hasattr(generator, "stream") else generator
    plan = build_prompt(
        question=question,
        chunks=[(c.chunk.context, text) for c, text, _ in passages],
        count_tokens=gen.count_tokens,
        context_budget=context_tokens,
        n_ctx=gen.n_ctx,
        max_tokens=max_tokens,
        style=style,
    )
    pieces: list[str] = []
    stream = (
        gen.stream(plan.prompt, max_tokens=max_tokens, stop=STOP)
        if style == "completion"
        else gen.stream_chat(list(plan.messages), max_tokens=max_tokens)
    )
    for piece in stream:
        if not pieces:
            piece = piece.lstrip()
        pieces.append(piece)
        if on_token and piece:
            on_token(piece)
    text = _clean("".join(pieces))
    stats = gen.last_stats
    timings = Timings(
        retrieve_seconds=retrieve_seconds,
        prompt_seconds=stats.prompt_seconds if stats else 0.0,
        prompt_tokens=stats.prompt_tokens if stats else plan.prompt_tokens,
        completion_tokens=stats.completion_tokens if stats else len(pieces),
        tokens_per_second=stats.tokens_per_second if stats else 0.0,
        total_seconds=time.perf_counter() - started,
    )
    shown = tuple(
        _source(n, passages[i][0], passages[i][1], passages[i][2],
                supporting_overlap(text, f"{passages[i][0].chunk.context} {passages[i][1]}"))
        for n, i in enumerate(plan.included, start=1)
    )
    # Cite the passages that support the answer best (ties), not every one sharing half its words:
    # a passage with weaker overlap is context, not evidence.
    best_support = max((s.support for s in shown), default=0.0)
    citations: list[Source] = []
    for s in sorted((s for s in shown if s.support >= max(MIN_SUPPORT, best_support - 1e-9)),
                    key=lambda s: (-s.support, s.number)):
        if all((c.path, c.line_start) != (s.path, s.line_start) for c in citations):
            citations.append(s)
    reason = ""
    if not text or _DONT_KNOW.match(text):
        reason = "the model found no answer in the retrieved text"
    elif not (content_words(text) - content_words(question)):
        reason = f"the model's answer {text!r} only repeats the question"
    elif not citations:
        reason = f"no retrieved passage supports the model's answer {text!r}"
    if reason:
        # Retrieval was confident but the model's answer is not in the text: quote the best
        # sentence instead of guessing, and cite where it stands.
        top = picked[0]
        quote = _source(0, found[top.chunk_index], top.text, (top.line_start, top.line_end), 1.0)
        return Answer(question, top.text, "quote", False, (quote,), shown, plan.dropped, timings, reason, text)
    return Answer(question, text, "answer", True, tuple(citations[:3]), shown, plan.dropped, timings, "", text)


def _source(number: int, found: ScoredChunk, text: str, lines: tuple[int, int], support: float) -> Source:
    c = found.chunk
    return Source(number=number, path=c.path, line_start=lines[0], line_end=lines[1], page=c.page,
                  heading=c.context, text=text, score=found.score, similarity=found.similarity, support=support)


def _abstain(question: str, reason: str, retrieve_seconds: float, started: float) -> Answer:
    timings = Timings(retrieve_seconds, 0.0, 0, 0, 0.0, time.perf_counter() - started)
    return Answer(question, NOT_IN_DOCUMENTS, "abstain", False, (), (), (), timings, reason, "")


def answer_to_dict(answer: Answer) -> dict:
    """The JSON form of an answer: what ``ask --json`` prints and what the daemon sends."""

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
        "sources": [source(s) for s in answer.citations],
        "context": [source(s) for s in answer.context],
        "dropped": [{"rank": d.index + 1, "reason": d.reason} for d in answer.dropped],
        "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in answer.timings.__dict__.items()},
    }
