"""render.py: the one citation formatter in each form the CLI, the library and the API print."""

from edgellama.render import cite, point_line, search_lines


def test_cite_forms():
    assert cite(12, 12, None, path="a.md") == "a.md:12"
    assert cite(12, 14, 3, path="a.md") == "a.md:12-14 page 3"
    assert cite(12, 12, None, path="a.md", full_range=True) == "a.md:12-12"  # search results
    assert cite(12, 14, 3, page_form=" (page {})") == "12-14 (page 3)"  # a folder summary's lines


def test_point_and_search_lines_cite_through_it():
    c = {"path": "/nowhere/a.pdf", "line_start": 4, "line_end": 4, "page": 2, "heading": ""}
    line = point_line({"text": "A fact.", "citations": [c] * 5})
    assert line == "- A fact.  [/nowhere/a.pdf:4 (page 2); /nowhere/a.pdf:4 (page 2); /nowhere/a.pdf:4 (page 2) +2 more]"
    result = {**c, "score": 0.5, "similarity": 0.25, "text": "x " * 200, "heading": "H"}
    lines = search_lines([result])
    assert lines[0] == "1. /nowhere/a.pdf:4-4 page 2  score 0.5000  similarity 0.25"
    assert lines[1] == "   H" and lines[2].endswith("…")
    assert search_lines([]) == ["No matches."]
