"""Pure functions: text -> chunks that follow headings and paragraphs, sized in tokens.
Knows nothing of files, models or storage (the token counter is passed in); text rules are text.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .text import heading_at, is_underline, line_sentence_spans

__all__ = ["chunk_text", "line_span", "approx_tokens"]

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class TextChunk:
    """A contiguous span ``text[char_start:char_end]`` of the document, under ``heading``."""

    text: str
    char_start: int
    char_end: int
    heading: str
    token_count: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    heading_level: int  # 0: body text
    para_start: bool


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token), for tests and fallbacks."""
    return max(1, (len(text) + 3) // 4)


def _lines_with_offsets(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _units(text: str, count_tokens: TokenCounter, max_tokens: int) -> list[_Unit]:
    lines = _lines_with_offsets(text)
    stripped_lines = [line.strip() for _, line in lines]  # heading rules on stripped lines, as ever
    units: list[_Unit] = []
    para_start = True
    skip_next = False
    for i, (start, line) in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        stripped = line.strip()
        if not stripped:
            para_start = True
            continue
        if is_underline(stripped) and not units:
            continue  # an rst overline before the title
        heading = heading_at(stripped_lines, i)
        level = heading.level if heading else 0
        skip_next = heading is not None and heading.underlined
        lead = len(line) - len(line.lstrip())
        if level:
            units.append(_Unit(start + lead, start + len(line.rstrip()), count_tokens(stripped), level, True))
            para_start = True
            continue
        for piece_start, piece_end in line_sentence_spans(line, lead):
            piece = line[piece_start:piece_end]
            # A huge piece (a 10 MB line) is not tokenized whole: the estimate only sizes the cuts,
            # each of which is counted exactly.
            tokens = count_tokens(piece) if len(piece) <= 64 * max_tokens else approx_tokens(piece)
            if tokens <= max_tokens:
                units.append(_Unit(start + piece_start, start + piece_end, tokens, 0, para_start))
                para_start = False
                continue
            for a, b, t in _split_long(piece, tokens, max_tokens, count_tokens):
                units.append(_Unit(start + piece_start + a, start + piece_start + b, t, 0, para_start))
                para_start = False
    return units


def _split_long(piece: str, tokens: int, max_tokens: int, count_tokens: TokenCounter) -> list[tuple[int, int, int]]:
    """Cut an over-long sentence into pieces of at most ``max_tokens``, at word boundaries where
    there are any; a run without spaces (a base64 blob, a 10 MB line of one word) is cut anywhere.
    Walks windows of characters, so a huge line costs no per-word memory."""
    out: list[tuple[int, int, int]] = []
    width = max(1, int(len(piece) * max_tokens / max(tokens, 1) * 0.9))
    a, end = len(piece) - len(piece.lstrip()), len(piece.rstrip())
    while a < end:
        b = min(end, a + width)
        while True:
            cut = b
            if b < end and not piece[b].isspace():
                space = max(piece.rfind(" ", a, b), piece.rfind("\t", a, b))
                if space > a:
                    cut = space
            stop = a + len(piece[a:cut].rstrip())
            t = count_tokens(piece[a:stop])
            if t <= max_tokens or stop - a <= 1:
                break
            b = a + max(1, (cut - a) * 3 // 4)
        out.append((a, stop, t))
        a = cut
        while a < end and piece[a].isspace():
            a += 1
    return out


def chunk_text(text: str, *, count_tokens: TokenCounter = approx_tokens, max_tokens: int = 200,
               overlap: int = 30) -> list[TextChunk]:
    """Pack sentences into chunks of at most ``max_tokens``; break at headings and, when a chunk
    is at least half full, at paragraph ends; repeat up to ``overlap`` tokens of the previous chunk."""
    units = _units(text, count_tokens, max_tokens)
    chunks: list[TextChunk] = []
    headings: dict[int, str] = {}
    current: list[_Unit] = []
    current_heading = ""

    def heading_path() -> str:
        return " > ".join(headings[level] for level in sorted(headings))

    def emit(group: Sequence[_Unit], heading: str) -> None:
        start, end = group[0].start, group[-1].end
        chunks.append(TextChunk(text[start:end], start, end, heading, sum(u.tokens for u in group)))

    for unit in units:
        size = sum(u.tokens for u in current)
        if unit.heading_level:
            if current and size >= max_tokens // 4:
                emit(current, current_heading)
                current = []
            title = text[unit.start:unit.end].lstrip("#").strip()
            headings = {lvl: h for lvl, h in headings.items() if lvl < unit.heading_level}
            headings[unit.heading_level] = title
            if not current:
                current_heading = heading_path()
            current.append(unit)
            continue
        if current and size + unit.tokens > max_tokens:
            cut = len(current)
            for j in range(len(current) - 1, 0, -1):
                if current[j].para_start and sum(u.tokens for u in current[:j]) >= max_tokens // 2:
                    cut = j
                    break
            emit(current[:cut], current_heading)
            rest = current[cut:]
            if not rest:
                carried: list[_Unit] = []
                for u in reversed(current):
                    if u.heading_level or sum(x.tokens for x in carried) + u.tokens > overlap:
                        break
                    carried.insert(0, u)
                if len(carried) == len(current):
                    carried = []
                rest = carried
            current = rest
            current_heading = heading_path()
        current.append(unit)
    if current:
        emit(current, current_heading)
    return chunks


def line_span(text: str, char_start: int, char_end: int) -> tuple[int, int]:
    """0-based indexes of the first and last text lines that a character span touches."""
    first = text.count("\n", 0, char_start)
    last = first + text.count("\n", char_start, max(char_start, char_end - 1))
    return first, last
