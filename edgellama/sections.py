"""A document rebuilt from its stored chunks as sections of sentences, each with its exact source
lines, page, heading trail and salience. Pure: no SQL, no models, no summaries; text rules are
text.py's, scores salience.py's. A log or transcript is a sequence of entries, not of sentences.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from .salience import ACKNOWLEDGEMENTS, MOMENT_WINDOW, Scorer, Unit, content_terms, salience
from .store import ChunkRecord
from .text import (content_words, entry_spans, heading_at, is_record_document, record_prefix, sentence_spans_within_paragraphs,
                   without_bullet)

__all__ = ["document_sections"]

_FINISHED = re.compile(r"[.!?][\"')\]]*$")
_MARKUP = re.compile(r"\*\*|__|`")
FLAT_PARTS = 8  # a document without headings is cut into about this many parts by position
EXCHANGE_LEAD = 2  # a log or transcript point: up to this many short entries before the picked one
EXCHANGE_FOLLOW = 1  # ... and the one just after it
EXCHANGE_WORDS = 12  # ... each of at most this many words
MOMENT_START = 0.6  # ... and the first entry of its moment that scores at least this share of the pick's
HEADLINE_ABOVE = 25  # words: an entry longer is shown through a short entry of its moment ...
HEADLINE_RATIO = 0.9  # ... whose words are at least this rare on average (mean IDF) against its own


@dataclass(frozen=True)
class SectionSentence:
    text: str  # single-spaced, without list markers and emphasis marks
    line_start: int  # source lines in the file
    line_end: int
    page: int | None
    heading: str  # the heading trail ("Power > Batteries") where the sentence starts
    salience: float = 0.0  # its score among all units of the document (salience.py)


@dataclass(frozen=True)
class Section:
    heading: str  # the section's heading, or where a part of a document without headings stands
    sentences: tuple[SectionSentence, ...]


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


def _headings(lines: Sequence[_Line]) -> dict[int, tuple[int, str]]:
    """Line index -> (level, title) of each heading (see ``text.heading_at``)."""
    texts = [line.text for line in lines]
    found = {}
    for i in range(len(texts)):
        heading = heading_at(texts, i)
        if heading:
            found[i] = (heading.level, heading.title)
    return found


def document_sections(chunks: Sequence[ChunkRecord], *, name: str, count_tokens: Callable[[str], int],
                      group_tokens: int, parts: int = FLAT_PARTS, scorer: Scorer = salience) -> list[Section]:
    """The sections of the document whose ``chunks`` are given, in document order, every sentence
    with its salience. A section starts at each heading of the highest level below the title; a
    document without headings is cut into about ``parts`` parts (at least ``group_tokens`` each)
    at paragraph or page breaks, or at any entry of a log or transcript, named by their lines or
    pages. The part before the first heading is named ``name``. Sections without a sentence are
    left out. In a log or transcript (text.is_record_document) each entry is one unit, shown with
    the short entries that lead up to it. ``scorer`` scores all units of the document at once,
    fragments too (they are the context an event is recognized by)."""
    lines = _document_lines(chunks)
    if not lines:
        return []
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
    if top is None:  # flat: parts by position, so that a long file still has a beginning, middle and end
        group_tokens = max(group_tokens, sum(count_tokens(line.text) for line in lines if line.text.strip()) // parts)
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
    units: list[Unit] = []
    written: list[tuple[str, int]] = []  # each unit as written, with its first line
    found: list[tuple[int, SectionSentence, int]] = []  # (part, a sentence that can be a point, its unit)
    for number, (heading, indexes) in enumerate(cut):
        if not indexes:
            continue
        # Code blocks are blanked (same length, so offsets hold): commands are not sentences.
        block = "\n".join("" if code[i] else lines[i].text for i in indexes)
        starts = [0]
        for i in indexes:
            starts.append(starts[-1] + len(lines[i].text if not code[i] else "") + 1)
        items: list[tuple[SectionSentence, int]] = []
        loose: list[tuple[SectionSentence, int]] = []  # no final punctuation (lists, menus): only if nothing else
        spans = [(a, b) for a, b, _ in entry_spans([lines[i].text for i in indexes], starts)] if records else \
            sentence_spans_within_paragraphs(block)
        for start, end in spans:
            text = _MARKUP.sub("", without_bullet(" ".join(block[start:end].split())))
            prefix = record_prefix(text) if records else None
            said = text[prefix[0]:] if prefix else text
            first = indexes[bisect_right(starts, start) - 1]
            units.append(Unit(said, prefix[1] if prefix else ""))
            written.append((text, lines[first].source))
            if len(said.split()) < 3 or len(content_words(said)) < 2 or text.count("|") >= 2:
                continue  # fragments and table rows make no point
            last = indexes[bisect_right(starts, max(start, end - 1)) - 1]
            item = SectionSentence(text, lines[first].source, lines[last].source, lines[first].page, context[first])
            (items if records or _FINISHED.search(text) else loose).append((item, len(units) - 1))
        found += [(number, item, u) for item, u in (items or loose)]
    scores = scorer(units) if units else []
    # (part, the sentence shown, its unit, the unit whose score it carries)
    shown: list[tuple[int, SectionSentence, int, int]] = [(n, item, u, u) for n, item, u in found]
    if records:
        terms = [set(content_terms(unit.text)) for unit in units]
        df = Counter(w for t in terms for w in t)
        density = [sum(math.log(len(units) / df[w]) for w in t) / len(t) if t else 0.0 for t in terms]
        items = {u: item for _, item, u in found}
        shown = [(n, *_headline(item, u, units, items, density)) for n, item, u in found]
    out: list[Section] = []
    for number, (heading, _) in enumerate(cut):
        sentences = [_exchange(item, u, units, written, scores, at) if records
                     else SectionSentence(item.text, item.line_start, item.line_end, item.page, item.heading, scores[u])
                     for n, item, u, at in shown if n == number]
        if not sentences:
            continue
        if not heading:  # a part of a document without headings: named by where it stands
            first, last = sentences[0], sentences[-1]
            heading = (f"pages {first.page}-{last.page}" if first.page and first.page != last.page
                       else f"page {first.page}" if first.page else f"lines {first.line_start}-{last.line_end}")
        out.append(Section(heading, tuple(sentences)))
    return out


def _headline(item: SectionSentence, at: int, units: Sequence[Unit], items: dict[int, SectionSentence],
              density: Sequence[float]) -> tuple[SectionSentence, int, int]:
    """(the entry to show, its unit, the unit whose score it carries) for the entry ``at``: a long
    entry (a monologue, a description, a read-out) is shown through the short entry of its moment
    (MOMENT_WINDOW units either side) whose words are rarest on average in the document, when
    they are nearly as rare as its own: a moment's memorable line is short ("That's one small step
    for man, one giant leap for mankind." beside a long description of the surface). The moment
    keeps the long entry's score; several long entries shown through one line are one point."""
    if len(units[at].text.split()) <= HEADLINE_ABOVE:
        return item, at, at
    best, value = at, HEADLINE_RATIO * density[at]
    for j in range(max(0, at - MOMENT_WINDOW), min(len(units), at + MOMENT_WINDOW + 1)):
        if j in items and len(units[j].text.split()) <= EXCHANGE_WORDS and density[j] > value:
            best, value = j, density[j]
    return items[best], best, at


