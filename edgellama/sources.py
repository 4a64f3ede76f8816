"""Turning one file (txt, md, rst, html, pdf) into plain text with its line and page positions.

Pure reading: never touches the database. Anything that cannot be read raises SourceError with
the reason the indexer records. ``IsolatedExtractor`` runs the parsers that can hang or blow up
(pypdf, html.parser) in a helper process with a hard deadline.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .errors import SourceError

__all__ = ["ExtractedText", "FORMATS", "format_for", "extract", "decode_text", "Deadline", "IsolatedExtractor",
           "EXTRACT_GRACE_SECONDS"]

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


@dataclass(frozen=True)
class ExtractedText:
    """``text`` uses ``\\n`` line ends. ``lines[i]`` is the source line of text line i (1-based)
    and ``pages[i]`` its page (PDF only), so a chunk can cite where it stands in the file."""

    text: str
    format: str
    title: str | None
    lines: tuple[int, ...]
    pages: tuple[int, ...] | None = None


def format_for(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def decode_text(data: bytes) -> str:
    """Bytes to str: BOMs honoured, UTF-8 preferred, Latin-1 as the fallback; binary refused."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as err:
                raise SourceError(f"invalid {codec} text: {err.reason} at byte {err.start}") from None
    if b"\x00" in data[:65536]:
        raise SourceError("binary content (NUL bytes), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _utf8_or_latin1(data)
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    if sample and controls / len(sample) > 0.05:
        raise SourceError("binary content (control characters), not text")
    return text


def _utf8_or_latin1(data: bytes) -> str:
    """Not valid UTF-8: mostly UTF-8 with a few bad bytes keeps its UTF-8 (bad bytes become U+FFFD);
    text with no valid multi-byte sequence at all is Latin-1."""
    replaced = data.decode("utf-8", "replace")
    bad = replaced.count("\ufffd")
    good = sum(1 for ch in replaced if ord(ch) > 0x7F) - bad
    return replaced if good >= bad else data.decode("latin-1")


class Deadline:
    """A wall-clock limit on reading one file, checked between pages and between pieces of HTML."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, where: str) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise SourceError(f"reading took longer than the {self.seconds:g} s limit"
                              f" (max_extract_seconds); stopped {where}")


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _first_line_title(text: str) -> str | None:
    for line in text.split("\n"):
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return None


def _rst_title(text: str) -> str | None:
    lines = text.split("\n")
    for i in range(len(lines) - 1):
        under = lines[i + 1].strip()
        if lines[i].strip() and len(under) >= 3 and re.fullmatch(r"([=\-~^\"'`#*+])\1+", under):
            return lines[i].strip()[:120]
    return _first_line_title(text)


def _plain(text: str, fmt: str) -> ExtractedText:
    text = _normalize_newlines(text)
    title = _rst_title(text) if fmt == "rst" else _first_line_title(text)
    return ExtractedText(text=text, format=fmt, title=title, lines=tuple(range(1, text.count("\n") + 2)))


_BLOCK_TAGS = {
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "ul", "ol", "li",
    "table", "thead", "tbody", "tr", "blockquote", "pre", "dl", "dt", "dd", "figure", "figcaption",
    "form", "fieldset", "address", "hr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "body", "html",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_VOID_TAGS = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"}


class _VisibleText(HTMLParser):
    """Collects visible text as lines, each remembering the source line it started on."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[tuple[str, int]] = []
        self.title_parts: list[str] = []
        self._buf: list[str] = []
        self._buf_line = 0
        self._skip = 0
        self._in_title = False
        self._pre = 0

    def _flush(self, *, blank: bool = False) -> None:
        text = "".join(self._buf)
        text = text.strip() if self._pre else re.sub(r"[ \t\n\f\v]+", " ", text).strip()
        if text:
            self.out.append((text, self._buf_line))
        if blank and self.out and self.out[-1][0]:
            self.out.append(("", self.out[-1][1]))
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP_TAGS:
            if tag not in _VOID_TAGS:
                self._skip += 1
            return
        if tag in _BLOCK_TAGS:
            self._flush(blank=tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"))
            if tag == "pre":
                self._pre += 1
            if tag[0] == "h" and tag[1:].isdigit():
                self._buf = ["#" * int(tag[1:]) + " "]
                self._buf_line = self.getpos()[0]
        elif tag in ("td", "th"):
            self._buf.append(" | " if self._buf else "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if tag in _BLOCK_TAGS:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._flush(blank=tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        if self._pre and "\n" in data:
            line = self.getpos()[0]
            for i, part in enumerate(data.split("\n")):
                if i:
                    self._flush()
                    line += 1
                if not self._buf:
                    self._buf_line = line
                self._buf.append(part)
            return
        if not self._buf or not "".join(self._buf).strip():
            # the data may start with newlines: its first visible character is on a later line
            lead = len(data) - len(data.lstrip())
            self._buf_line = self.getpos()[0] + data[:lead].count("\n")
        self._buf.append(data)


_HTML_PIECE = 1 << 16


def _html(text: str, deadline: Deadline) -> ExtractedText:
    parser = _VisibleText()
    text = _normalize_newlines(text)
    try:
        for start in range(0, len(text), _HTML_PIECE):
            deadline.check(f"at character {start} of {len(text)}")
            parser.feed(text[start:start + _HTML_PIECE])
        parser.close()
    except SourceError:
        raise
    except Exception as err:  # html.parser is lenient; anything it still rejects is a bad file
        raise SourceError(f"unparseable HTML: {err}") from None
    parser._flush()
    out = parser.out
    while out and not out[-1][0]:
        out.pop()
    body = "\n".join(line for line, _ in out)
    title = re.sub(r"\s+", " ", "".join(parser.title_parts)).strip() or _first_line_title(body)
    return ExtractedText(text=body, format="html", title=title[:120] if title else None,
                         lines=tuple(src for _, src in out) or (1,))


def _pdf(data: bytes, deadline: Deadline) -> ExtractedText:
    try:
        import pypdf  # only PDFs need it
        from pypdf.errors import PyPdfError
    except ImportError:  # pragma: no cover - declared dependency
        raise SourceError("PDF support needs the pypdf package") from None
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about odd files are noise here
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise SourceError("encrypted PDF (needs a password)")
            except SourceError:
                raise
            except Exception:
                raise SourceError("encrypted PDF (cannot decrypt)") from None
        texts, lines, pages = [], [], []
        total = len(reader.pages)
        for number, page in enumerate(reader.pages, start=1):
            deadline.check(f"before page {number} of {total}")
            page_text = _normalize_newlines(page.extract_text() or "").strip("\n")
            if not page_text.strip():
                continue
            page_lines = page_text.split("\n")
            if texts:  # a blank line between pages keeps paragraphs apart
                texts.append("")
                lines.append(lines[-1])
                pages.append(pages[-1])
            texts.extend(page_lines)
            lines.extend(range(1, len(page_lines) + 1))
            pages.extend([number] * len(page_lines))
        meta_title = None
        try:
            meta_title = (reader.metadata or {}).get("/Title")
        except Exception:
            pass
    except SourceError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, AssertionError, ZeroDivisionError) as err:
        raise SourceError(f"unreadable PDF: {type(err).__name__}: {err}"[:300]) from None
    if not texts:
        raise SourceError("PDF has no text layer (scanned image?)")
    text = "\n".join(texts)
    title = str(meta_title).strip() if meta_title else _first_line_title(text)
    return ExtractedText(text=text, format="pdf", title=title, lines=tuple(lines), pages=tuple(pages))


def extract(path: Path, data: bytes, *, max_seconds: float | None = None) -> ExtractedText:
    """The text of a file whose bytes were already read; raises SourceError if it has none, or if
    reading it takes longer than ``max_seconds`` (checked between PDF pages and pieces of HTML)."""
    deadline = Deadline(max_seconds)
    fmt = format_for(path)
    if fmt is None:
        raise SourceError(f"unsupported file type {path.suffix or '(no extension)'}")
    if not data:
        raise SourceError("empty file")
    if fmt == "pdf":
        if not data.startswith(b"%PDF"):
            raise SourceError("not a PDF file (no %PDF header)")
        return _pdf(data, deadline)
    text = decode_text(data)
    result = _html(text, deadline) if fmt == "html" else _plain(text, fmt)
    if not result.text.strip():
        raise SourceError("no text content")
    return result


# -- a helper process with a hard deadline -------------------------------------------------------

ISOLATED_FORMATS = frozenset({"pdf", "html"})  # third-party or recursive parsers; plain text is linear
EXTRACT_GRACE_SECONDS = 2.0  # beyond max_seconds before the helper is killed (its own check answers first)
HELPER_MEMORY_BYTES = 4 << 30  # address space of the helper: a memory bomb ends there, not in the daemon


class IsolatedExtractor:
    """``extract`` with a hard limit: PDF and HTML are parsed in one long-lived helper process
    (started at the first such file), which is killed, and started again for the next file, when
    it overruns ``max_seconds`` or dies. A parser stuck inside one PDF page (no check between
    pages can stop it; threads cannot be interrupted) costs the deadline, never the indexer.
    Plain text stays in-process: its reading is linear and the round trip would dominate."""

    def __init__(self, *, isolated: frozenset[str] = ISOLATED_FORMATS):
        self.isolated = isolated
        self._proc: subprocess.Popen | None = None
        self.restarts = 0  # helpers killed or found dead (for tests and logs)

    def extract(self, path: Path, data: bytes, *, max_seconds: float | None = None) -> ExtractedText:
        if format_for(path) not in self.isolated or not data:
            return extract(path, data, max_seconds=max_seconds)
        proc = self._helper()
        name = os.fsencode(path.name).decode("utf-8", "backslashreplace")  # only its suffix matters
        header = json.dumps({"name": name, "max_seconds": max_seconds, "size": len(data)}).encode()
        try:
            proc.stdin.write(struct.pack("<I", len(header)) + header)
            proc.stdin.write(data)
            proc.stdin.flush()
            reply = _read_frame(proc.stdout, None if max_seconds is None else max_seconds + EXTRACT_GRACE_SECONDS)
        except TimeoutError:
            self._kill()
            raise SourceError(f"reading took longer than the {max_seconds:g} s limit (max_extract_seconds);"
                              " the reader was stopped") from None
        except (OSError, EOFError, ValueError):
            code = self._kill()
            how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            raise SourceError(f"the reader process died ({how}) on this file") from None
        answer = json.loads(reply.decode("utf-8", "surrogatepass"))
        if "error" in answer:
            raise SourceError(answer["error"])
        return ExtractedText(text=answer["text"], format=answer["format"], title=answer["title"],
                             lines=tuple(answer["lines"]),
                             pages=tuple(answer["pages"]) if answer["pages"] is not None else None)

    def _helper(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            package_parent = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent,
                                                                             os.environ.get("PYTHONPATH")]))}
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from edgellama.sources import serve_extractions; serve_extractions()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
                start_new_session=True,  # a terminal's Ctrl-C is the parent's to handle
            )
        return self._proc

    def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        self.restarts += 1
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        return proc.wait()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()  # the helper ends at end of input
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            proc.stdout.close()

    def __enter__(self) -> "IsolatedExtractor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exact(stream, size: int, deadline: float | None) -> bytes:
    import select

    fd = stream.fileno()
    out = bytearray()
    while len(out) < size:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise TimeoutError()
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError()
        piece = os.read(fd, size - len(out))
        if not piece:
            raise EOFError()
        out += piece
    return bytes(out)


