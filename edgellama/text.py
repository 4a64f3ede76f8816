"""Pure text rules shared by chunking, retrieval, answers and summaries: words, normalization,
sentences, headings, truncation to a token budget. Standard library only; knows no files or models.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = [
    "MONTHS", "NUMBER_WORDS", "WEEKDAYS",
    "STOPWORDS", "content_words", "normalize_answer", "truncate_to_tokens", "line_sentence_spans",
    "sentence_spans_within_lines", "sentence_spans_within_paragraphs", "heading_at", "is_underline", "without_bullet",
    "record_prefix", "is_record_document", "crude_stem", "is_note_line", "entry_spans",
]

# Words that name a number or a date, for the short answers' spans and the quantity check.
MONTHS = frozenset("january february march april may june july august september october november december".split())
NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion "
    "trillion dozen twice half".split())
WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())

# Words that carry no topic; dropping them keeps BM25 (and word overlaps) on the words that matter.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does doing for from had has have how i if in
    into is it its me my no not of on or our shall should so than that the their them then there these
    they this to up us was we were what when where which who whom why will with would you your about
    any after before much many more most some such""".split()
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
# A sentence ends at . ! ? followed by white space and then a capital, a digit or an opening quote:
# "e.g. the" and "3.5 kW" do not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
# ... nor does a title or an abbreviation before a name or a number ("Dr. Ingrid Halvorsen", "No. 4").
_NOT_AN_END = re.compile(r"(?:^|[\s(])(?:Dr|Mr|Mrs|Ms|Mx|Prof|Sr|Jr|St|Mt|Capt|Col|Gen|Lt|Sgt|Rev|Hon|No|Nos|Fig|Figs|"
                         r"Vol|Eq|Ref|approx|cf|vs|ca|Inc|Ltd|Co|Corp)\.$")
