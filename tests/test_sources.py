from pathlib import Path

import pytest

from edgellama.errors import SourceError
from edgellama.sources import decode_text, extract

from conftest import CORPUS

HTML = """<!doctype html>
<html><head><title>Radio schedule</title>
<style>body { color: red; } .secret { display: none }</style>
<script>var hidden = "do not index me";</script></head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Radio</h1>
<p>The daily check-in is at
   <b>07:30</b> local time.</p>
<table><tr><td>Channel</td><td>4</td></tr></table>
</body></html>
"""


def test_markdown_keeps_the_file_lines(tmp_path):
    doc = extract(Path("notes.md"), b"# Title\r\n\r\nbody line\r\n")
    assert doc.text == "# Title\n\nbody line\n"
    assert doc.title == "Title"
    assert doc.lines[:3] == (1, 2, 3)


def test_html_is_visible_text_mapped_to_source_lines():
    doc = extract(Path("radio.html"), HTML.encode())
    assert doc.title == "Radio schedule"
    assert "do not index me" not in doc.text and "color: red" not in doc.text
    lines = doc.text.split("\n")
    i = next(n for n, line in enumerate(lines) if "07:30" in line)
    assert lines[i] == "The daily check-in is at 07:30 local time."
    assert doc.lines[i] == HTML.split("\n").index("<p>The daily check-in is at") + 1
    assert "# Radio" in lines
    assert any("Channel" in line and "4" in line for line in lines)


def test_rst_title():
    doc = extract(Path("water.rst"), b"=====\nWater\n=====\n\nTanks.\n")
    assert doc.title == "Water"


@pytest.mark.parametrize("data, reason", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00", "binary"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (bytes(range(1, 32)) * 50, "binary"),
    (b"", "empty file"),
    (b"   \n\n  ", "no text content"),
])
def test_binary_and_empty_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(SourceError, match=reason):
        extract(Path("file.txt"), data)


def test_encodings():
    assert decode_text("Grüße".encode("utf-16")) == "Grüße"
    assert decode_text("café".encode("latin-1")) == "café"
    assert decode_text(b"\xef\xbb\xbfhello") == "hello"
    assert decode_text(b"bad \xff\xfe byte".replace(b"\xff\xfe", b"\xc3\x28")) == "bad Ã( byte"


def test_pdf_pages_and_lines():
    pdf = next(CORPUS.rglob("*.pdf"))
    doc = extract(pdf, pdf.read_bytes())
    assert doc.format == "pdf"
    assert doc.pages is not None and max(doc.pages) >= 2
    assert len(doc.pages) == len(doc.lines) == doc.text.count("\n") + 1
    assert doc.lines[0] == 1


@pytest.mark.parametrize("data, reason", [
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "unreadable PDF|no text layer"),
    (b"PK\x03\x04 not a pdf", "not a PDF"),
])
def test_broken_pdfs_are_refused(data, reason):
    with pytest.raises(SourceError, match=reason):
        extract(Path("broken.pdf"), data)


def test_unsupported_type():
    with pytest.raises(SourceError, match="unsupported file type .jpg"):
        extract(Path("photo.jpg"), b"\xff\xd8")
