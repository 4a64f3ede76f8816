"""Cited summaries of indexed documents, folders and topics: the result types, the map-reduce tree
cached by content hash, the model's prompts and their verification. Never prints: results stream as pieces.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from .chunking import approx_tokens
from .config import DEFAULT_METHOD, LENGTHS, METHODS, LengthPlan
from .errors import EdgeLlamaError, NotIndexedError, RequestError
from .render import cite
from .salience import Scorer, Unit, salience, salient_sentences
from .sections import document_sections
from .store import ChunkRecord, Store, SummaryRecord
from .text import content_words, truncate_to_tokens

__all__ = [
    "Summary", "Progress", "SectionDone", "DocumentDone", "summarize_document", "summarize_folder",
    "summarize_topic", "summarize_target", "summary_to_dict", "piece_to_event", "final_summary", "PROMPT_VERSION",
]

PROMPT_VERSION = "sum-3"  # change it whenever a prompt or a reducer changes: old cache entries then miss

LEAF_POINTS = 3  # points kept per leaf batch (both methods; length-independent so the cache is shared)
SECTION_POINTS = 4  # points kept per section; `long` shows all, `medium` the best two
LEAF_TOKENS = 48  # the model's output budget for a leaf
SECTION_TOKENS = 80  # ... and for a section
MOMENT_GAP = 8  # extract: lines around a pick that wait until nothing else is left (one moment, one point)
MIN_SUPPORT = 0.6  # share of a model sentence's content words that its cited inputs must contain


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    path: str
    line_start: int
    line_end: int
    page: int | None
    heading: str

    @property
    def location(self) -> str:
        return cite(self.line_start, self.line_end, self.page, path=self.path)


@dataclass(frozen=True)
class Point:
    text: str
    citations: tuple[Citation, ...]
    salience: float = field(default=0.0, compare=False)  # the extractive score it was picked by (not shown)


@dataclass(frozen=True)
class SectionSummary:
    heading: str
    line_start: int
    line_end: int
    points: tuple[Point, ...]


@dataclass(frozen=True)
class DocumentSummary:
    path: str
    title: str | None
    overview: tuple[Point, ...]
    sections: tuple[SectionSummary, ...]
    chunks: int
    tokens: int  # the document's size in the counting tokenizer


@dataclass(frozen=True)
class SummaryStats:
    nodes: int  # summary-tree nodes visited
    cached: int  # ... found in the cache
    model_calls: int
    dropped_sentences: int  # model sentences no input supports: not shown
    fallbacks: int  # nodes where the model said nothing supported: the extractive points instead
    input_tokens: int
    seconds: float


@dataclass(frozen=True)
class Summary:
    """``kind``: "document", "folder" or "topic". ``overview`` is the top of the tree; for a
    document ``documents`` holds it with its sections, for a folder one entry per document."""

    kind: str
    subject: str
    method: str
    length: str
    overview: tuple[Point, ...]
    documents: tuple[DocumentSummary, ...]
    stats: SummaryStats
    notes: tuple[str, ...] = ()  # what was cut or left out, and why


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    label: str


@dataclass(frozen=True)
class SectionDone:
    path: str
    section: SectionSummary


@dataclass(frozen=True)
class DocumentDone:
    document: DocumentSummary


Piece = Progress | SectionDone | DocumentDone | Summary


def final_summary(pieces: Iterator[Piece]) -> Summary:
    """Run a stream to its end and return its result."""
    last = None
    for last in pieces:
        pass
    if not isinstance(last, Summary):
        raise EdgeLlamaError("the summary ended early")
    return last


# -- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    text: str
    citations: tuple[Citation, ...]
    salience: float = 0.0  # computed once per document (sections.py, salience.py); extract picks by it


def _merge(citations: Sequence[Citation]) -> tuple[Citation, ...]:
    """Union of citations, overlapping or adjacent line ranges of one file merged, in file order."""
    out: list[Citation] = []
    for c in sorted(set(citations), key=lambda c: (c.path, c.page or 0, c.line_start, c.line_end)):
        last = out[-1] if out else None
        if last and last.path == c.path and last.page == c.page and c.line_start <= last.line_end + 1:
            out[-1] = Citation(c.path, last.line_start, max(last.line_end, c.line_end), c.page, last.heading)
        else:
            out.append(c)
    return tuple(out)


_ABOUT_THE_TEXT = re.compile(r"(the|this) (text|passage|document|section)\b", re.I)
_NUMBER = re.compile(r"\d[\d.,:/-]*\d|\d")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


# A document's sections (sections.py) give sentences with their exact source lines; sentences are
# packed into batches within a token budget (leaves), leaves reduce to section summaries, sections to
# the document overview. Every node is cached in the store under the SHA-256 of its inputs' text plus
# the method, model and prompt version, so after an edit only the changed branch is computed again.
# Every point carries the citations of the sentences it came from; a model sentence that no input
# supports is dropped (and counted), never shown.
@dataclass
class _SummaryRun:
    store: Store
    method: str
    generator: object | None
    count_tokens: Callable[[str], int]
    input_tokens: int
    model_name: str
    started: float = field(default_factory=time.perf_counter)
    nodes: int = 0
    cached: int = 0
    model_calls: int = 0
    dropped: int = 0
    fallbacks: int = 0
    tokens: int = 0
    notes: list[str] = field(default_factory=list)
    scorer: Scorer = salience  # the extractive score of a document's units

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def stats(self) -> SummaryStats:
        return SummaryStats(self.nodes, self.cached, self.model_calls, self.dropped, self.fallbacks, self.tokens,
                            time.perf_counter() - self.started)

    # A node: inputs -> points, each point citing the inputs it came from. Cached by the inputs' text.
    def node(self, *, level: str, path: str | None, inputs: Sequence[_Input], points: int, max_tokens: int,
             instruction: str = "") -> tuple[Point, ...]:
        self.nodes += 1
        key = hashlib.sha256(json.dumps(
            [PROMPT_VERSION, self.method, self.model_name if self.method == "model" else "", level, points,
             max_tokens if self.method == "model" else 0, instruction, [i.text for i in inputs],
             # Salience is scored over the whole document: an edit elsewhere moves every score a
             # little. Keyed to one decimal, a node is recomputed only when its inputs' scores move.
             [round(i.salience, 1) for i in inputs] if self.method != "model" else []],
            ensure_ascii=False).encode()).hexdigest()
        record = self.store.summary(key)
        if record is not None:
            self.cached += 1
            made = json.loads(record.points)
        else:
            calls = self.model_calls
            if self.method == "model" and sum(self.count_tokens(i.text) for i in inputs) <= max_tokens:
                # Already as short as its summary would be: kept as written, no model call.
                made = _by_extract(inputs, points=len(inputs), query="")
            elif self.method == "model":
                made = self._by_model(inputs, points=points, max_tokens=max_tokens, instruction=instruction)
            else:
                made = _by_extract(inputs, points=points, query=instruction)
            self.store.put_summary(SummaryRecord(key, level, self.method, self.model_name if self.method == "model" else "",
                                                 path, json.dumps(made, ensure_ascii=False), self.model_calls - calls))
        return tuple(Point(p["text"], _merge([c for i in p["sources"] for c in inputs[i].citations]),
                           max((inputs[i].salience for i in p["sources"]), default=0.0)) for p in made)

    def _by_model(self, inputs: Sequence[_Input], *, points: int, max_tokens: int, instruction: str) -> list[dict]:
        gen = self.generator
        prompt = _prompt([i.text for i in inputs], instruction=instruction, points=points)
        used = self.count_tokens(prompt)
        if used + max_tokens > gen.n_ctx:  # the batches are planned to fit; this guards a miscount
            raise EdgeLlamaError(f"a summary prompt of {used} tokens does not fit the model's {gen.n_ctx}")
        self.model_calls += 1
        self.tokens += used
        text = "".join(gen.stream(prompt, max_tokens=max_tokens, stop=_STOP))
        made, dropped = _verified(text, inputs, limit=points)
        self.dropped += dropped
        if not made:
            self.fallbacks += 1
            made = _by_extract(inputs, points=min(points, 2), query=instruction)
        return made

    def reduce(self, *, level: str, path: str | None, inputs: list[_Input], points: int, max_tokens: int,
               instruction: str = "") -> tuple[Point, ...]:
        """Summarize ``inputs`` in one node if they fit the budget, else in batches that do, then
        summarize the batches' points: a tree as deep as the input needs."""
        while True:
            batches = self.batches(inputs)
            if len(batches) <= 1:
                return self.node(level=level, path=path, inputs=batches[0] if batches else [], points=points,
                                 max_tokens=max_tokens, instruction=instruction)
            merged: list[_Input] = []
            # Extract: each batch may hold the best ``points`` of all (a small batch must not leave
            # the level above fewer than it needs); the model: a share, its output budget follows.
            part = max(LEAF_POINTS, points if self.method != "model" else -(-points // len(batches)))
            for batch in batches:
                merged += [_Input(p.text, p.citations, p.salience) for p in self.node(
                    level=f"{level}-part", path=path, inputs=batch, points=part,
                    max_tokens=LEAF_TOKENS * part // LEAF_POINTS, instruction=instruction)]
            if len(merged) >= len(inputs) and self.method != "model":
                # Extraction has no prompt to fit: it picks from all of them at once.
                return self.node(level=level, path=path, inputs=merged, points=points, max_tokens=max_tokens,
                                 instruction=instruction)
            if len(merged) >= len(inputs):  # cannot shrink further: keep what fits one batch
                keep = max(1, len(self.batches(merged)[0]))
                self.note(f"{len(merged) - keep} of {len(merged)} {level} points did not fit the "
                          f"{self.input_tokens}-token budget and were left out")
                inputs = merged[:keep]
            else:
                inputs = merged

    def batches(self, inputs: Sequence[_Input]) -> list[list[_Input]]:
        """Consecutive inputs packed within ``input_tokens``; an input alone over it is cut (noted)."""
        out: list[list[_Input]] = []
        current: list[_Input] = []
        used = 0
        for item in inputs:
            cost = self.count_tokens(item.text) + 1
            if cost > self.input_tokens:
                cut = truncate_to_tokens(item.text, self.input_tokens - 1, self.count_tokens)
                self.note(f"a {cost}-token passage at {item.citations[0].location if item.citations else '?'} "
                          f"was cut to its first {len(cut.split())} words to fit the {self.input_tokens}-token budget")
                item = _Input(cut, item.citations, item.salience)
                cost = self.count_tokens(item.text) + 1
            if current and used + cost > self.input_tokens:
                out.append(current)
                current, used = [], 0
            current.append(item)
            used += cost
        if current:
            out.append(current)
        return out


# -- the two methods ------------------------------------------------------------------------------

_STOP = ("\n\n\n", "Text:", "<|im_end|>")


def _prompt(texts: Sequence[str], *, instruction: str, points: int) -> str:
    focus = f" about {instruction}" if instruction else ""
    body = " ".join(" ".join(t.split()) for t in texts)
    return (f"Summarize what the text says{focus} in at most {points} short sentences. "
            f"Keep names and numbers exactly as written.\n\nText: {body}\n\nSummary:")


def _verified(text: str, inputs: Sequence[_Input], *, limit: int) -> tuple[list[dict], int]:
    """The model's sentences that the inputs support, each with the inputs that support it."""
    made: list[dict] = []
    dropped = 0
    seen: list[set[str]] = []
    words_of = [content_words(i.text) for i in inputs]
    for raw in _SENTENCE.split(" ".join(text.replace("\n", " ").split())):
        sentence = raw.strip(" -*•\"'")
        words = content_words(sentence)
        if len(words) < 2:
            continue
        if any(words <= other for other in seen):
            continue  # a repetition: small models loop
        if _ABOUT_THE_TEXT.match(sentence):
            dropped += 1  # "The text is about ...": says nothing the reader can use
            continue
        sources: list[int] = []
        covered: set[str] = set()
        while len(sources) < 3:
            best = max(range(len(inputs)), key=lambda i: len((words & words_of[i]) - covered), default=None)
            if best is None or not (words & words_of[best]) - covered:
                break
            sources.append(best)
            covered |= words & words_of[best]
        numbers = set(_NUMBER.findall(sentence))
        cited = " ".join(inputs[i].text for i in sources)
        if len(covered) / len(words) < MIN_SUPPORT or any(n not in cited for n in numbers):
            dropped += 1
            continue
        seen.append(words)
        made.append({"text": sentence if sentence.endswith((".", "!", "?")) else sentence + ".",
                     "sources": sorted(sources)})
        if len(made) == limit:
            break
    return made, dropped


def _by_extract(inputs: Sequence[_Input], *, points: int, query: str = "") -> list[dict]:
    """The most salient inputs, not redundant and one a moment (salience.py), in the cached form:
    text and the positions of the inputs each stands for."""
    places = [(i.citations[0].path, i.citations[0].line_start) if i.citations else ("", k)
              for k, i in enumerate(inputs)]
    return [{"text": pick.text, "sources": list(pick.sources)}
            for pick in salient_sentences([i.text for i in inputs], points=points, query=query,
                                          scores=[i.salience for i in inputs], places=places, gap=MOMENT_GAP)]


def _sections(chunks: Sequence[ChunkRecord], *, name: str, count_tokens: Callable[[str], int],
              group_tokens: int, scorer: Scorer) -> list[tuple[str, list[_Input]]]:
    """(section heading, its sentences as inputs citing their exact lines, with their salience)."""
    path = chunks[0].path if chunks else ""
    return [(section.heading, [_Input(s.text, (Citation(path, s.line_start, s.line_end, s.page, s.heading),), s.salience)
                               for s in section.sentences])
            for section in document_sections(chunks, name=name, count_tokens=count_tokens,
                                             group_tokens=group_tokens, scorer=scorer)]


def _begin(store: Store, method: str, length: str, generator, input_tokens: int, scorer: Scorer | None) -> _SummaryRun:
    if method not in METHODS:
        raise RequestError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if length not in LENGTHS:
        raise RequestError(f"length must be one of {', '.join(LENGTHS)}, got {length!r}")
    if method == "model" and generator is None:
        raise EdgeLlamaError("the model method needs a language model")
    if method == "extract" and not hasattr(generator, "count_tokens"):
        generator = None  # a factory is not called: the extractive method only borrows a loaded tokenizer
    run = _start(store, method, generator, input_tokens)
    run.scorer = scorer or salience
    return run


def _memoized(count: Callable[[str], int]) -> Callable[[str], int]:
    """Each sentence is counted once per run, though batches are planned more than once."""
    seen: dict[str, int] = {}

    def counted(text: str) -> int:
        if text not in seen:
            seen[text] = count(text)
        return seen[text]

    return counted


def _start(store: Store, method: str, generator, input_tokens: int) -> _SummaryRun:
    if callable(generator) and not hasattr(generator, "stream"):
        generator = generator()  # a factory: only the model method loads the model
    count = _memoized(generator.count_tokens if generator is not None else approx_tokens)
    name = getattr(generator, "name", "") or ""
    if generator is not None and method == "model":
        # The prompt's fixed words and the output must fit the context window with the input.
        room = generator.n_ctx - count(_prompt([], instruction="x" * 40, points=8)) - max(
            SECTION_TOKENS, *(p.overview_tokens for p in LENGTHS.values())) - 16
        input_tokens = min(input_tokens, room)
    return _SummaryRun(store=store, method=method, generator=generator, count_tokens=count, input_tokens=input_tokens,
                model_name=name)


def _document_tree(run: _SummaryRun, path: str, plan: LengthPlan) -> Iterator[Piece]:
    document = run.store.document(path)
    if document is None:
        raise NotIndexedError(f"{path} is not indexed: run 'edgellama index {path}' first")
    if document.status != "indexed":
        raise EdgeLlamaError(f"{path} was skipped when indexing: {document.error}")
    chunks = run.store.document_chunks(path)
    sections = _sections(chunks, name=document.title or os.path.basename(path), count_tokens=run.count_tokens,
                         group_tokens=4 * run.input_tokens, scorer=run.scorer)
    # Enough section points for the longest overview to choose from, whatever the structure
    # (one length-independent figure, so every length shares the cached section nodes).
    per_section = max(SECTION_POINTS, -(-max(p.overview_points for p in LENGTHS.values()) // max(1, len(sections))))
    total = sum(len(run.batches(items)) for _, items in sections) + len(sections) + 1
    done = 0
    summaries: list[SectionSummary] = []
    for name, items in sections:
        yield Progress(done, total, f"{name}")
        points = run.reduce(level="section", path=path, inputs=items, points=per_section,
                            max_tokens=SECTION_TOKENS)
        done += len(run.batches(items)) + 1
        lines = [c for i in items for c in i.citations]
        section = SectionSummary(name, min(c.line_start for c in lines), max(c.line_end for c in lines), points)
        summaries.append(section)
        if plan.section_points and run.method == "model":  # the model is slow: each section as it is done
            yield SectionDone(path, SectionSummary(section.heading, section.line_start, section.line_end,
                                                   _best(points, plan.section_points)))
    # Extract: the whole tree takes well under a second, so the sections share one budget
    # (plan.section_points a section on average): each shows its best point, and the rest of the
    # budget goes to the most salient of the points left, wherever they are: a dense section
    # (the descent and landing of a flight) shows more than a quiet one.
    if not plan.section_points:
        shown = ()
    elif run.method == "model":
        shown = tuple(SectionSummary(s.heading, s.line_start, s.line_end, _best(s.points, plan.section_points))
                      for s in summaries)
    else:
        shown = _shared(summaries, plan.section_points)
        for section in shown:
            yield SectionDone(path, section)
    yield Progress(done, total, "overview")
    tops = [_Input(p.text, p.citations, p.salience) for s in summaries for p in s.points]
    overview = run.reduce(level="document", path=path, inputs=tops, points=plan.overview_points,
                          max_tokens=plan.overview_tokens) if tops else ()
    tokens = sum(run.count_tokens(c.text) for c in chunks) if run.method == "model" else sum(c.token_count for c in chunks)
    yield DocumentDone(DocumentSummary(path, document.title, overview, shown, len(chunks), tokens))


def _best(points: Sequence[Point], n: int) -> tuple[Point, ...]:
    """The ``n`` most salient of a section's points, in document order (a section keeps more
    than it shows: the overview chooses among them)."""
    keep = set(sorted(range(len(points)), key=lambda i: -points[i].salience)[:n])
    return tuple(p for i, p in enumerate(points) if i in keep)


def _shared(sections: Sequence[SectionSummary], n: int) -> tuple[SectionSummary, ...]:
    """``n`` points a section on average: each section's most salient point, then the most salient
    of all points left until the budget is spent; each section's points in document order."""
    keep = [{max(range(len(s.points)), key=lambda i: s.points[i].salience)} if s.points else set() for s in sections]
    rest = sorted(((-p.salience, k, i) for k, s in enumerate(sections) for i, p in enumerate(s.points)
                   if i not in keep[k]))
    for _, k, i in rest[:max(0, n * len(sections) - sum(map(len, keep)))]:
        keep[k].add(i)
    return tuple(SectionSummary(s.heading, s.line_start, s.line_end,
                                tuple(p for i, p in enumerate(s.points) if i in keep[k]))
                 for k, s in enumerate(sections))


def summarize_document(*, store: Store, path: str, method: str = DEFAULT_METHOD, length: str = "medium",
                       generator=None, input_tokens: int = 1024, scorer: Scorer | None = None) -> Iterator[Piece]:
    """Summarize one indexed document: section summaries (with the model as each finishes; by
    extract all together, sharing one budget of points), then the overview.
    ``generator``: a Generator, a factory of one, or None (extract only). The last piece is the
    ``Summary``."""
    run = _begin(store, method, length, generator, input_tokens, scorer)
    document = None
    for piece in _document_tree(run, path, LENGTHS[length]):
        if isinstance(piece, DocumentDone):
            document = piece.document
        yield piece
    yield Summary("document", path, method, length, document.overview, (document,), run.stats(), tuple(run.notes))


def summarize_folder(*, store: Store, folder: str | None, method: str = DEFAULT_METHOD, length: str = "medium",
                     generator=None, input_tokens: int = 1024, scorer: Scorer | None = None) -> Iterator[Piece]:
    """Summarize every indexed document under ``folder`` (None: all of them): one line per
    document as each finishes, then an overview of the folder."""
    run = _begin(store, method, length, generator, input_tokens, scorer)
    root = None if folder is None else folder.rstrip(os.sep) + os.sep
    documents = store.documents()
    paths = sorted(p for p, d in documents.items() if root is None or p.startswith(root) or p == folder)
    indexed = [p for p in paths if documents[p].status == "indexed"]
    if not indexed:
        raise NotIndexedError(f"no indexed documents under {folder}" if folder else "nothing is indexed yet")
    skipped = [p for p in paths if documents[p].status != "indexed"]
    if skipped:
        run.notes.append(f"{len(skipped)} skipped file(s) are not summarized: {', '.join(skipped[:5])}"
                         + (" …" if len(skipped) > 5 else ""))
    brief = LENGTHS["short"]
    results: list[DocumentSummary] = []
    for n, path in enumerate(indexed):
        yield Progress(n, len(indexed) + 1, path)
        for piece in _document_tree(run, path, LengthPlan(1, 0, brief.overview_tokens)):
            if isinstance(piece, DocumentDone):
                results.append(piece.document)
                yield piece
    yield Progress(len(indexed), len(indexed) + 1, "overview")
    lines = [_Input(d.overview[0].text, d.overview[0].citations, d.overview[0].salience) for d in results if d.overview]
    plan = LENGTHS[length]
    overview = run.reduce(level="folder", path=folder, inputs=lines, points=plan.overview_points,
                          max_tokens=plan.overview_tokens)
    yield Summary("folder", folder or "(all documents)", method, length, overview, tuple(results), run.stats(),
                  tuple(run.notes))


def summarize_target(*, store: Store, method: str, length: str, generator, path: str | None = None,
                     topic: str | None = None, load_embedder=None, min_relevance: float = 0.3) -> Iterator[Piece]:
    """The pieces of whichever summary is asked for: a ``topic`` (``load_embedder()`` gives the
    embedder, loaded only then), a folder or everything (``path`` a folder, or None), or one document."""
    options = {"method": method, "length": length, "generator": generator}
    if topic is not None:
        return summarize_topic(store=store, topic=topic, embedder=load_embedder(), min_relevance=min_relevance,
                               **options)
    if path is None or os.path.isdir(path):
        return summarize_folder(store=store, folder=path, **options)
    return summarize_document(store=store, path=path, **options)


def summarize_topic(*, store: Store, topic: str, embedder, method: str = DEFAULT_METHOD, length: str = "medium",
                    generator=None, top_k: int = 12, min_relevance: float = 0.3, vectors=None,
                    input_tokens: int = 1024, scorer: Scorer | None = None) -> Iterator[Piece]:
    """Retrieve the chunks about ``topic`` across all documents and summarize them with citations.
    Only sentences that score at least ``min_relevance`` against the topic are used."""
    from .retrieve import best_sentences, search

    if not topic.strip():
        raise RequestError("the topic is empty")
    run = _begin(store, method, length, generator, input_tokens, scorer)
    yield Progress(0, 2, "retrieving")
    found = search(store=store, embedder=embedder, query=topic, k=top_k, vectors=vectors)
    picked = best_sentences(query=topic, chunks=found, embedder=embedder, limit=60, store=store) if found else []
    relevant = [s for s in picked if s.score >= min_relevance]
    if not relevant:
        run.notes.append(f"nothing indexed is about {topic!r}" + (
            f" (best sentence scores {picked[0].score:.2f}, below {min_relevance:.2f})" if picked else ""))
        yield Summary("topic", topic, method, length, (), (), run.stats(), tuple(run.notes))
        return
    if len(picked) > len(relevant):
        run.notes.append(f"{len(picked) - len(relevant)} retrieved sentence(s) scored below {min_relevance:.2f} "
                         "against the topic and were left out")
    # Document order within each document, documents by their best sentence.
    order = {}
    for s in relevant:
        order.setdefault(found[s.chunk_index].chunk.path, len(order))
    relevant.sort(key=lambda s: (order[found[s.chunk_index].chunk.path], s.line_start))
    # Retrieved sentences are not one document in order: their salience is scored among
    # themselves (what they tell that the others do not), plus their relevance to the topic.
    told = run.scorer([Unit(s.text, "") for s in relevant])
    inputs = [_Input(s.text, (Citation(found[s.chunk_index].chunk.path, s.line_start, s.line_end,
                                       found[s.chunk_index].chunk.page, found[s.chunk_index].chunk.context),),
                     s.score + value)
              for s, value in zip(relevant, told)]
    yield Progress(1, 2, "summarizing")
    plan = LENGTHS[length]
    overview = run.reduce(level="topic", path=None, inputs=inputs, points=plan.overview_points,
                          max_tokens=plan.overview_tokens, instruction=topic)
    yield Summary("topic", topic, method, length, overview, (), run.stats(), tuple(run.notes))


# -- JSON -----------------------------------------------------------------------------------------


def _citation_dict(c: Citation) -> dict:
    return {"path": c.path, "line_start": c.line_start, "line_end": c.line_end, "page": c.page, "heading": c.heading}


def _point_dict(p: Point) -> dict:
    return {"text": p.text, "citations": [_citation_dict(c) for c in p.citations]}


def section_to_dict(s: SectionSummary) -> dict:
    return {"heading": s.heading, "line_start": s.line_start, "line_end": s.line_end,
            "points": [_point_dict(p) for p in s.points]}


def document_to_dict(d: DocumentSummary) -> dict:
    return {"path": d.path, "title": d.title, "chunks": d.chunks, "tokens": d.tokens,
            "overview": [_point_dict(p) for p in d.overview], "sections": [section_to_dict(s) for s in d.sections]}


def summary_to_dict(summary: Summary) -> dict:
    """The JSON form: what ``summarize --json`` prints and what the daemon sends."""
    stats = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.stats.__dict__.items()}
    return {"kind": summary.kind, "subject": summary.subject, "method": summary.method, "length": summary.length,
            "overview": [_point_dict(p) for p in summary.overview],
            "documents": [document_to_dict(d) for d in summary.documents], "stats": stats,
            "notes": list(summary.notes)}


def piece_to_event(piece: Piece) -> tuple[str, dict]:
    """A streamed piece as a server-sent event (name, data)."""
    if isinstance(piece, Progress):
        return "progress", {"done": piece.done, "total": piece.total, "label": piece.label}
    if isinstance(piece, SectionDone):
        return "section", {"path": piece.path, **section_to_dict(piece.section)}
    if isinstance(piece, DocumentDone):
        return "document", document_to_dict(piece.document)
    return "summary", summary_to_dict(piece)
