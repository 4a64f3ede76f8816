"""Summaries: a generated 60k-token handbook with known facts, the cache that recomputes only the
changed branch (model calls counted through the generator seam), folders, topics, the CLI and
the daemon's POST /summarize.

Unit tests index with the fake embedder (summaries never use vectors, except for a topic); the
tests marked ``models`` use the real SmolLM2 and a real daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from edgellama.indexer import index_paths
from edgellama.store import Store
from edgellama.summarize import (DocumentDone, Progress, SectionDone, Summary, final_summary, summarize_document,
                                 summarize_folder, summarize_topic, summary_to_dict)

from conftest import CORPUS, run_cli
from fakes import BagOfWordsEmbedder
from longdoc import make_document

BOOK = "handbook.md"
TITLE = "Kestrel Ridge Field Station: Operations Handbook"


def index(store, embedder, *paths):
    return index_paths(store=store, embedder=embedder, paths=list(paths), chunk_tokens=200, chunk_overlap=30,
                       max_file_bytes=50_000_000)


def text_of(summary: Summary) -> str:
    points = [*summary.overview] + [p for d in summary.documents for s in d.sections for p in s.points]
    points += [p for d in summary.documents for p in d.overview]
    return " ".join(" ".join(p.text for p in points).split())


def coverage(summary: Summary, facts) -> list[str]:
    text = text_of(summary)
    return [f.keyword for f in facts if f.keyword in text]


class CountingGenerator:
    """Any generator, with its model calls counted at the seam the summarizer uses."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.n_ctx = inner.n_ctx
        self.calls = 0
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def stream(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Iterator[str]:
        self.calls += 1
        self.prompts.append(prompt)
        return self.inner.stream(prompt, max_tokens=max_tokens, stop=stop)


class EchoGenerator:
    """A fake model that 'summarizes' by repeating the last two sentences of its text."""

    name = "echo"
    n_ctx = 4096
    last_stats = None

    def count_tokens(self, text: str) -> int:
        return max(1, (len(text) + 3) // 4)

    def stream(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Iterator[str]:
        body = prompt.split("Text: ", 1)[1].rsplit("\n\nSummary:", 1)[0]
        yield " ".join(re.split(r"(?<=\.)\s+", body)[-2:])


@pytest.fixture
def book(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / BOOK
    document = make_document()
    path.write_text(document.text)
    return path, document


def test_long_document_extract_cites_sections_and_keeps_the_facts(tmp_path, book):
    path, document = book
    with Store.open(tmp_path / "s.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        pieces = list(summarize_document(store=store, path=str(path), method="extract", length="long"))
    summary = pieces[-1]
    assert isinstance(summary, Summary) and summary.kind == "document"
    assert isinstance(pieces[0], Progress)
    sections = [p.section for p in pieces if isinstance(p, SectionDone)]
    # Streamed in document order: the introduction (under the title), then the 12 sections.
    assert [s.heading for s in sections] == [TITLE, *document.sections]
    lines = document.text.split("\n")
    for section in sections[1:]:
        assert section.points
        for point in section.points:
            assert point.citations, point
            for c in point.citations:
                assert c.path == str(path) and section.line_start <= c.line_start <= c.line_end <= section.line_end
                assert c.heading.split(" > ")[1] == section.heading  # the section it came from
                # The cited lines hold the point's words: a citation is where the text stands.
                cited = " ".join(" ".join(lines[c.line_start - 1:c.line_end]).split())
                assert point.text.split()[0] in cited
    assert 6 <= len(summary.overview) <= 8 and all(p.citations for p in summary.overview)
    kept = coverage(summary, document.facts)
    # Measured 12 of 12 (bench/summarize_events.py prints it; 9 before issue 21, 11 before
    # "Dr. Ingrid Halvorsen" stopped being cut into two sentences).
    assert len(kept) == len(document.facts), kept
    assert summary.stats.model_calls == 0 and summary.notes == ()


def test_change_one_section_recomputes_only_that_branch(tmp_path, book):
    path, document = book
    generator = CountingGenerator(EchoGenerator())
    with Store.open(tmp_path / "s.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        first = final_summary(summarize_document(store=store, path=str(path), method="model", generator=generator))
        full_calls = generator.calls
        assert full_calls == first.stats.model_calls > 12 + 1 and first.stats.cached == 0
        assert all(p.citations for p in first.overview)

        generator.calls = 0
        generator.prompts.clear()
        again = final_summary(summarize_document(store=store, path=str(path), method="model", generator=generator))
        assert generator.calls == 0 and again.stats.cached == again.stats.nodes
        assert summary_to_dict(again)["overview"] == summary_to_dict(first)["overview"]

        path.write_text(make_document(edited_section=3).text)  # one sentence more in section 4
        index(store, BagOfWordsEmbedder(), path)
        edited = final_summary(summarize_document(store=store, path=str(path), method="model", generator=generator))
    # The changed leaf, its section and the document overview: nothing else.
    assert generator.calls == edited.stats.model_calls == 3, edited.stats
    assert "revised after the last inspection" in generator.prompts[0] and "radio" in generator.prompts[1]
    assert edited.stats.cached == edited.stats.nodes - 3
    # Sections after the edit moved down two lines; their cached points cite the new lines.
    after = edited.documents[0]
    before = first.documents[0]
    assert after.sections[5].points[0].text == before.sections[5].points[0].text
    assert after.sections[5].points[0].citations[0].line_start == before.sections[5].points[0].citations[0].line_start + 2


def test_model_sentences_nothing_supports_are_dropped(tmp_path, book):
    path, _ = book

    class Inventor(EchoGenerator):
        def stream(self, prompt, *, max_tokens, stop):
            yield ("The station was founded in 1911 by penguins. The text is about the station. "
                   + next(super().stream(prompt, max_tokens=max_tokens, stop=stop)))

    with Store.open(tmp_path / "s.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        summary = final_summary(summarize_document(store=store, path=str(path), method="model", generator=Inventor()))
    assert "penguins" not in text_of(summary) and "1911" not in text_of(summary)
    assert "The text is about" not in text_of(summary)
    assert summary.stats.dropped_sentences == 2 * summary.stats.model_calls


def test_folder_summary_of_the_corpus_lists_every_document(tmp_path):
    with Store.open(tmp_path / "c.db") as store:
        index(store, BagOfWordsEmbedder(), CORPUS)
        paths = sorted(store.documents())
        pieces = list(summarize_folder(store=store, folder=str(CORPUS), length="short"))
    listed = [p.document.path for p in pieces if isinstance(p, DocumentDone)]
    summary = pieces[-1]
    assert listed == paths and len(paths) == 26
    assert [d.path for d in summary.documents] == paths
    assert all(d.overview and d.overview[0].citations[0].path == d.path for d in summary.documents)
    assert len(summary.overview) == 3 and all(p.citations for p in summary.overview)


def test_topic_summary_cites_the_documents_about_it(tmp_path):
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "c.db") as store:
        index(store, embedder, CORPUS)
        summary = final_summary(summarize_topic(store=store, topic="water recycling", embedder=embedder,
                                                min_relevance=0.2))
        nothing = final_summary(summarize_topic(store=store, topic="sourdough baking", embedder=embedder,
                                                min_relevance=0.9))
    cited = {Path(c.path).name for p in summary.overview for c in p.citations}
    assert "water-recycling.rst" in cited
    assert all("water" in p.text.lower() or "recycl" in p.text.lower() for p in summary.overview)
    assert nothing.overview == () and "nothing indexed is about" in nothing.notes[0]


def test_cli_summarize_file_folder_and_errors(tmp_path, book):
    path, document = book
    db = tmp_path / "cli.db"
    with Store.open(db) as store:
        index(store, BagOfWordsEmbedder(), path, CORPUS / "station")
    env = {"EDGELLAMA_DB": str(db)}
    out = run_cli("summarize", str(path), "--length", "long", "--no-daemon", env=env)
    assert out.returncode == 0, out.stderr
    for heading in document.sections:
        assert f"## {heading}" in out.stdout
    assert "Overview:" in out.stdout and f"{BOOK}:" in out.stdout
    assert re.search(r"\(extract: \d+ nodes", out.stderr)

    out = run_cli("summarize", str(CORPUS / "station"), "--json", "--no-daemon", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["kind"] == "folder" and len(data["documents"]) == len(list((CORPUS / "station").iterdir()))

    out = run_cli("summarize", str(CORPUS / "manual" / "06-service.md"), "--no-daemon", env=env)
    assert out.returncode == 1 and "is not indexed" in out.stderr and out.stderr.count("\n") == 1
    out = run_cli("summarize", str(path), "--topic", "water", "--no-daemon", env=env)
    assert out.returncode == 2 and "exactly one of" in out.stderr
    out = run_cli("summarize", str(path), "--length", "huge", "--no-daemon", env=env)
    assert out.returncode == 2


# -- the real model ------------------------------------------------------------------------------


@pytest.mark.models
def test_real_model_recomputes_only_the_edited_branch(tmp_path, generator):
    """SmolLM2 through the seam, on a short handbook (4 sections of 40 sentences, one model call
    each, plus the overview) to keep the test quick on a loaded 2-core box."""
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / BOOK
    path.write_text(make_document(sections=4, sentences_per_section=40).text)
    counting = CountingGenerator(generator)
    with Store.open(tmp_path / "m.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        first = final_summary(summarize_document(store=store, path=str(path), method="model", generator=counting))
        full = counting.calls
        assert full == first.stats.model_calls >= 4 + 1
        for point in first.overview:
            assert point.citations and all(c.path == str(path) for c in point.citations)
        counting.calls = 0
        path.write_text(make_document(sections=4, sentences_per_section=40, edited_section=2).text)
        index(store, BagOfWordsEmbedder(), path)
        edited = final_summary(summarize_document(store=store, path=str(path), method="model", generator=counting))
    assert counting.calls == edited.stats.model_calls
    assert 0 < counting.calls <= 3 < full, (counting.calls, full)
    assert edited.stats.cached == edited.stats.nodes - counting.calls


@pytest.mark.models
def test_daemon_summarizes_streaming_and_refuses_paths_outside(tmp_path, shared_data):
    from daemon_harness import Daemon, call, eventually

    daemon = Daemon(tmp_path, shared_data)
    try:
        book = daemon.docs / BOOK
        document = make_document(sentences_per_section=60)
        book.write_text(document.text)
        daemon.wait_ready()
        assert eventually(lambda: call(daemon.socket, "GET", "/status")[1]["documents"] == 4, timeout=300)

        from edgellama.client import DaemonClient

        client = DaemonClient(daemon.socket)
        events = list(client.events("/summarize", {"path": str(book), "length": "long", "stream": True}))
        names = [e for e, _ in events]
        assert names[0] == "progress" and names[-1] == "summary" and "error" not in names
        assert [d["heading"] for e, d in events if e == "section"] == [TITLE, *document.sections]
        summary = events[-1][1]
        assert summary["kind"] == "document" and summary["overview"]
        assert all(p["citations"] and p["citations"][0]["path"] == str(book) for p in summary["overview"])

        status, body, _ = call(daemon.socket, "POST", "/summarize",
                               {"topic": "battery bank capacity", "method": "model", "length": "short"})
        assert status == 200, body
        assert body["kind"] == "topic" and body["method"] == "model" and body["stats"]["model_calls"] >= 1
        assert body["overview"] and all(p["citations"] for p in body["overview"])
        assert any(c["path"].endswith("power.md") for p in body["overview"] for c in p["citations"])

        status, body, _ = call(daemon.socket, "POST", "/summarize", {"all": True, "length": "short"})
        assert status == 200 and len(body["documents"]) == 4

        for request, code, message in (
            ({"path": "/etc/passwd"}, 403, "outside the folders"),
            ({"path": str(daemon.docs / ".." / ".." / ".." / "etc")}, 403, "outside the folders"),
            ({"path": "power.md"}, 400, "must be absolute"),
            ({"path": str(book), "length": "huge"}, 400, "'length'"),
            ({"path": str(book), "length": ["long"]}, 400, "'length'"),
            ({"path": "/tmp/a\0b"}, 400, "NUL"),
            ({"path": str(book), "topic": "x"}, 400, "exactly one of"),
            ({"path": str(daemon.docs / "missing.md")}, 404, "not indexed"),
        ):
            status, body, _ = call(daemon.socket, "POST", "/summarize", request)
            assert status == code and message in body["error"]["message"], (request, status, body)

        status, spec, _ = call(daemon.socket, "GET", "/openapi.json")
        assert "/summarize" in spec["paths"] and "post" in spec["paths"]["/summarize"]

        out = daemon.cli("summarize", str(book), "--length", "short")  # the CLI finds the daemon
        assert out.returncode == 0, out.stderr
        assert "Overview:" in out.stdout and BOOK in out.stdout
    finally:
        daemon.stop()


@pytest.mark.models
def test_daemon_builds_model_summaries_in_the_background(tmp_path, shared_data):
    from daemon_harness import Daemon, call, eventually

    daemon = Daemon(tmp_path, shared_data, extra_env={"EDGELLAMA_SUMMARIZE_BACKGROUND": "true"},
                    files=("station/power.md",))
    try:
        daemon.wait_ready()
        status = lambda: call(daemon.socket, "GET", "/status")[1]  # noqa: E731
        assert eventually(lambda: (status()["daemon"]["background_summaries"] or 0) >= 1, timeout=900), status()
        status_code, body, _ = call(daemon.socket, "POST", "/summarize",
                                    {"path": str(daemon.docs / "power.md"), "method": "model"})
        assert status_code == 200, body
        assert body["stats"]["model_calls"] == 0 and body["stats"]["cached"] == body["stats"]["nodes"]
        assert body["overview"] and all(p["citations"] for p in body["overview"])
    finally:
        daemon.stop()


# -- salience on a log (issue 21) -------------------------------------------------------------------


def test_summary_of_a_log_names_its_incidents_and_keeps_the_lengths(tmp_path):
    """A generated shift log without headings (tests/oplog.py): 4 days of routine entries and
    two incidents. The overview must name both incidents, not the routine, and the flat file
    must still get sections and every length its number of points."""
    from oplog import INCIDENTS, make_log

    incidents = tuple(i for i in INCIDENTS if i.day < 4)
    text, starts = make_log(days=4, entries_per_day=120, incidents=incidents)
    path = tmp_path / "log.txt"
    path.write_text(text)
    with Store.open(tmp_path / "s.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        summaries = {length: final_summary(summarize_document(store=store, path=str(path), length=length))
                     for length in ("short", "medium", "long")}
    assert [len(summaries[n].overview) for n in ("short", "medium", "long")] == [3, 5, 8]
    # `medium`: the sections share 2 points a section on average, each showing at least one.
    shown = [len(s.points) for s in summaries["medium"].documents[0].sections]
    assert min(shown) >= 1 and sum(shown) == 2 * len(shown), shown
    assert len(summaries["long"].documents[0].sections) >= 2  # a flat file is cut by position
    overview = " ".join(p.text for p in summaries["medium"].overview)
    for incident in incidents:
        assert re.search(incident.match, overview, re.I), (incident.name, overview)
    # A point is an entry, with the short entries leading up to it: cited from the first to the last.
    lines = text.split("\n")
    for point in summaries["long"].overview:
        c = point.citations[0]
        assert point.text.startswith(lines[c.line_start - 1]) and point.text.endswith(lines[c.line_end - 1])


# -- key events of the dev documents (issue 21; the full table: python -m bench summarize_events) ---

DEV = Path(__file__).resolve().parent.parent / "bench" / "data" / "summarize"
APOLLO = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "summarize-dev",
                           Path("/work/shared/data/summarize-dev")) if (p / "key-events.json").exists()), None)


def key_events(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / "key-events.json").read_text())[name]


def events_kept(tmp_path, path: Path, events: list[dict], length: str, scorer=None) -> tuple[list[str], list[str]]:
    """(events the overview names, events anything printed names) of the default summary."""
    with Store.open(tmp_path / f"{length}.db") as store:
        index(store, BagOfWordsEmbedder(), path)
        summary = final_summary(summarize_document(store=store, path=str(path), length=length, scorer=scorer))
    overview = " ".join(" ".join(p.text for p in summary.overview).split())
    shown = text_of(summary)
    return ([e["event"] for e in events if re.search(e["match"], overview, re.I)],
            [e["event"] for e in events if re.search(e["match"], shown, re.I)])


# (document, length, at least this many key events in the overview, in everything printed):
# a few below what bench/summarize_events.py measured, so that only a real loss fails.
KEY_EVENTS = [("plant-log.txt", "long", 6, 7), ("plant-log.txt", "medium", 3, 7), ("nodejs-child-process.md", "long", 2, 5)]
APOLLO_EVENTS = [("long", 4, 6), ("medium", 3, 5)]


@pytest.mark.parametrize("name, length, in_overview, shown", KEY_EVENTS)
def test_dev_documents_keep_their_key_events(tmp_path, name, length, in_overview, shown):
    events = key_events(DEV, name)
    overview, everything = events_kept(tmp_path, DEV / name, events, length)
    assert len(overview) >= in_overview and len(everything) >= shown, (overview, everything)


@pytest.mark.parametrize("seed", [7, 99])
def test_other_generated_logs_keep_their_incidents(tmp_path, seed):
    """Logs the dev set does not hold (tests/oplog.py with other seeds): at `medium` the printed
    summary names 7 of the 8 incidents (measured 8 and 7; 4 and 4 before an incident's point led
    with its first report: "Pump P-3 tripped ..." rather than only the follow-up after it)."""
    from oplog import INCIDENTS, make_log

    text, _ = make_log(seed=seed)
    path = tmp_path / "log.txt"
    path.write_text(text)
    events = [{"event": i.name, "match": i.match} for i in INCIDENTS]
    _, everything = events_kept(tmp_path, path, events, "medium")
    assert len(everything) >= 7, everything


@pytest.mark.skipif(APOLLO is None, reason="../shared/data/summarize-dev is not there")
@pytest.mark.parametrize("length, in_overview, shown", APOLLO_EVENTS)
def test_the_apollo_day_names_what_happened(tmp_path, length, in_overview, shown):
    """The Apollo 11 landing day (issue 21's target: 6 of its 8 events at `long`, 4 at `medium`).
    Measured (overview / everything printed): 5 / 6 at `long`, 4 / 6 at `medium` (4 / 5 and 3 / 4
    before the plaque's read-out counted and the sections shared one budget; 2 / 3 and 2 / 3 before
    that); the test holds the target. The former centrality score names none."""
    from edgellama.salience import centrality

    name = "apollo11-get-096-120h.txt"
    events = key_events(APOLLO, name)
    overview, everything = events_kept(tmp_path, APOLLO / name, events, length)
    assert len(overview) >= in_overview and len(everything) >= shown, (overview, everything)
    (tmp_path / "centrality").mkdir()
    _, former = events_kept(tmp_path / "centrality", APOLLO / name, events, length, scorer=centrality)
    assert len(former) < shown
