"""``edgellama show PATH[:LINES]``: a citation's lines rebuilt from the index (show.py), and the
command as a user runs it. The index is built with the fake embedder; show itself loads no model."""

import json

import pytest

from edgellama.errors import NotIndexedError, OutOfRangeError, RequestError
from edgellama.indexer import index_paths
from edgellama.show import Location, parse_location, resolve_path, show_lines
from edgellama.store import Store

from conftest import CORPUS, run_cli
from fakes import BagOfWordsEmbedder

POWER = CORPUS / "station" / "power.md"
PDF = CORPUS / "station" / "generator-log.pdf"


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "show.db"
    with Store.open(path) as store:
        index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[CORPUS / "station"], chunk_tokens=60,
                    chunk_overlap=10, max_file_bytes=10_000_000)
    return path


@pytest.mark.parametrize("text, expected", [
    ("a/b.md", Location("a/b.md")),
    ("a/b.md:15", Location("a/b.md", 15, 15)),
    ("a/b.md:15-25", Location("a/b.md", 15, 25)),
    ("a/b.pdf:3-4 page 2", Location("a/b.pdf", 3, 4, 2)),  # as search prints it
    ("a/b.pdf:3-4 (page 2)", Location("a/b.pdf", 3, 4, 2)),  # as ask prints it
    ("a/b.pdf:page 2", Location("a/b.pdf", None, None, 2)),
    ("a/b.pdf:page 2:3-4", Location("a/b.pdf", 3, 4, 2)),
    ("c:/x:7", Location("c:/x", 7, 7)),
])
def test_parse_location(text, expected):
    assert parse_location(text) == expected


def test_parse_location_refuses_backwards_ranges_and_takes_known_paths_whole():
    with pytest.raises(RequestError, match="first before last"):
        parse_location("a.md:9-3")
    with pytest.raises(RequestError, match="count from 1"):
        parse_location("a.md:0-3")
    assert parse_location("notes:12", known=["notes:12"]) == Location("notes:12")


def test_every_indexed_line_is_the_file_line(db):
    source = POWER.read_text().split("\n")
    with Store.open(db) as store:
        whole = show_lines(store=store, location=Location(str(POWER)))
    assert [line.number for line in whole.lines] == list(range(1, len(whole.lines) + 1))
    for line in whole.lines:  # a line no chunk holds (blank) is shown empty; every other one exactly
        assert line.text in ("", source[line.number - 1]), line.number
    assert sum(1 for line in whole.lines if line.text) >= sum(1 for s in source if s.strip()) - 2


def test_a_range_with_context_and_a_pdf_page(db):
    with Store.open(db) as store:
        excerpt = show_lines(store=store, location=parse_location(f"{POWER}:17"), context=2)
        page = show_lines(store=store, location=parse_location(f"{PDF}:page 2:1-2"))
    assert [(line.number, line.cited) for line in excerpt.lines] == [
        (15, False), (16, False), (17, True), (18, False), (19, False)]
    assert "210 kWh" in excerpt.lines[2].text
    assert [line.text for line in page.lines][0] == "Service intervals and procedures"
    assert page.page == 2 and all(line.page == 2 for line in page.lines)


def test_errors_are_one_line(db, tmp_path):
    with Store.open(db) as store:
        with pytest.raises(NotIndexedError, match="nothere.md is not in the index"):
            show_lines(store=store, location=Location(str(CORPUS / "nothere.md")))
        with pytest.raises(OutOfRangeError, match=r"lines 300-310 are out of range: .*power.md has lines 1-\d+$"):
            show_lines(store=store, location=Location(str(POWER), 300, 310))
        with pytest.raises(OutOfRangeError, match=r"no indexed text on page 99 \(pages 1-\d\)"):
            show_lines(store=store, location=Location(str(PDF), None, None, 99))
        with pytest.raises(RequestError, match="is a PDF: its lines are counted per page; give the page"):
            show_lines(store=store, location=Location(str(PDF), 1, 2))
        with pytest.raises(RequestError, match="has no pages"):
            show_lines(store=store, location=Location(str(POWER), 1, 2, 3))


def test_the_command(db):
    env = {"EDGELLAMA_DB": str(db)}
    shown = run_cli("show", "corpus/station/power.md:17", "-C", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("corpus/station/power.md:17  ")  # the path as search prints it
    assert lines[1] == "16-" and lines[2].startswith("17: The battery bank") and lines[3] == "18-"
    as_json = json.loads(run_cli("show", "corpus/station/power.md:17", "--json", env=env).stdout)
    assert as_json["path"] == str(POWER) and as_json["lines"] == [
        {"page": None, "line": 17, "text": POWER.read_text().split("\n")[16], "cited": True}]
    pdf = run_cli("show", "corpus/station/generator-log.pdf:page 2", env=env)
    assert pdf.returncode == 0 and pdf.stdout.splitlines()[1] == "1: Service intervals and procedures"
    for args, code, message in (
        (("corpus/station/nothere.md",), 1, "is not in the index"),
        (("corpus/station/power.md:300-310",), 1, "are out of range"),
        (("corpus/station/power.md:0-3",), 2, "lines count from 1"),
    ):
        result = run_cli("show", *args, env=env)
        assert result.returncode == code, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert message in result.stderr
    assert run_cli("show", "corpus/station/power.md:3", "-C", "-1", env=env).returncode == 2  # typer's usage error
    assert resolve_path("corpus/x.md").endswith("/corpus/x.md")
