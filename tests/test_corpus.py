"""End to end on the bundled corpus/, with the real models: index, re-index, search, ask."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from edgellama.answer import NOT_IN_DOCUMENTS, ask
from edgellama.indexer import index_paths
from edgellama.retrieve import search
from edgellama.store import Store

from conftest import CORPUS, ROOT, run_cli

pytestmark = pytest.mark.models

QA = [json.loads(line) for line in (ROOT / "tests" / "data" / "corpus_qa.jsonl").read_text().splitlines()]
ANSWERABLE = [q for q in QA if q["answers"]]
UNANSWERABLE = [q for q in QA if not q["answers"]]
# Twenty questions across manual and handbook, every format (md, txt, rst, html, pdf).
CHOSEN = ["q001", "q005", "q016", "q022", "q034", "q038", "q042", "q046", "q050", "q053",
          "q054", "q063", "q064", "q065", "q075", "q077", "q079", "q089", "q094", "q104"]
# Things the corpus never mentions.
OFF_TOPIC = ["What is the capital of Australia?", "How do I bake sourdough bread?",
             "Who won the 1998 football World Cup?", "Who wrote Pride and Prejudice?",
             "How many moons does Mars have?", "In what year did the Berlin Wall fall?",
             "How do I make lasagna?", "What is the speed of light in a vacuum?"]


def index(store, embedder, *paths):
    return index_paths(store=store, embedder=embedder, paths=list(paths), chunk_tokens=200, chunk_overlap=30,
                       max_file_bytes=50_000_000)


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory, embedder):
    db = tmp_path_factory.mktemp("corpus") / "corpus.db"
    with Store.open(db) as store:
        stats = index(store, embedder, CORPUS)
    return db, stats


def gold(q) -> str:
    return str(ROOT / q["doc"])


def test_index_corpus_every_file(corpus_db):
    db, stats = corpus_db
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert len(files) >= 20 and {p.suffix for p in files} >= {".md", ".txt", ".rst", ".html", ".pdf"}
    assert (stats.added, len(stats.skipped), stats.removed) == (len(files), 0, 0)
    with Store.open(db) as store:
        s = store.stats()
        assert s.documents == len(files) and s.chunks == stats.chunks_written == stats.chunks_embedded
        assert store.integrity_problems() == []


def test_reindex_without_changes_does_no_embedding_work(corpus_db, embedder):
    db, _ = corpus_db
    with Store.open(db) as store:
        before = store.stats()
        again = index(store, embedder, CORPUS)
        assert (again.added, again.changed, again.removed, again.chunks_embedded) == (0, 0, 0, 0)
        assert again.unchanged == before.documents
        assert store.stats() == before


def test_edit_delete_add_change_exactly_those(tmp_path, embedder):
    docs = tmp_path / "corpus"
    shutil.copytree(CORPUS, docs)
    with Store.open(tmp_path / "e.db") as store:
        first = index(store, embedder, docs)
        power = docs / "station" / "power.md"
        time.sleep(0.01)
        power.write_text(power.read_text().replace("210 kWh", "250 kWh"))
        (docs / "station" / "waste.md").unlink()
        (docs / "station" / "bees.md").write_text("# Bees\n\nThe station keeps no bees, only a quokka named Arvo.\n")
        second = index(store, embedder, docs)
        assert (second.added, second.changed, second.removed, second.unchanged) == (1, 1, 1, first.added - 2)
        assert 0 < second.chunks_embedded <= 6, "only the new and edited chunks are embedded"
        texts = [r.chunk.text for r in search(store=store, embedder=embedder, query="battery bank capacity kWh", k=5)]
        assert any("250 kWh" in t for t in texts) and not any("210 kWh" in t for t in texts)
        waste = search(store=store, embedder=embedder, query="red-lidded drums waste streams", k=10)
        assert all(not r.chunk.path.endswith("waste.md") for r in waste)
        assert search(store=store, embedder=embedder, query="quokka named Arvo", k=1)[0].chunk.path.endswith("bees.md")
        assert store.integrity_problems() == []


@pytest.mark.parametrize("qid", CHOSEN)
def test_the_right_file_is_in_the_top_3(corpus_db, embedder, qid):
    q = next(q for q in QA if q["id"] == qid)
    with Store.open(corpus_db[0]) as store:
        paths = [r.chunk.path for r in search(store=store, embedder=embedder, query=q["question"], k=3)]
    assert gold(q) in paths


def test_top_3_over_the_whole_qa_set(corpus_db, embedder):
    with Store.open(corpus_db[0]) as store:
        hits = [gold(q) in [r.chunk.path for r in search(store=store, embedder=embedder, query=q["question"], k=3)]
                for q in ANSWERABLE]
    assert sum(hits) / len(hits) >= 0.95


@pytest.mark.parametrize("qid", CHOSEN)
def test_ask_answers_and_cites_the_right_file(corpus_db, embedder, generator, qid):
    q = next(q for q in QA if q["id"] == qid)
    with Store.open(corpus_db[0]) as store:
        answer = ask(question=q["question"], store=store, embedder=embedder, generator=generator)
    assert answer.kind in ("answer", "quote"), answer.reason
    assert gold(q) in [s.path for s in answer.citations]
    for s in answer.citations:
        assert s.line_start <= s.line_end and (s.page is not None) == s.path.endswith(".pdf")


def test_ask_over_the_whole_qa_set(corpus_db, embedder, generator):
    cited, answered = 0, 0
    with Store.open(corpus_db[0]) as store:
        for q in ANSWERABLE:
            a = ask(question=q["question"], store=store, embedder=embedder, generator=generator)
            cited += gold(q) in [s.path for s in a.citations]
            # What the user reads, an answer or the quoted passage, holds the gold answer.
            answered += a.kind != "abstain" and any(x.lower() in a.text.lower() for x in q["answers"])
        refused = sum(
            ask(question=q["question"], store=store, embedder=embedder, generator=generator).kind != "answer"
            for q in UNANSWERABLE
        )
    assert cited / len(ANSWERABLE) >= 0.9
    assert answered / len(ANSWERABLE) >= 0.5  # measured 0.60: the 135M model is the limit
    assert refused / len(UNANSWERABLE) >= 0.85


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_questions_get_the_documents_do_not_say(corpus_db, embedder, question):
    def no_model():
        raise AssertionError("the model must not even be loaded")

    with Store.open(corpus_db[0]) as store:
        answer = ask(question=question, store=store, embedder=embedder, generator=no_model)
    assert (answer.kind, answer.text, answer.citations) == ("abstain", NOT_IN_DOCUMENTS, ())


def test_cli_index_then_ask_streams_a_cited_answer(tmp_path, shared_data):
    env = {"XDG_DATA_HOME": str(shared_data), "EDGELLAMA_DB": str(tmp_path / "cli.db")}
    indexed = run_cli("index", "corpus", env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert indexed.stdout.startswith("Indexed in ") and "26 added" in indexed.stdout.replace(
        f"{len([p for p in CORPUS.rglob('*') if p.is_file()])} added", "26 added")
    result = run_cli("ask", "How much energy can the battery bank store?", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "210 kWh"
    # the sentence it stands in is shown with it (issue 22), then the sources
    assert lines[1].startswith('  from: "') and "210 kWh" in lines[1]
    sources = lines.index("Sources:")
    assert lines[sources + 1].strip().startswith("corpus/station/power.md:")
    as_json = json.loads(run_cli("ask", "--json", "Which HF frequency do we use for the daytime sked?", env=env).stdout)
    assert as_json["kind"] == "answer" and "7.812 MHz" in as_json["answer"]
    assert as_json["sources"][0]["path"].endswith("radio-schedule.html")
    assert set(as_json["timings"]) >= {"retrieve_seconds", "prompt_seconds", "tokens_per_second"}
    off = run_cli("ask", "Who painted the Mona Lisa?", env=env)
    assert off.returncode == 0 and off.stdout.strip() == NOT_IN_DOCUMENTS
    found = run_cli("search", "carbon monoxide alarm", "-k", "3", env=env)
    assert found.returncode == 0 and "corpus/station/safety-limits.html:" in found.stdout
    status = run_cli("status", env=env)
    assert "documents    26 indexed, 0 skipped" in status.stdout.replace(
        f"{len([p for p in CORPUS.rglob('*') if p.is_file()])} indexed", "26 indexed")
    assert "Q4_0" in status.stdout
