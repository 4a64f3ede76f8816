"""Map-reduce summaries of indexed documents, folders and topics, cached by content hash.

A document's chunks become sentences with their exact source lines; sentences are packed into
batches within a token budget (leaves), leaves reduce to section summaries, sections to the
document overview. Every node is cached in the store under the SHA-256 of its inputs' text plus
the method, model and prompt version, so after an edit only the changed branch is computed again.
Every point carries the citations of the sentences it came from; a model sentence that no input
supports is dropped (and counted), never shown. Never prints: results come as a stream of pieces.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from bisect import bisect_right
from typing import Callable, Iterator, Sequence

from .chunking import approx_tokens
from .errors import EdgeLlamaError, NotIndexedError, RequestError
from .prompt import _truncate_to
from .retrieve import STOPWORDS, content_words
from .salient import ACKNOWLEDGEMENTS, Unit, is_record_document, pick, record_prefix, salience
from .store import ChunkRecord, Store, SummaryRecord

__all__ = [
    "Citation", "Point", "SectionSummary", "DocumentSummary", "SummaryStats", "Summary", "Progress",
    "SectionDone", "DocumentDone", "Piece", "summarize_document", "summarize_folder", "summarize_topic",
    "summary_to_dict", "final_summary", "METHODS", "LENGTHS", "DEFAULT_METHOD", "PROMPT_VERSION",
]

METHODS = ("extract", "model")
# Measured on tests/longdoc.py (bench/summarize.py): extract keeps as many key facts as the 135M
# model in a thousandth of the time, so it is the default; the model method is there for bigger models.
DEFAULT_METHOD = "extract"
PROMPT_VERSION = "sum-2"  # change it whenever a prompt or a reducer changes: old cache entries then miss


@dataclass(frozen=True)
class LengthPlan:
    overview_points: int  # points in a document (or folder, or topic) overview
    section_points: int  # points shown per section (0: sections are not shown)
    overview_tokens: int  # the model's budget for the overview


LENGTHS: dict[str, LengthPlan] = {
    "short": LengthPlan(3, 0, 80),
    "medium": LengthPlan(5, 2, 140),
    "long": LengthPlan(8, 4, 220),
}
LEAF_POINTS = 3  # points kept per leaf batch (both methods; length-independent so the cache is shared)
SECTION_POINTS = 4  # points kept per section; `long` shows all, `medium` the first two
LEAF_TOKENS = 48  # the model's output budget for a leaf
SECTION_TOKENS = 80  # ... and for a section
REDUNDANCY_WEIGHT = 0.7  # extract: penalty for similarity to a sentence already picked
FLAT_PARTS = 8  # a document without headings is cut into about this many parts by position
EXCHANGE_LEAD = 2  # a log or transcript point: up to this many short entries before the picked one
EXCHANGE_WORDS = 12  # ... each of at most this many words
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
        lines = f"{self.line_start}" if self.line_start == self.line_end else f"{self.line_start}-{self.line_end}"
        return f"{self.path}:{lines}" + (f" page {self.page}" if self.page else "")


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
    salience: float = 0.0  # computed once per document (salient.py); the extractive picks go by it


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


@dataclass
class _Run:
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
    scorer: Callable[..., list[float]] = salience

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
             [round(i.salience, 3) for i in inputs] if self.method != "model" else []],
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
            part = max(LEAF_POINTS, -(-points // len(batches)))  # enough for the level above to choose from
            for batch in batches:
                merged += [_Input(p.text, p.citations, p.salience) for p in self.node(
                    level=f"{level}-part", path=path, inputs=batch, points=part,
                    max_tokens=LEAF_TOKENS * part // LEAF_POINTS, instruction=instruction)]
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
                cut = _truncate_to(item.text, self.input_tokens - 1, self.count_tokens)
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


_FINISHED = re.compile(r"[.!?][\"')\]]*$")
_MARKUP = re.compile(r"\*\*|__|`")
_WORD = re.compile(r"\w(?:[\w,.:/-]*\w)?")


def _by_extract(inputs: Sequence[_Input], *, points: int, query: str = "") -> list[dict]:
    """The most salient inputs (their ``salience``, computed once per document by salient.py),
    with a query plus the share of its words each states; picked greedily, each pick penalized
    by its similarity to those already picked and kept apart from their lines (salient.pick).
    Picks keep their original order; a sentence repeated word for word counts once and cites
    every place it stands."""
    if not inputs:
        return []
    query_words = content_words(query)
    same: dict[str, list[int]] = {}
    for i, item in enumerate(inputs):
        same.setdefault(" ".join(item.text.lower().split()), []).append(i)
    firsts = [ids[0] for ids in same.values()]
    scores = [inputs[i].salience + (len(query_words & content_words(inputs[i].text)) / len(query_words)
                                    if query_words else 0.0) for i in firsts]
    places = [(inputs[i].citations[0].path, inputs[i].citations[0].line_start) if inputs[i].citations else ("", i)
              for i in firsts]
    chosen = pick([inputs[i].text for i in firsts], scores, points=points, places=places,
                  redundancy=REDUNDANCY_WEIGHT, gap=MOMENT_GAP)
    return [{"text": inputs[firsts[k]].text, "sources": same[" ".join(inputs[firsts[k]].text.lower().split())]}
            for k in chosen]


# -- documents ------------------------------------------------------------------------------------


_HEADING_LINE = re.compile(r"^\s*(#{1,6}\s|([=\-~^\"'`#*+])\2{2,}\s*$)")
_BULLET = re.compile(r"^\s*([-*+•]|\d{1,3}[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, across line breaks within a paragraph; headings
    (markdown ``#`` lines, rst titles and their underlines) and blank lines end a paragraph."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    blocks: list[tuple[int, int]] = []
    begin = None
    for i, line in enumerate(lines):
        heading = (_HEADING_LINE.match(line) is not None
                   or (i + 1 < len(lines) and line.strip() and _HEADING_LINE.match(lines[i + 1] or "") is not None
                       and not lines[i + 1].lstrip().startswith("#")))
        if not line.strip() or heading or _BULLET.match(line):
            if begin is not None:
                blocks.append((begin, starts[i] - 1))
                begin = None
        if line.strip() and not heading and begin is None:
            begin = starts[i]
    if begin is not None:
        blocks.append((begin, len(text)))
    spans = []
    for a, b in blocks:
        block = text[a:b].replace("\n", " ")  # same length: offsets still point into ``text``
        pos = 0
        for match in _SENTENCE_END.finditer(block):
            spans.append((a + pos, a + match.start()))
            pos = match.end()
        spans.append((a + pos, a + len(block.rstrip())))
    return [(a + (len(text[a:b]) - len(text[a:b].lstrip())), b) for a, b in spans if text[a:b].strip()]


@dataclass(frozen=True)
class _Line:
    text: str
    source: int  # the line number in the file
    page: int | None


def _document_lines(chunks: Sequence[ChunkRecord]) -> list[_Line]:
    """The document's text again, line by line with source line and page, from its chunks:
    the overlap between neighbouring chunks is taken once (a chunk may start or end mid-line)."""
    out: list[_Line] = []
    where: dict[tuple[int, int | None], int] = {}
    for chunk in chunks:
        sources = json.loads(chunk.line_map) or [chunk.line_start]
        for k, text in enumerate(chunk.text.split("\n")):
            key = (sources[min(k, len(sources) - 1)], chunk.page)
            at = where.get(key)
            if at is not None:
                old = out[at].text
                if text in old:
                    continue
                if old in text:
                    out[at] = _Line(text, *key)
                    continue
                joint = next((n for n in range(min(len(old), len(text)), 9, -1) if old.endswith(text[:n])), 0)
                if joint:
                    out[at] = _Line(old + text[joint:], *key)
                    continue
            where[key] = len(out)
            out.append(_Line(text, *key))
    return out


_MD_HEADING = re.compile(r"^\s*(#{1,6})\s+(.+?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+])\1{2,}\s*$")


def _headings(lines: Sequence[_Line]) -> dict[int, tuple[int, str]]:
    """Line index -> (level, title) of each markdown heading (HTML ones arrive as markdown) and
    each underlined rst title."""
    found = {}
    for i, line in enumerate(lines):
        md = _MD_HEADING.match(line.text)
        if md:
            found[i] = (len(md.group(1)), md.group(2).strip())
        elif (i + 1 < len(lines) and line.text.strip() and len(line.text.strip()) < 100
              and _UNDERLINE.match(lines[i + 1].text)
              and len(lines[i + 1].text.strip()) >= len(line.text.strip()) * 0.6):
            found[i] = ({"=": 1, "-": 2}.get(lines[i + 1].text.strip()[0], 3), line.text.strip())
    return found


def _sections(chunks: Sequence[ChunkRecord], *, name: str, count_tokens: Callable[[str], int],
              group_tokens: int, parts: int = FLAT_PARTS,
              scorer: Callable[..., list[float]] = salience) -> list[tuple[str, list[_Input]]]:
    """(section heading, its sentences with exact citations and salience) in document order. A
    section starts at each heading of the highest level below the title; a document without
    headings is cut into about ``parts`` parts (at least ``group_tokens`` each) at paragraph or
    page breaks, or at any entry of a log or transcript, named by their lines or pages. In a log
    or transcript (salient.is_record_document) each entry is one unit, not its sentences.
    ``scorer`` scores all units of the document at once (salient.SCORERS)."""
    lines = _document_lines(chunks)
    if not lines:
        return []
    path = chunks[0].path
    records = is_record_document([line.text for line in lines])
    heads = {} if records else _headings(lines)
    levels = Counter(level for level, _ in heads.values())
    top = min(levels) if levels else None
    if top is not None and levels[top] == 1 and len(levels) > 1:
        top = min(level for level in levels if level > top)  # the one top heading is the title
    elif top is not None and levels[top] == 1:
        top = None  # a title and nothing else: no sections
    code, fenced = [], False
    for line in lines:
        fence = line.text.lstrip().startswith(("```", "~~~"))
        code.append(fenced or fence)
        fenced = fenced != fence
    if top is None:  # flat: parts by position, at least ``group_tokens`` each, about ``parts`` of them
        total = sum(count_tokens(line.text) for line in lines if line.text.strip())
        group_tokens = max(group_tokens, total // parts)
    cut: list[tuple[str, list[int]]] = [(name, [])]
    trail: dict[int, str] = {}
    context: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        head = heads.get(i)
        if head:
            trail = {lvl: t for lvl, t in trail.items() if lvl < head[0]}
            trail[head[0]] = head[1]
        if top is not None and head and head[0] == top:
            cut.append((head[1], []))
        elif top is None and used >= group_tokens and (records or not line.text.strip() or (
                i and line.page != lines[i - 1].page)):
            cut.append(("", []))
            used = 0
        if top is None:
            used += count_tokens(line.text) if line.text.strip() else 0
        cut[-1][1].append(i)
        context.append(" > ".join(trail[lvl] for lvl in sorted(trail)))
    # Every unit of the document in order (also those too short to be a point: they are the
    # context an event is recognized by), with the section it belongs to if it can be a point.
    units: list[Unit] = []
    shown: list[tuple[str, int]] = []  # each unit as written, with its line
    found: list[tuple[int, _Input, int]] = []  # (part, the point it can be, its unit)
    for number, (heading, indexes) in enumerate(cut):
        if not indexes:
            continue
        # Code blocks are blanked (same length, so offsets hold): commands are not sentences.
        block = "\n".join("" if code[i] else lines[i].text for i in indexes)
        starts = [0]
        for i in indexes:
            starts.append(starts[-1] + len(lines[i].text if not code[i] else "") + 1)
        items: list[_Input] = []
        loose: list[_Input] = []  # without final punctuation (lists, menus): used only if nothing else
        kept: list[tuple[_Input, int]] = []
        spans = ([(starts[k], starts[k] + len(lines[i].text)) for k, i in enumerate(indexes) if lines[i].text.strip()]
                 if records else sentence_spans(block))
        for start, end in spans:
            text = _MARKUP.sub("", _BULLET.sub("", " ".join(block[start:end].split())))
            prefix = record_prefix(text) if records else None
            said = text[prefix[0]:] if prefix else text
            units.append(Unit(said, prefix[1] if prefix else ""))
            shown.append((text, lines[indexes[bisect_right(starts, start) - 1]].source))
            if len(said.split()) < 3 or len(content_words(said)) < 2 or text.count("|") >= 2:
                continue  # fragments and table rows make no point
            first = indexes[bisect_right(starts, start) - 1]
            last = indexes[bisect_right(starts, max(start, end - 1)) - 1]
            item = _Input(text, (Citation(path, lines[first].source, lines[last].source, lines[first].page,
                                          context[first]),))
            (items if records or _FINISHED.search(text) else loose).append(item)
            kept.append((item, len(units) - 1))
        chosen = {id(i) for i in (items or loose)}
        found += [(number, item, u) for item, u in kept if id(item) in chosen]
    scores = scorer(units) if units else []
    out: list[tuple[str, list[_Input]]] = []
    for number, (heading, indexes) in enumerate(cut):
        items = [_Input(*(_exchange(item, u, units, shown) if records else (item.text, item.citations)), scores[u])
                 for n, item, u in found if n == number]
        if not items:
            continue
        if not heading:  # a part of a document without headings: named by where it stands
            first, last = items[0].citations[0], items[-1].citations[0]
            heading = (f"pages {first.page}-{last.page}" if first.page and first.page != last.page
                       else f"page {first.page}" if first.page else f"lines {first.line_start}-{last.line_end}")
        out.append((heading, items))
    return out


def _exchange(item: _Input, at: int, units: Sequence[Unit], shown: Sequence[tuple[str, int]]
              ) -> tuple[str, tuple[Citation, ...]]:
    """A log or transcript entry with the short entries just before it that lead up to it (a
    call, a question, a one-line report: "Houston, Tranquility Base here." before "Roger,
    Tranquility. We copy you on the ground."): one entry alone is often a reply to nothing
    shown. Pure acknowledgements are left out; the citation covers the lines."""
    lead: list[int] = []
    for j in range(at - 1, max(-1, at - 1 - EXCHANGE_LEAD), -1):
        words = units[j].text.split()
        if len(words) > EXCHANGE_WORDS or not shown[j][0]:
            break
        if content_words(units[j].text) - ACKNOWLEDGEMENTS:
            lead.insert(0, j)
    if not lead:
        return item.text, item.citations
    c = item.citations[0]
    text = " ".join([*(shown[j][0] for j in lead), item.text])
    return text, (Citation(c.path, shown[lead[0]][1], c.line_end, c.page, c.heading),)


def _begin(store: Store, method: str, length: str, generator, input_tokens: int, scorer=None) -> _Run:
    if method not in METHODS:
        raise RequestError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if length not in LENGTHS:
        raise RequestError(f"length must be one of {', '.join(LENGTHS)}, got {length!r}")
    if method == "model" and generator is None:
        raise EdgeLlamaError("the model method needs a language model")
    if method == "extract" and not hasattr(generator, "count_tokens"):
        generator = None  # a factory is not called: the extractive method only borrows a loaded tokenizer
    run = _start(store, method, generator, input_tokens)
    if scorer is not None:
        run.scorer = scorer
    return run


def _memoized(count: Callable[[str], int]) -> Callable[[str], int]:
    """Each sentence is counted once per run, though batches are planned more than once."""
    seen: dict[str, int] = {}

    def counted(text: str) -> int:
        if text not in seen:
            seen[text] = count(text)
        return seen[text]

    return counted


def _start(store: Store, method: str, generator, input_tokens: int) -> _Run:
    if callable(generator) and not hasattr(generator, "stream"):
        generator = generator()  # a factory: only the model method loads the model
    count = _memoized(generator.count_tokens if generator is not None else approx_tokens)
    name = getattr(generator, "name", "") or ""
    if generator is not None and method == "model":
        # The prompt's fixed words and the output must fit the context window with the input.
        room = generator.n_ctx - count(_prompt([], instruction="x" * 40, points=8)) - max(
            SECTION_TOKENS, *(p.overview_tokens for p in LENGTHS.values())) - 16
        input_tokens = min(input_tokens, room)
    return _Run(store=store, method=method, generator=generator, count_tokens=count, input_tokens=input_tokens,
                model_name=name)


def _document_tree(run: _Run, path: str, plan: LengthPlan) -> Iterator[Piece]:
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
        if plan.section_points:
            yield SectionDone(path, SectionSummary(section.heading, section.line_start, section.line_end,
                                                   points[: plan.section_points]))
    yield Progress(done, total, "overview")
    tops = [_Input(p.text, p.citations, p.salience) for s in summaries for p in s.points]
    overview = run.reduce(level="document", path=path, inputs=tops, points=plan.overview_points,
                          max_tokens=plan.overview_tokens) if tops else ()
    tokens = sum(run.count_tokens(c.text) for c in chunks) if run.method == "model" else sum(c.token_count for c in chunks)
    shown = tuple(SectionSummary(s.heading, s.line_start, s.line_end, s.points[: plan.section_points])
                  for s in summaries) if plan.section_points else ()
    yield DocumentDone(DocumentSummary(path, document.title, overview, shown, len(chunks), tokens))


def summarize_document(*, store: Store, path: str, method: str = DEFAULT_METHOD, length: str = "medium",
                       generator=None, input_tokens: int = 1024, scorer=None) -> Iterator[Piece]:
    """Summarize one indexed document: section summaries as they finish, then the overview.
    ``generator``: a Generator, a factory of one, or None (extract only). ``scorer``: the
    extractive score of a document's units (default salient.salience; the benchmark passes
    others to compare). The last piece is the ``Summary``."""
    run = _begin(store, method, length, generator, input_tokens, scorer)
    document = None
    for piece in _document_tree(run, path, LENGTHS[length]):
        if isinstance(piece, DocumentDone):
            document = piece.document
        yield piece
    yield Summary("document", path, method, length, document.overview, (document,), run.stats(), tuple(run.notes))


def summarize_folder(*, store: Store, folder: str | None, method: str = DEFAULT_METHOD, length: str = "medium",
                     generator=None, input_tokens: int = 1024, scorer=None) -> Iterator[Piece]:
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


def summarize_topic(*, store: Store, topic: str, embedder, method: str = DEFAULT_METHOD, length: str = "medium",
                    generator=None, top_k: int = 12, min_relevance: float = 0.3, vectors=None,
                    input_tokens: int = 1024, scorer=None) -> Iterator[Piece]:
    """Retrieve the chunks about ``topic`` across all documents and summarize them with citations.
    Only sentences that score at least ``min_relevance`` against the topic are used."""
    from .retrieve import best_sentences, search

    if not topic.strip():
        raise RequestError("the topic is empty")
    run = _begin(store, method, length, generator, input_tokens, scorer)
    yield Progress(0, 2, "retrieving")
    found = search(store=store, embedder=embedder, query=topic, k=top_k, vectors=vectors)
    picked = best_sentences(query=topic, chunks=found, embedder=embedder, limit=60) if found else []
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
    inputs = [_Input(s.text, (Citation(found[s.chunk_index].chunk.path, s.line_start, s.line_end,
                                       found[s.chunk_index].chunk.page, found[s.chunk_index].chunk.context),))
              for s in relevant]
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