def _exchange(item: SectionSentence, at: int, units: Sequence[Unit], written: Sequence[tuple[str, int]],
              scores: Sequence[float], scored: int) -> SectionSentence:
    """A log or transcript entry with the short entries around it: those that lead up to it (a
    call, a question, a one-line report: "Houston, Tranquility Base here." before "Roger,
    Tranquility. We copy you on the ground.") and the short reply after it ("Roger. Eagle is
    undocked."): one entry alone is often a reply to nothing shown. Pure acknowledgements are
    left out. An incident is told first and followed up ("Pump P-3 tripped ..." then "Why did P-4
    not start?", "Keep P-3 locked out"): the first entry of the moment (within MOMENT_WINDOW
    before it) that is not routine and scores at least MOMENT_START of the pick's score leads,
    "…" marking entries left out after it. The lines cited run from the first entry shown to the
    last; the point carries the score of the unit ``scored`` (see ``_headline``)."""
    score = scores[scored]
    def short(j: int) -> bool:  # a short entry (a page marker or a note between entries is not one)
        return len(units[j].text.split()) <= EXCHANGE_WORDS and record_prefix(written[j][0]) is not None

    lead: list[int] = []
    for j in range(at - 1, max(-1, at - 1 - EXCHANGE_LEAD), -1):
        if not short(j):
            break
        if content_words(units[j].text) - ACKNOWLEDGEMENTS:
            lead.insert(0, j)
    follow = [j for j in range(at + 1, min(len(units), at + 1 + EXCHANGE_FOLLOW))
              if short(j) and content_words(units[j].text) - ACKNOWLEDGEMENTS]
    follow = follow[:1] if follow and follow[0] == at + 1 else []
    first = lead[0] if lead else at

    def telling(j: int) -> bool:  # not routine, not long, not a bare acknowledgement
        return (scores[j] > 0 and record_prefix(written[j][0]) is not None
                and len(units[j].text.split()) <= HEADLINE_ABOVE and bool(content_words(units[j].text) - ACKNOWLEDGEMENTS))

    start = next((j for j in range(max(0, at - MOMENT_WINDOW), first)
                  if scores[j] >= MOMENT_START * scores[at] and telling(j)), None)
    if start is not None:
        lead = [start, *lead]
    if not lead and not follow:
        return SectionSentence(item.text, item.line_start, item.line_end, item.page, item.heading, score)
    shown = [*lead, at]
    parts: list[str] = []
    for k, j in enumerate(shown):
        if k and j > shown[k - 1] + 1:
            parts.append("…")
        parts.append(written[j][0] if j != at else item.text)
    text = " ".join([*parts, *(written[j][0] for j in follow)])
    return SectionSentence(text, written[lead[0]][1] if lead else item.line_start,
                           written[follow[-1]][1] if follow else item.line_end, item.page, item.heading, score)