_MD_HEADING = re.compile(r"^\s*(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_HEADING_START = re.compile(r"^\s*#{1,6}\s")
_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+])\1{2,}\s*$")  # an rst title's underline (or overline)
_BULLET = re.compile(r"^\s*([-*+•]|\d{1,3}[.)])\s+")


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` that are not stopwords."""
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS}


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def truncate_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of whole words of ``text`` (single-spaced) within ``budget`` tokens."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search: counting is the model tokenizer's, and costs
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


# -- sentences ------------------------------------------------------------------------------------


def _sentence_ends(text: str, start: int = 0) -> list[re.Match]:
    """Where sentences end in ``text`` (from ``start``): not after a title or abbreviation."""
    return [m for m in _SENTENCE_END.finditer(text, start) if not _NOT_AN_END.search(text, max(0, m.start() - 8), m.start())]


def line_sentence_spans(line: str, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one line, from offset ``start`` (its indentation) on."""
    spans, begin = [], start
    for match in _sentence_ends(line, start):
        spans.append((begin, match.start()))
        begin = match.end()
    end = len(line.rstrip())
    if begin < end:
        spans.append((begin, end))
    return spans


def sentence_spans_within_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or heading in ``text``, every line break ending one (the
    chunker's units); blank lines and underline rows are left out."""
    spans = []
    pos = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not _UNDERLINE.match(stripped):
            lead = len(line) - len(line.lstrip())
            spans.extend((pos + a, pos + b) for a, b in line_sentence_spans(line, lead))
        pos += len(line) + 1
    return spans


def sentence_spans_within_paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, running across line breaks within a paragraph;
    headings (markdown ``#`` lines, rst titles and their underlines), list items and blank lines
    end a paragraph and are not sentences themselves (list items start a new one)."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    blocks: list[tuple[int, int]] = []
    begin = None
    for i, line in enumerate(lines):
        heading = (_is_heading_mark(line)
                   or (i + 1 < len(lines) and line.strip() and _is_heading_mark(lines[i + 1] or "")
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
        for match in _sentence_ends(block):
            spans.append((a + pos, a + match.start()))
            pos = match.end()
        spans.append((a + pos, a + len(block.rstrip())))
    return [(a + (len(text[a:b]) - len(text[a:b].lstrip())), b) for a, b in spans if text[a:b].strip()]


def _is_heading_mark(line: str) -> bool:
    """A line that starts a markdown heading or is an underline row (the loose test of paragraphs)."""
    return _MD_HEADING_START.match(line) is not None or _UNDERLINE.match(line) is not None


def without_bullet(text: str) -> str:
    """``text`` without a leading list marker (``-``, ``*``, ``+``, ``•``, ``1.``, ``2)``)."""
    return _BULLET.sub("", text)


# -- headings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int  # 1 for the top level
    title: str
    underlined: bool  # an rst title: the next line is its underline, not text


def is_underline(line: str) -> bool:
    """Whether ``line`` is a row of one repeated punctuation mark (an rst under- or overline)."""
    return _UNDERLINE.match(line) is not None


def heading_at(lines: Sequence[str], i: int) -> Heading | None:
    """The heading that line ``i`` of ``lines`` starts, if any: a markdown ``#`` heading (HTML
    headings arrive as markdown), or an rst title under 100 characters whose next line is an
    underline at least 0.6 of its length (``=`` level 1, ``-`` level 2, others level 3). Lines are
    taken as given: a lone ``#`` followed by two or more spaces is a heading only unstripped."""
    line = lines[i]
    md = _MD_HEADING.match(line)
    if md:
        return Heading(len(md.group(1)), md.group(2).strip(), False)
    stripped = line.strip()
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    if (stripped and following and len(stripped) < 100 and _UNDERLINE.match(following)
            and len(following) >= len(stripped) * 0.6):
        return Heading({"=": 1, "-": 2}.get(following[0], 3), stripped, True)
    return None


# -- logs and transcripts -------------------------------------------------------------------------

# An entry starts with a time stamp (2026-03-02 06:00, 04:04:18:01, [12:01:33]), a speaker label
# ending in a colon (CDR (EAGLE):, K.Berg:, Duty manager:), or both.
_STAMP = r"\[?\d{1,4}(?:[-/:.]\d{1,2}){1,4}(?:[ T]\d{1,2}(?::\d{2}){1,2}(?:\.\d+)?)?\]?"
_LABEL = r"[A-Z][\w.'&/-]*(?: [\w.'&/-]+){0,3}(?: \([^)\n]{1,24}\))?"
_RECORD = re.compile(rf"^\s*(?:(?P<stamp>{_STAMP})\s+)?(?:(?P<label>{_LABEL})\s*:\s+)?")


def record_prefix(line: str) -> tuple[int, str] | None:
    """(length of the stamp-and-label prefix, the speaker label or "") of a log or transcript
    entry; None when the line does not start like one."""
    m = _RECORD.match(line)
    if not m or not (m.group("stamp") or m.group("label")) or m.end() >= len(line.rstrip()):
        return None
    return m.end(), (m.group("label") or "").strip()


def is_record_document(lines: Sequence[str]) -> bool:
    """A log or transcript: at least 20 non-blank lines, most of them entries, few blank lines."""
    filled = [line for line in lines if line.strip()]
    if len(filled) < 20:
        return False
    records = sum(1 for line in filled if record_prefix(line))
    return records >= 0.6 * len(filled) and len(filled) >= 0.8 * len(lines)


def is_note_line(line: str) -> bool:
    """A transcriber's note or page marker between entries: "(Tape 62/2, page 275)", "[garbled]"."""
    stripped = line.strip()
    return bool(stripped) and stripped[0] in "([" and stripped[-1] in ")]"


def entry_spans(lines: Sequence[str], starts: Sequence[int]) -> list[tuple[int, int, bool]]:
    """(start, end, is a note) of each entry of a log or transcript block whose ``lines`` begin at
    ``starts``: a line that does not start like an entry continues the one before it (a long
    utterance wrapped), unless it is a note in brackets or follows a blank line or a note."""
    spans: list[list] = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        note = is_note_line(line)
        end = starts[k] + len(line.rstrip())
        if spans and not note and record_prefix(line) is None and lines[k - 1].strip() and not spans[-1][2]:
            spans[-1][1] = end
        else:
            spans.append([starts[k] + len(line) - len(line.lstrip()), end, note])
    return [(a, b, note) for a, b, note in spans]


_STEM_SUFFIX = re.compile(r"(ing|ed|es|s)$")


def crude_stem(word: str) -> str:
    """Crude, but enough for "landed" to meet "land" and "holds" to meet "hold": words are compared
    with it, never shown."""
    return (_STEM_SUFFIX.sub("", word) if len(word) > 4 else word)[:6]