def _read_frame(stream, seconds: float | None) -> bytes:
    deadline = None if seconds is None else time.monotonic() + seconds
    (size,) = struct.unpack("<I", _read_exact(stream, 4, deadline))
    return _read_exact(stream, size, deadline)


def serve_extractions() -> None:
    """The helper process: read (header, bytes) frames from stdin, answer each with one JSON frame."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY_BYTES, HELPER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            (size,) = struct.unpack("<I", _read_exact(src, 4, None))
            header = json.loads(_read_exact(src, size, None))
            data = _read_exact(src, header["size"], None)
        except EOFError:
            return
        try:
            got = extract(Path(header["name"]), data, max_seconds=header["max_seconds"])
            answer = {"text": got.text, "format": got.format, "title": got.title, "lines": got.lines,
                      "pages": got.pages}
        except SourceError as err:
            answer = {"error": str(err)}
        except MemoryError:
            answer = {"error": f"reading needs more than the {HELPER_MEMORY_BYTES >> 30} GiB memory limit"}
        except Exception as err:  # a parser bug on a hostile file: a reason, not a dead helper
            answer = {"error": f"unreadable file: {type(err).__name__}: {err}"[:300]}
        body = json.dumps(answer, ensure_ascii=False).encode("utf-8", "surrogatepass")
        dst.write(struct.pack("<I", len(body)) + body)
        dst.flush()
