"""A document rebuilt from its stored chunks as sections of sentences, each with its exact source
lines, page and heading trail. Pure: no SQL, no models, no summaries; text rules are text.py's.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from .store import ChunkRecord
from .text import content_words, heading_at, sentence_spans_within_paragraphs, without_bullet

__all__ = ["document_sections"]

_FINISHED = re.compile(r"[.!?][\"')\]]*$")
_MARKUP = re.compile(r"\*\*|__|`")


@dataclass(frozen=True)
class SectionSentence:
    text: str  # single-spaced, without list markers and emphasis marks
    line_start: int  # source lines in the file
    line_end: int
    page: int | None
    heading: str  # the heading trail ("Power > Batteries") where the sentence starts


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
                      group_tokens: int) -> list[Section]:
    """The sections of the document whose ``chunks`` are given, in document order. A section starts
    at each heading of the highest level below the title; a document without headings is cut into
    parts of about ``group_tokens`` at paragraph or page breaks, named by their lines or pages. The
    part before the first heading is named ``name``. Sections without a sentence are left out."""
    lines = _document_lines(chunks)
    if not lines:
        return []
    heads = _headings(lines)
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
    parts: list[tuple[str, list[int]]] = [(name, [])]
    trail: dict[int, str] = {}
    context: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        head = heads.get(i)
        if head:
            trail = {lvl: t for lvl, t in trail.items() if lvl < head[0]}
            trail[head[0]] = head[1]
        if top is not None and head and head[0] == top:
            parts.append((head[1], []))
        elif top is None and used >= group_tokens and (not line.text.strip() or (
                i and line.page != lines[i - 1].page)):
            parts.append(("", []))
            used = 0
        if top is None:
            used += count_tokens(line.text) if line.text.strip() else 0
        parts[-1][1].append(i)
        context.append(" > ".join(trail[lvl] for lvl in sorted(trail)))
    out: list[Section] = []
    for heading, indexes in parts:
        if not indexes:
            continue
        # Code blocks are blanked (same length, so offsets hold): commands are not sentences.
        block = "\n".join("" if code[i] else lines[i].text for i in indexes)
        starts = [0]
        for i in indexes:
            starts.append(starts[-1] + len(lines[i].text if not code[i] else "") + 1)
        items: list[SectionSentence] = []
        loose: list[SectionSentence] = []  # without final punctuation (lists, menus): used only if nothing else
        for start, end in sentence_spans_within_paragraphs(block):
            text = _MARKUP.sub("", without_bullet(" ".join(block[start:end].split())))
            if len(text.split()) < 3 or len(content_words(text)) < 2 or text.count("|") >= 2:
                continue  # fragments and table rows make no point
            first = indexes[bisect_right(starts, start) - 1]
            last = indexes[bisect_right(starts, max(start, end - 1)) - 1]
            item = SectionSentence(text, lines[first].source, lines[last].source, lines[first].page, context[first])
            (items if _FINISHED.search(text) else loose).append(item)
        items = items or loose
        if not items:
            continue
        if not heading:  # a part of a document without headings: named by where it stands
            first, last = items[0], items[-1]
            heading = (f"pages {first.page}-{last.page}" if first.page and first.page != last.page
                       else f"page {first.page}" if first.page else f"lines {first.line_start}-{last.line_end}")
        out.append(Section(heading, tuple(items)))
    return out
