"""Sentence ends (text.py) and the salience signals of prose (salience.py), on small texts."""

from edgellama.salience import Unit, salience
from edgellama.text import sentence_spans_within_paragraphs


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans_within_paragraphs(text)]


def test_a_title_or_abbreviation_does_not_end_a_sentence():
    text = ("The medical officer is Dr. Ingrid Halvorsen. See Fig. 3 for the mast.\n"
            "Mr. Berg keeps the keys. It ends here. Version 3.5 works.")
    assert sentences(text) == ["The medical officer is Dr. Ingrid Halvorsen.", "See Fig. 3 for the mast.",
                               "Mr. Berg keeps the keys.", "It ends here.", "Version 3.5 works."]


def test_prose_favours_the_sentence_introducing_what_is_referred_back_to():
    filler = [f"Routine paragraph {k} mentions gravel{k} and timber{k} near shed{k}." for k in range(120)]
    # Two sentences alike in length and rarity; only the first introduces a term used again much later.
    intro = "The kestrel valve isolates the boiler loop during maintenance."
    other = "The copper flange connects the boiler loop during painting."
    late = ["Close the kestrel valve before any repair.", "A stuck kestrel valve must be reported."]
    units = [Unit(t, "") for t in [intro, other, *filler, *late]]
    scores = salience(units)
    assert scores[0] > scores[1]
