"""The edges of a short answer (answer.shape_answer) and which spans may be one (answer.decide):
general rules, each shown on a sentence written for the test."""

from __future__ import annotations

from edgellama.answer import SPAN_FEATURES, candidate_spans, decide, score_spans, shape_answer

MILL = "The old mill on the Tarn river was rebuilt by John C. Messenger in 1891 for the Weavers' Guild Trust."


def test_a_restated_question_and_a_leading_preposition_come_off_the_models_answer():
    question = "Who rebuilt the old mill on the Tarn river?"
    said = "The old mill on the Tarn river was rebuilt by John C. Messenger"
    assert shape_answer(said, question=question, sentence=MILL) == "John C. Messenger"
    assert shape_answer("In 1891", question="When was the mill rebuilt?", sentence=MILL) == "1891"
    # one word of the question beside the answer is part of it, not a restatement
    assert shape_answer("14 months", question="How many months of rations are stocked?",
                        sentence="Rations are stocked for 14 months.") == "14 months"
    # every word restated: nothing is left to trim to, the answer stays as it was
    assert shape_answer("the old mill", question=question, sentence=MILL) == "the old mill"


def test_a_name_is_never_cut_by_the_trim():
    # "Guild Trust" restates the question, but it ends the name the answer is
    assert shape_answer("the Weavers Guild Trust", question="Which guild trust rebuilt the mill?",
                        sentence="It was rebuilt by the Weavers Guild Trust.") == "Weavers Guild Trust"
    assert shape_answer("the flour store was rebuilt by Anna Mill", question="Who rebuilt the flour store?",
                        sentence="The flour store was rebuilt by Anna Mill.") == "Anna Mill"


def test_a_year_question_gets_the_year_of_a_date_and_a_when_question_the_date():
    sentence = "The gallery closed on 25 February 2010 after a fire."
    assert shape_answer("25 February 2010", question="In which year was the gallery closed?",
                        sentence=sentence) == "2010"
    assert shape_answer("25 February 2010", question="When was the gallery closed?",
                        sentence=sentence) == "25 February 2010"
    assert shape_answer("In the early 1970s", question="In what decade did colour arrive?",
                        sentence="In the early 1970s colour arrived.") == "1970s"


def test_a_name_cut_short_continues_to_its_end():
    assert shape_answer("John C.", question="Who rebuilt the mill?", sentence=MILL) == "John C. Messenger"
    assert shape_answer("Weavers", question="For whom was the mill rebuilt?", sentence=MILL) == "Weavers' Guild Trust"
    assert shape_answer("Tarn", question="Which river?", sentence=MILL) == "Tarn"  # "river" is not a name
    # not across a full stop, nor into a number
    assert shape_answer("Messenger", question="Who?", sentence="It was Messenger. Then came 1891.") == "Messenger"


def test_a_date_with_a_comma_is_one_candidate():
    texts = {s.text for s in candidate_spans("The attack began on October 6, 1973, at dawn.")}
    assert {"October 6, 1973", "1973"} <= texts


def test_a_span_of_the_questions_own_words_is_never_the_answer():
    question = "What is the basic unit of territorial division in Poland?"
    sentence = "The commune is the basic unit of territorial division in Poland."
    spans = score_spans(question=question, sentences=[(sentence, 0.9)])
    at = SPAN_FEATURES.index("share_in_question")
    assert any(s.features[at] == 1.0 for s in spans)  # "Poland" is a candidate ...
    picked = decide(question=question, sentences=[(sentence, 0.9)], model_text="Poland", model_supported=True,
                    min_span_confidence=0.0)
    assert picked.kind == "answer" and picked.text.lower() != "poland"  # ... never the answer
    assert "commune" in picked.text.lower()


def test_the_models_figures_vote_for_the_span_that_spells_them_out():
    question = "How long did the commander estimate until they would be ready?"
    sentences = [("That is 02. And do you have a time estimate for us until you're ready?", 0.8),
                 ("Fifteen minutes, maybe?", 0.7)]
    spans = score_spans(question=question, sentences=sentences, model_text="15 minutes")
    at = SPAN_FEATURES.index("in_model")
    fifteen = next(s for s in spans if s.span.text == "Fifteen minutes")
    assert fifteen.features[at] == 1.0  # "15 minutes" is the model's way of saying it
    picked = decide(question=question, sentences=sentences, model_text="15 minutes", model_supported=False)
    assert picked.kind == "answer" and picked.text == "Fifteen minutes"  # shown as the passage writes it
