"""The three outcomes of ``ask`` (a verified short answer, the passage that answers, "The documents
do not say."), the short-answer span scorer, and how the CLI and the API word them."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from edgellama.answer import (NOT_IN_DOCUMENTS, answer_to_dict, ask, candidate_spans, decide,
                              question_type, score_spans)
from edgellama.indexer import index_paths
from edgellama.render import answer_body, answer_tail
from edgellama.store import Store

from fakes import BagOfWordsEmbedder, ScriptedGenerator

TANK = "The treated water tank holds 4,000 litres and is refilled every Monday by the duty engineer."


def test_question_types():
    assert question_type("How many litres does the tank hold?") == "number"
    assert question_type("When was the stock exchange founded?") == "number"
    assert question_type("In which year did Tesla die?") == "number"
    assert question_type("Who financed the company?") == "name"
    assert question_type("Where is the stadium?") == "place"
    assert question_type("What was Warsaw's first cabaret?") == "other"


def test_candidate_spans_keep_numbers_dates_and_names_whole():
    texts = {s.text for s in candidate_spans("The Summer Theatre ran from 1870 to 1939, near the University of Warsaw.")}
    assert {"1870 to 1939", "Summer Theatre", "University of Warsaw"} <= texts
    assert not any(t.split()[0].lower() in ("the", "from") for t in texts)
    texts = {s.text for s in candidate_spans("We have you pitched up about 4 1/2 degrees.")}
    assert {"about 4 1/2 degrees", "4 1/2 degrees"} <= texts


def test_the_span_that_fits_the_question_wins_without_the_model():
    spans = score_spans(question="How many litres does the treated water tank hold?", sentences=[(TANK, 0.9)])
    assert spans[0].span.text.startswith("4,000")
    assert abs(sum(s.confidence for s in spans) - 1.0) < 1e-6  # a probability over the candidates
    who = score_spans(question="Who refills the tank?", sentences=[(TANK, 0.9)])
    assert "4,000" not in who[0].span.text


def test_decide_tells_the_three_outcomes_apart():
    sentences = [(TANK, 0.9)]
    model = decide(question="How many litres does the treated water tank hold?", sentences=sentences,
                   model_text="4,000 litres", model_supported=True)
    assert (model.kind, model.text, model.method, model.sentences) == ("answer", "4,000 litres", "model", (0,))
    span = decide(question="How many litres does the treated water tank hold?", sentences=sentences,
                  model_text="12 barrels", model_supported=False)
    assert span.kind == "answer" and span.method == "span" and span.text.startswith("4,000")
    quote = decide(question="What is the tank made of?", sentences=sentences, model_text="steel",
                   model_supported=False, min_span_confidence=1.01)
    assert quote.kind == "quote" and quote.text == TANK and quote.sentences == (0,) and "steel" in quote.reason


def _docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "water.md").write_text(f"# Water\n\n{TANK}\n\nThe tank is made of welded steel plates.\n")
    return docs


@contextmanager
def _indexed(tmp_path, embedder):
    """A store holding the small water documents, indexed with ``embedder``."""
    with Store.open(tmp_path / "a.db") as store:
        index_paths(store=store, embedder=embedder, paths=[_docs(tmp_path)], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=10**6)
        yield store


def test_only_the_verified_answer_streams(tmp_path):
    """Nothing the model said streams before it is verified, so nothing is ever taken back."""
    embedder = BagOfWordsEmbedder()
    with _indexed(tmp_path, embedder) as store:
        streamed: list[str] = []
        wrong = ask(question="How many litres does the treated water tank hold?", store=store, embedder=embedder,
                    generator=ScriptedGenerator("12 barrels of oil"), min_relevance=0.1, on_token=streamed.append)
        assert "barrels" not in "".join(streamed)
        assert wrong.kind == "answer" and wrong.method == "span" and streamed == [wrong.text]
        assert wrong.evidence and "4,000 litres" in wrong.evidence[0].text
        assert wrong.citations[0].path.endswith("water.md") and wrong.model_text == "12 barrels of oil"
        assert wrong.timings.first_byte_seconds <= wrong.timings.total_seconds
        streamed.clear()
        quote = ask(question="What are the plates of the tank made of?", store=store, embedder=embedder,
                    generator=ScriptedGenerator("granite"), min_relevance=0.1, on_token=streamed.append)
    if quote.kind == "quote":  # the passage that answers: cited, shown as the source, nothing streamed
        assert streamed == [] and quote.citations and quote.text.startswith(quote.citations[0].text)
    else:
        assert quote.kind == "answer" and streamed == [quote.text]


def test_the_wording_of_each_outcome():
    base = {"question": "q", "sources": [{"path": "/d/water.md", "line_start": 3, "line_end": 3, "page": None,
                                          "heading": "Water", "text": TANK}], "dropped": []}
    answer = {**base, "kind": "answer", "answer": "4,000 litres", "evidence": [{"text": TANK}, {"text": "Steel."}],
              "pointer": ""}
    assert answer_body(answer) == ["4,000 litres", f'  from: "{TANK}"', '  near: "Steel."']
    out, _ = answer_tail(answer)
    assert out[0] == "" and out[1] == f'  from: "{TANK}"' and out[3] == "Sources:"  # the answer itself streamed
    quote = {**base, "kind": "quote", "answer": TANK, "evidence": [], "pointer": "every Monday"}
    body = "\n".join(answer_body(quote))
    assert "**every Monday**" in body and "do not say" not in body
    abstain = {**base, "kind": "abstain", "answer": NOT_IN_DOCUMENTS, "sources": [], "evidence": [], "pointer": ""}
    assert answer_tail(abstain)[0] == [NOT_IN_DOCUMENTS]


@pytest.mark.models
def test_real_models_answer_quote_or_abstain_honestly(tmp_path, embedder, generator):
    """On the corpus with the bundled models: every answer stands word for word in its cited
    evidence; a quote is never worded as "do not say"; an off-topic question is refused."""
    from conftest import CORPUS

    with Store.open(tmp_path / "c.db") as store:
        index_paths(store=store, embedder=embedder, paths=[CORPUS], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=50_000_000)
        questions = ["How much energy can the battery bank store?", "Which HF frequency do we use for the daytime sked?",
                     "Who leads an evacuation?", "What should you do if the carbon monoxide alarm sounds?"]
        kinds = []
        for question in questions:
            streamed: list[str] = []
            a = ask(question=question, store=store, embedder=embedder, generator=generator, on_token=streamed.append)
            kinds.append(a.kind)
            as_dict = answer_to_dict(a)
            assert {"kind", "answer", "sources", "evidence", "pointer", "method", "model_answer"} <= set(as_dict)
            if a.kind == "answer":
                assert streamed == [a.text] and a.verified and a.evidence
                assert " ".join(a.text.lower().split()) in " ".join(a.evidence[0].text.lower().split())
            else:
                assert streamed == []
            if a.kind == "quote":
                assert a.citations and "do not say" not in "\n".join(answer_body(as_dict))
        assert kinds[0] == "answer"
        off = ask(question="Who painted the Mona Lisa?", store=store, embedder=embedder, generator=generator)
        assert (off.kind, off.text) == ("abstain", NOT_IN_DOCUMENTS)


def test_the_chat_style_quotes_the_evidence_when_its_answer_is_not_verified(tmp_path):
    """``prompt_style = "chat"`` (whole chunks to the model, e.g. a bigger Llama): an unverified
    answer is never shown, and the passage quoted is the best evidence sentence, never an empty one."""
    embedder = BagOfWordsEmbedder()
    with _indexed(tmp_path, embedder) as store:
        streamed: list[str] = []
        wrong = ask(question="How many litres does the treated water tank hold?", store=store, embedder=embedder,
                    generator=ScriptedGenerator("12 barrels of oil"), min_relevance=0.1, style="chat",
                    on_token=streamed.append)
        assert wrong.kind == "quote" and streamed == [] and "4,000 litres" in wrong.text
        right = ask(question="How many litres does the treated water tank hold?", store=store, embedder=embedder,
                    generator=ScriptedGenerator("4,000 litres"), min_relevance=0.1, style="chat",
                    on_token=streamed.append)
        assert right.kind == "answer" and streamed == ["4,000 litres"]
