"""The three outcomes of ``ask`` (a verified short answer, the passage that answers, "The documents
do not say."), the short-answer span scorer, and how the CLI and the API word them."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from edgellama.answer import (NOT_IN_DOCUMENTS, SPAN_FEATURES, SPAN_WEIGHTS, UNVERIFIED_TOKENS, answer_to_dict, ask,
                              candidate_spans, could_be_quoted, decide, head_noun, question_type, score_spans)
from edgellama.prompt import STOP, build_prompt
from edgellama.indexer import index_paths
from edgellama.render import answer_body, answer_tail
from edgellama.store import Store
from edgellama.text import normalize_answer

from fakes import BagOfWordsEmbedder, ScriptedGenerator

TANK = "The treated water tank holds 4,000 litres and is refilled every Monday by the duty engineer."


def test_question_types():
    assert question_type("How many litres does the tank hold?") == "number"
    assert question_type("When was the stock exchange founded?") == "number"
    assert question_type("In which year did Tesla die?") == "number"
    assert question_type("Who financed the company?") == "name"
    assert question_type("Where is the stadium?") == "place"
    assert question_type("What was Warsaw's first cabaret?") == "other"
    # the question word of the asking clause, not of a clause before it or of a name
    assert question_type("When many people are arrested, what is a common tactic?") == "other"
    assert question_type("What does Doctor Who do when his body is damaged?") == "other"
    assert question_type("Approximately how many items are in the collection?") == "number"


def test_head_noun_names_the_kind_of_answer():
    assert head_noun("What river flows through Warsaw?") == "river"
    assert head_noun("In which year did Tesla die?") == "year"
    assert head_noun("How many litres does the tank hold?") == "litres"
    assert head_noun("What was Warsaw's first cabaret?") == ""


def test_the_head_noun_names_a_name_or_number_beside_it_in_the_same_phrase():
    near = SPAN_FEATURES.index("head_noun_near")

    def named(question: str, sentence: str) -> set[str]:
        return {s.span.text for s in score_spans(question=question, sentences=[(sentence, 0.9)]) if s.features[near]}

    assert "Vistula" in named("What river flows through Warsaw?", "Warsaw lies on the Vistula river, in the east.")
    assert "4,000 litres" in named("How many litres does the tank hold?", TANK)
    # q001 of tests/test_corpus.py: not the word after a sentence ending in "version", nor an adjective of it
    service = "It is not part of the current version.** Today every EdgeLlama command runs in the foreground."
    assert named("Which Python version does EdgeLlama need?", service) == set()
    assert not next(s for s in candidate_spans(service) if s.text == "Today").name


def test_candidate_spans_keep_numbers_dates_and_names_whole():
    texts = {s.text for s in candidate_spans("The Summer Theatre ran from 1870 to 1939, near the University of Warsaw.")}
    assert {"1870 to 1939", "Summer Theatre", "University of Warsaw"} <= texts
    assert not any(t.split()[0].lower() in ("the", "from") for t in texts)
    texts = {s.text for s in candidate_spans("We have you pitched up about 4 1/2 degrees.")}
    assert {"about 4 1/2 degrees", "4 1/2 degrees"} <= texts
    texts = {s.text for s in candidate_spans("ABC launched a nighttime service over cable, with over 14,000 items.")}
    assert "over 14,000 items" in texts and not any(t.split()[-1] == "over" for t in texts)


def test_the_models_log_probability_is_one_more_vote():
    question = "Who refills the tank?"
    plain = score_spans(question=question, sentences=[(TANK, 0.9)])
    target = plain[1].span.text  # what the other features rank second, the model likes best
    asked: list[list[str]] = []

    def prefers(answers: list[str]) -> list[float]:
        asked.append(answers)
        return [0.0 if a == target else -12.0 for a in answers]

    voted = score_spans(question=question, sentences=[(TANK, 0.9)], answer_logprobs=prefers, rescore=5,
                        weights={**SPAN_WEIGHTS, "model_logprob": 20.0})
    assert plain[0].span.text != target and voted[0].span.text == target
    assert len(asked) == 1 and len(asked[0]) == 5 == len(set(asked[0]))  # the likeliest 5 only, once
    assert asked[0][:2] == [plain[0].span.text, target]
    flagged = [s for s in voted if s.span.text not in asked[0]]
    assert flagged and all(s.features[SPAN_FEATURES.index("not_rescored")] == 1.0 for s in flagged)


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


def test_an_answer_can_be_quoted_while_its_words_run_on_in_a_passage():
    passages = [normalize_answer(TANK).split()]
    assert could_be_quoted("holds 4,000 lit", passages=passages)  # its last word unfinished
    assert could_be_quoted("The treated water tank", passages=passages) and could_be_quoted("", passages=passages)
    assert not could_be_quoted("holds 4,000 barrels", passages=passages)
    assert not could_be_quoted("4,000 litres every Monday", passages=passages)  # words of the passage, not a run of it


def test_an_answer_no_passage_can_hold_is_stopped(tmp_path):
    """After UNVERIFIED_TOKENS pieces the model is stopped once its words can no longer be read in
    a passage it was shown (that answer is never shown), and what it said is marked where it was
    stopped. An answer copying a passage runs on."""
    embedder = BagOfWordsEmbedder()
    rambling = ("the water is brought up by a large truck that comes along the valley road every other week "
                "in the summer months")
    question = "How many litres does the treated water tank hold?"
    with _indexed(tmp_path, embedder) as store:
        stopped = ask(question=question, store=store, embedder=embedder, generator=ScriptedGenerator(rambling),
                      min_relevance=0.1)
        copying = ask(question=question, store=store, embedder=embedder, generator=ScriptedGenerator(TANK),
                      min_relevance=0.1)
    assert stopped.model_text == " ".join(rambling.split()[:UNVERIFIED_TOKENS]) + " …"
    assert stopped.kind == "answer" and stopped.method == "span" and "4,000" in stopped.text
    assert copying.model_text == TANK.rstrip(".") + "." and copying.verified


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
def test_answer_logprobs_prefer_the_answer_and_leave_the_cache_as_it_was(generator):
    def prompt(question: str) -> str:
        return build_prompt(question=question, chunks=[("Water", "The treated water tank holds 4,500 litres. "
                                                                  "It is cleaned in May by the duty engineer.")],
                            count_tokens=generator.count_tokens, context_budget=500, n_ctx=4096, max_tokens=16).prompt

    how_much = prompt("How much does the treated water tank hold?")
    plain = "".join(generator.stream(how_much, max_tokens=12, stop=STOP))
    right, wrong, cut = generator.answer_logprobs(how_much, ["4,500 litres", "the duty engineer", "4,500 litres. It"])
    assert right > wrong and right > cut and right < 0
    # the same numbers from a cold prompt (after another one) and again; generation is unchanged
    generator.answer_logprobs(prompt("Who cleans the tank?"), ["the duty engineer"])
    assert generator.answer_logprobs(how_much, ["4,500 litres"])[0] == pytest.approx(right, abs=0.05)
    assert generator.answer_logprobs(how_much, ["4,500 litres"])[0] == pytest.approx(right, abs=0.05)
    assert "".join(generator.stream(how_much, max_tokens=12, stop=STOP)) == plain


@pytest.mark.models
def test_a_stream_closed_early_stops_the_model_and_frees_it(generator):
    """What ``ask`` does to an answer no passage can hold: it closes the stream after a few pieces.
    The stats say so, the model's lock is free, and the next generation is what it was."""
    prompt = build_prompt(question="What colour is the tank?", chunks=[("Water", TANK)], count_tokens=generator.count_tokens,
                          context_budget=500, n_ctx=4096, max_tokens=16).prompt
    whole = list(generator.stream(prompt, max_tokens=16, stop=()))
    stream = generator.stream(prompt, max_tokens=16, stop=())
    first = [next(stream), next(stream)]
    stream.close()
    stats = generator.last_stats
    assert first == whole[:2] and stats.completion_tokens == 2 and stats.stopped_by == "closed"
    assert generator.answer_logprobs(prompt, ["4,000 litres"])[0] < 0  # the lock was released
    assert list(generator.stream(prompt, max_tokens=16, stop=())) == whole
    assert generator.last_stats.stopped_by in ("length", "stop", "eos")


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
