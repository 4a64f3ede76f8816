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


def _log(reply: str, *, echoed_every: int = 0) -> list[Unit]:
    """A shift log: 300 routine entries (each its own words), then a report and Control's reply to it.
    ``echoed_every``: Control also repeats a word pair of every so many routine entries."""
    units = []
    for k in range(300):
        units.append(Unit(f"Checked tank{k} level gauge{k} reading normal.", "op"))
        if echoed_every and k % echoed_every == 0:
            units.append(Unit(f"Is tank{k} level gauge{k} fine?", "Control"))
    return units + [Unit("Strange hissing noise near valve V9 in the north gallery.", "op"), Unit(reply, "Control")]


def test_a_log_favours_a_report_another_speaker_takes_up_unless_everything_is_repeated_back():
    # The same words in both replies: only whether "hissing noise" is taken up as a pair differs.
    taken_up, not_taken_up = _log("Is the hissing noise still there?"), _log("Is the noise hissing still there?")
    assert salience(taken_up)[-2] > salience(not_taken_up)[-2] + 0.3
    # A radio loop, where every few entries are read back: taking a pair up is routine there.
    loop_taken, loop_not = (_log(reply, echoed_every=20) for reply in ("Is the hissing noise still there?",
                                                                      "Is the noise hissing still there?"))
    assert abs(salience(loop_taken)[-2] - salience(loop_not)[-2]) < 1e-9


def test_a_transcript_favours_reading_out_a_quoted_text_but_not_a_quoted_read_back():
    def day(said: str, before: str = "Copy that.") -> list[Unit]:
        units = [Unit(f"Reading {k}: pressure{k} steady at valve{k}.", "CC" if k % 2 else "CDR") for k in range(200)]
        return units + [Unit(before, "CC"), Unit(said, "CDR")]

    plain = "Underneath it says here man first set foot upon the Moon in peace."
    quoted = 'Underneath it says "here man first set foot upon the Moon in peace."'
    assert salience(day(quoted))[-1] > salience(day(plain))[-1] + 0.3
    # The same quote of what the other speaker has just said is a read-back, not a read-out.
    said_before = "Here man first set foot upon the Moon in peace."
    assert abs(salience(day(quoted, said_before))[-1] - salience(day(plain, said_before))[-1]) < 1e-9
