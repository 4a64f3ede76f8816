"""The cited lines on demand: a citation such as ``corpus/station/power.md:15-25`` (or
``manual.pdf:page 3``) parsed, and those lines rebuilt from the index as they were indexed.

Reads only the store (the text of the chunks and their line maps), never the file on disk, so a
daemon serving it cannot be led to read anything that is not indexed. Never prints.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Sequence

from .errors import EdgeLlamaError, NotIndexedError, OutOfRangeError, RequestError
from .store import Store

__all__ = ["Location", "ShownLine", "Excerpt", "MAX_CONTEXT", "parse_location", "resolve_path", "cited_path", "locate",
           "show_lines", "show_citation", "excerpt_to_dict"]

MAX_CONTEXT = 1000


@dataclass(frozen=True)
class Location:
    """What a citation names: a path, optionally a page and a line range (both inclusive)."""

    path: str
    line_start: int | None = None
    line_end: int | None = None
    page: int | None = None


@dataclass(frozen=True)
class ShownLine:
    page: int | None
    number: int
    text: str
    cited: bool  # inside the requested range (False: context from -C)


@dataclass(frozen=True)
class Excerpt:
    path: str
    title: str | None
    page: int | None
    line_start: int  # the requested range (the whole page or document when none was given;
    line_end: int  # 0 for every page of a PDF, whose lines are counted per page)
    lines: tuple[ShownLine, ...]


_LINES = r"(?P<a>\d+)(?:\s*-\s*(?P<b>\d+))?"
_PAGE = r"\(?\s*page\s+(?P<page>\d+)\s*\)?"
# The forms citations are printed in: path:15-25, path:15, path:15-25 page 3, path:15-25 (page 3),
# path:page 3, path:page 3:15-25.
_TAILS = (re.compile(rf":{_PAGE}(?::{_LINES})?$", re.I), re.compile(rf":{_LINES}(?:\s*{_PAGE})?$", re.I))


def parse_location(text: str, *, known: Sequence[str] = ()) -> Location:
    """Split ``PATH[:LINES]``. ``known``: paths taken whole even when they end like a line range."""
    if text in known:
        return Location(text)
    for tail in _TAILS:
        match = tail.search(text)
        if match and match.start() > 0:
            a, b, page = match.group("a"), match.group("b"), match.group("page")
            start = int(a) if a else None
            end = int(b) if b else start
            if start is not None and (start < 1 or end < start):
                raise RequestError(f"bad line range {a}-{b}: lines count from 1, first before last")
            if page is not None and int(page) < 1:
                raise RequestError("pages count from 1")
            return Location(text[:match.start()], start, end, int(page) if page else None)
    return Location(text)


def _document_lines(store: Store, path: str) -> dict[tuple[int | None, int], str]:
    """(page, source line) -> its text as indexed. Chunks overlap and may begin or end inside a line:
    the pieces of one line are put together by their offsets in the extracted text."""
    pieces: dict[tuple[int | None, int], list[tuple[int, str]]] = {}
    for span in store.document_spans(path):
        numbers = json.loads(span.line_map) or [1]
        offset = span.char_start
        for i, part in enumerate(span.text.split("\n")):
            key = (span.page, numbers[min(i, len(numbers) - 1)])
            pieces.setdefault(key, []).append((offset, part))
            offset += len(part) + 1
    lines = {}
    for key, parts in pieces.items():
        text, end = "", None
        for offset, part in sorted(parts):
            if end is None:
                text, end = part, offset + len(part)
            elif offset + len(part) > end:
                # Overlapping pieces share their text; a gap between pieces was whitespace.
                text += part[max(0, end - offset):] if offset <= end else " " + part
                end = offset + len(part)
        lines[key] = text
    return lines


def show_lines(*, store: Store, location: Location, context: int = 0) -> Excerpt:
    """The lines ``location`` names, with ``context`` lines before and after. Errors are one line:
    not indexed (404), skipped when indexed, a page or lines the document does not have."""
    if not 0 <= context <= MAX_CONTEXT:
        raise RequestError(f"context must be between 0 and {MAX_CONTEXT} lines")
    path = location.path
    document = store.document(path)
    if document is None:
        raise NotIndexedError(f"{path} is not in the index (see 'edgellama status'; paths as search prints them)")
    if document.status != "indexed":
        raise EdgeLlamaError(f"{path} was skipped when indexing: {document.error}")
    lines = _document_lines(store, path)
    pages = sorted({page for page, _ in lines if page is not None})
    page = location.page
    if page is not None and not pages:
        raise RequestError(f"{path} has no pages (it is not a PDF): cite it as {path}:LINES")
    if page is not None and page not in pages:
        raise OutOfRangeError(f"{path} has no indexed text on page {page} (pages {_ranges(pages)})")
    if pages and page is None and location.line_start is not None:
        raise RequestError(f"{path} is a PDF: its lines are counted per page; give the page, e.g. "
                           f"{path}:page {pages[0]}:{location.line_start}-{location.line_end}")
    chosen = [key for key in lines if page is None or key[0] == page]
    if not chosen:
        raise EdgeLlamaError(f"{path} has no indexed text")
    if location.line_start is None:  # the whole page, or every page, or the whole document
        shown = []
        for each in ([page] if page is not None else pages or [None]):
            last = max(n for p, n in chosen if p == each)
            shown += [ShownLine(each, n, lines.get((each, n), ""), True) for n in range(1, last + 1)]
        return Excerpt(path, document.title, page, 1, shown[-1].number if page is not None or not pages else 0,
                       tuple(shown))
    last_line = max(n for _, n in chosen)
    start, end = location.line_start, location.line_end or location.line_start
    if end > last_line:
        where = f" on page {page}" if page is not None else ""
        asked = f"lines {start}-{end} are" if end != start else f"line {start} is"
        raise OutOfRangeError(f"{asked} out of range: {path} has lines 1-{last_line}{where}")
    low, high = max(1, start - context), min(last_line, end + context)
    # Lines no chunk holds (blank lines, rule lines under headings) are shown empty: as indexed.
    shown = [ShownLine(page, n, lines.get((page, n), ""), start <= n <= end) for n in range(low, high + 1)]
    return Excerpt(path, document.title, page, start, end, tuple(shown))


def cited_path(text: str) -> str:
    """A citation as the user typed it, its path made absolute (relative to here, as search prints
    paths) and its line range kept as typed. A file named like ``notes:12`` resolves the same."""
    location = parse_location(text)
    return resolve_path(location.path) + text[len(location.path):]


def locate(store: Store, cited: str) -> Location:
    """``cited`` parsed, or taken whole when that is an indexed path."""
    return parse_location(cited, known=[cited] if store.document(cited) else [])


def show_citation(*, store: Store, cited: str, context: int = 0) -> Excerpt:
    """``show_lines`` of an absolute citation (``cited_path``)."""
    return show_lines(store=store, location=locate(store, cited), context=context)


def resolve_path(text: str) -> str:
    """A path as the user typed it (relative to here, as search prints them) -> the stored key."""
    from .indexer import _path_key  # the one rule for how a path is stored

    return _path_key(os.path.abspath(os.path.expanduser(text)))


def _ranges(numbers: list[int]) -> str:
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])


def excerpt_to_dict(excerpt: Excerpt) -> dict:
    """The JSON form: what ``show --json`` prints and ``GET /show`` answers."""
    return {"path": excerpt.path, "title": excerpt.title, "page": excerpt.page, "line_start": excerpt.line_start,
            "line_end": excerpt.line_end,
            "lines": [{"page": s.page, "line": s.number, "text": s.text, "cited": s.cited} for s in excerpt.lines]}
