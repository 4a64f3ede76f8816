"""The evidence ``ask`` shows and decides on: transcript entries as units, the question's rare words
found in the evidence (abstention), and what the user reads beside an answer."""

from __future__ import annotations

from edgellama.answer import NOT_IN_DOCUMENTS, _passage, ask
from edgellama.indexer import index_paths
from edgellama.retrieve import best_sentences, evidence_units, question_coverage, search
from edgellama.store import Store
from edgellama.vectors import load_vectors

from fakes import BagOfWordsEmbedder, ScriptedGenerator

TRANSCRIPT = "\n".join([
    "(Tape 66/2, page 327)",
    *(f"04:06:{m:02d}:00 CC: Roger. Copy the readback number {m}." for m in range(10, 20)),
    "04:06:45:57 CDR (TRANQ): Houston, Tranquility Base here. The Eagle has landed.",
    "04:06:46:04 CC: Roger, Tranquility. We copy you on the ground. You got a bunch of guys",
    "  about to turn blue. We're breathing again. Thanks a lot.",
    "[garbled]",
    "04:06:46:23 CDR (TRANQ): Thank you.",
]) + "\n"


def test_a_transcript_entry_is_one_unit_and_prose_is_split_into_sentences():
    units = [TRANSCRIPT[a:b] for a, b in evidence_units(TRANSCRIPT)]
    assert "04:06:45:57 CDR (TRANQ): Houston, Tranquility Base here. The Eagle has landed." in units
    wrapped = next(u for u in units if u.startswith("04:06:46:04"))
    assert wrapped.endswith("Thanks a lot.")  # the wrapped line belongs to its entry
    assert not any(u.startswith(("(Tape", "[garbled")) for u in units)
    prose = "The tank holds 4,000 litres. It is refilled on Mondays.\nThe pump runs at night."
    assert [prose[a:b] for a, b in evidence_units(prose)] == [
        "The tank holds 4,000 litres.", "It is refilled on Mondays.", "The pump runs at night."]


def test_best_sentences_returns_whole_entries_once(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a11.txt").write_text(TRANSCRIPT * 2)  # overlapping chunks repeat entries
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "t.db") as store:
        index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=120, chunk_overlap=30,
                    max_file_bytes=10**6)
        question = "What did Armstrong say after Houston, Tranquility Base here?"
        found = search(store=store, embedder=embedder, query=question, k=5)
        picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=10)
    texts = [s.text for s in picked]
    assert len(texts) == len(set(texts))
    landed = next(s for s in picked if "The Eagle has landed." in s.text)
    assert landed.text.startswith("04:06:45:57 CDR (TRANQ): ")  # shown and cited with when and who
    assert landed.said == "Houston, Tranquility Base here. The Eagle has landed."  # short answers come from this


def test_coverage_weighs_the_rare_words_of_the_question(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(6):
        (docs / f"n{n}.md").write_text(f"# Note {n}\n\nThe crew checked the pressure of tank {n} on the moon.\n")
    (docs / "seis.md").write_text("# Seismometer\n\nThe passive seismometer was deployed on the moon by the crew.\n")
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "c.db") as store:
        index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=10**6)
        total = len(load_vectors(store, model=embedder.name))

        def coverage(question):
            found = search(store=store, embedder=embedder, query=question, k=3)
            return question_coverage(query=question, chunks=found, total=total,
                                     counts=store.chunk_counts(["crew", "moon", "seismometer", "splashdown", "passive"]))

        assert store.chunk_counts(["crew", "splashdown"]) == {"crew": 7, "splashdown": 0}
        answerable = coverage("When was the passive seismometer deployed by the crew?")
        near_miss = coverage("When did the crew splashdown after leaving the moon?")
        assert answerable > 0.9 and near_miss < 0.5  # "splashdown" is rare (absent) and weighs most


def test_a_transcript_passage_is_shown_with_its_time_stamps_and_speakers(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a11.txt").write_text(TRANSCRIPT)
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "q.db") as store:
        index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=10**6)
        quote = ask(question="What did the CC say they were about to do?", store=store,
                    embedder=embedder, generator=ScriptedGenerator("a rocket"), min_relevance=0.1)
    assert quote.kind == "quote" and quote.text.startswith("04:06:46:04 CC: Roger, Tranquility.")
    assert quote.text.startswith(quote.evidence[0].text) and quote.pointer in quote.text


def test_a_near_miss_question_is_refused_when_its_rare_word_is_nowhere(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(6):
        (docs / f"n{n}.md").write_text(f"# Log {n}\n\nThe crew reported the cabin pressure of the lander, reading {n}.\n")
    embedder = BagOfWordsEmbedder()
    with Store.open(tmp_path / "r.db") as store:
        index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=10**6)
        options = dict(store=store, embedder=embedder, generator=ScriptedGenerator("3"), min_relevance=0.7)
        near = ask(question="What cabin pressure did the crew report at splashdown?", **options)
        hit = ask(question="What cabin pressure did the crew report?", **options)
    assert (near.kind, near.text) == ("abstain", NOT_IN_DOCUMENTS) and "words found" in near.reason
    assert hit.kind != "abstain"  # best passages score alike (0.79, 0.83): the missing rare word decides


def test_the_passage_is_about_two_sentences_of_prose_and_more_short_entries():
    prose = [(" ".join(["word"] * 25) + ".", 0.9), (" ".join(["more"] * 25) + ".", 0.8),
             (" ".join(["else"] * 25) + ".", 0.7)]
    assert _passage(1, prose) == (1, 0)
    entries = [("04:06:46:04 CC: Roger, we copy you down.", 0.9), ("Heading", 0.85),
               ("04:06:45:57 CDR: The Eagle has landed.", 0.8), ("04:06:47:00 CC: Stand by for T1.", 0.7),
               ("04:06:48:00 LMP: Roger, standing by for it.", 0.6)]
    assert _passage(2, entries) == (2, 0, 3, 4)  # short entries fill the budget; a heading is never one
    assert _passage(2, entries, words=15) == (2, 0)  # a quote's budget (QUOTE_WORDS) is its own


SEISMOMETER = "\n".join([
    *(f"04:14:{m:02d}:00 CC: Roger. We copy the readback of item {m}." for m in range(10, 22)),
    "04:14:55:42 LMP (EVA): Houston, the passive seismometer has been deployed manually.",
    "04:14:56:10 CC: Roger. We see the passive seismometer on the television.",
    "04:14:57:00 CDR (EVA): The laser reflector is installed and the bubble is leveled.",
]) + "\n"


def _transcript_store(tmp_path, text):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a11.txt").write_text(text)
    embedder = BagOfWordsEmbedder()
    store = Store.open(tmp_path / "s.db")
    index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=300, chunk_overlap=30,
                max_file_bytes=10**6)
    return store, embedder


def test_a_quantity_question_is_refused_when_no_passage_near_the_best_names_a_number(tmp_path):
    store, embedder = _transcript_store(tmp_path, SEISMOMETER)
    with store:
        options = dict(store=store, embedder=embedder, generator=ScriptedGenerator("manually"), min_relevance=0.3)
        near = ask(question="How far from the lander was the passive seismometer deployed?", **options)
        what = ask(question="How was the passive seismometer deployed?", **options)
    # Every rare word of the near-miss stands in one entry; only its asked-for kind of thing is missing.
    assert (near.kind, near.text) == ("abstain", NOT_IN_DOCUMENTS) and "quantity" in near.reason
    assert what.kind != "abstain"  # the same passage answers a question that asks for no number


def test_a_quantity_question_is_answered_when_the_passage_names_one(tmp_path):
    text = SEISMOMETER.replace("has been deployed manually.", "has been deployed 20 feet south of the LM.")
    store, embedder = _transcript_store(tmp_path, text)
    with store:
        answer = ask(question="How far from the lander was the passive seismometer deployed?", store=store,
                     embedder=embedder, generator=ScriptedGenerator("20 feet"), min_relevance=0.3)
    # answered, not refused (which span the scorer prefers is test_outcomes' business)
    assert answer.kind == "answer" and answer.text.startswith("20 feet"), (answer.kind, answer.text, answer.reason)


def test_quantity_words_and_the_questions_that_ask_for_them():
    from edgellama.retrieve import asks_for_quantity, quantity_words

    assert all(asks_for_quantity(q) for q in ("How far was it?", "What year did it open?",
                                               "On which day of the week did Eagle land?", "How many minutes?"))
    assert not any(asks_for_quantity(q) for q in ("Who landed?", "Where was the plaque placed?"))
    assert quantity_words("About forty feet, on Sunday, 3.5 m") == {"forty", "sunday", "3", "5"}


def test_the_model_reads_transcript_entries_without_their_time_stamps(tmp_path):
    store, embedder = _transcript_store(tmp_path, SEISMOMETER)
    generator = ScriptedGenerator("manually")
    with store:
        answer = ask(question="How was the passive seismometer deployed?", store=store, embedder=embedder,
                     generator=generator, min_relevance=0.3)
    prompt = generator.prompts[-1].rsplit("Context:", 1)[1]
    assert "LMP (EVA): Houston, the passive seismometer has been deployed manually." in prompt
    assert "04:14:55:42" not in prompt  # 11 tokens of a stamp, 4 entries a prompt: the first byte waits on them
    assert any(s.text.startswith("04:14:55:42 LMP (EVA):") for s in answer.evidence)  # the user still sees when


def test_units_embedded_for_one_question_are_not_embedded_again(tmp_path):
    store, embedder = _transcript_store(tmp_path, SEISMOMETER)
    with store:
        options = dict(store=store, embedder=embedder, generator=ScriptedGenerator("manually"), min_relevance=0.3)
        ask(question="How was the passive seismometer deployed?", **options)
        before = len(embedder.embedded)
        again = ask(question="Who deployed the passive seismometer?", **options)
    assert again.kind != "abstain"
    assert embedder.embedded[before:] == ["Who deployed the passive seismometer?"]  # its units came from the cache


def test_a_quantity_asked_in_one_unit_is_not_answered_by_another():
    from edgellama.retrieve import Sentence, asked_unit, unit_missing, units_named

    assert asked_unit("How many kilograms of samples did they bring back?") == "kilogram"
    assert asked_unit("How far did they walk, in miles?") == "mile"
    assert asked_unit("How many people watched?") is None
    assert units_named("About 20 pounds of rocks, 5km away, 3 kg, in the cm") == {"pound", "kilometre", "kilogram"}
    assert units_named("Every year the pounds of rock are weighed.") == set()  # a unit without a number
    assert units_named("3,500 kcal a day") == {"calorie", "day"}

    def units(*texts):
        return [Sentence(0, t, 0.8 - i * 0.05, 1, 1) for i, t in enumerate(texts)]

    asked = "How many kilograms of lunar samples did the crew bring back?"
    assert unit_missing(question=asked, sentences=units("We have about 20 pounds of samples."), near=0.15) == "kilogram"
    assert unit_missing(question=asked, sentences=units("We have 20 pounds (9 kg) of samples."), near=0.15) == ""
    # no quantity of that kind at all: the quantity check's business, not this one's
    assert unit_missing(question=asked, sentences=units("We have two boxes of samples."), near=0.15) == ""
    assert unit_missing(question="How many calories a day are menus planned for?",
                        sentences=units("Menus are planned for 3,500 kcal a day."), near=0.15) == ""


APOLLO_HEADER = "\n".join([
    "Apollo 11 Technical Air-to-Ground Voice Transcription (NASA Manned Spacecraft Center, July 1969)",
    "",
    "Apollo 11 crew: the commander of Apollo 11, the command module pilot and the lunar module pilot of",
    "Apollo 11, as listed below, speak with the Capsule Communicator in Houston throughout this transcript.",
    "",
    "Each line is: GET timestamp, speaker, words spoken.",
    "Speakers: CDR = Commander Neil Armstrong; CMP = Command Module Pilot Michael Collins; LMP = Lunar Module",
    "Pilot Edwin Aldrin; CC = Capsule Communicator at Mission Control, Houston.",
    "",
]) + "\n"


def test_the_text_before_a_transcripts_entries_is_no_passage_that_answers(tmp_path):
    from edgellama.retrieve import preamble_end

    store, embedder = _transcript_store(tmp_path, APOLLO_HEADER + TRANSCRIPT + SEISMOMETER)
    with store:
        chunks = store.document_chunks(str(tmp_path / "docs" / "a11.txt"))
        assert preamble_end(chunks[:3]) == 11  # the first stamped entry, after the "(Tape 66/2, ...)" note
        options = dict(store=store, embedder=embedder, min_relevance=0.3)
        backup = ask(question="Who were the backup commander and the backup lunar module pilot?",
                     generator=ScriptedGenerator("The backup commander was Neil Armstrong."), **options)
        pilot = ask(question="Who was the command module pilot?", generator=ScriptedGenerator("Michael Collins"),
                    **options)
    assert (backup.kind, backup.text) == ("abstain", NOT_IN_DOCUMENTS) and "before the log's entries" in backup.reason
    assert pilot.kind == "answer"  # a short answer the preamble holds word for word still stands


def test_prose_with_labelled_lines_has_no_preamble(tmp_path):
    from edgellama.retrieve import preamble_end

    text = "STATION CARE\n\nPurpose\nThis chapter explains the checks.\n\n" + "\n".join(
        ["Weekly: read the SWR meter.", "Monthly: walk the ridge.", "After every storm: check the guys."]) + (
        "\n\n" + "A long paragraph of plain prose about the masts and their care. " * 3 + "\n") * 4
    store, _ = _transcript_store(tmp_path, text)
    with store:
        assert preamble_end(store.document_chunks(str(tmp_path / "docs" / "a11.txt"))[:3]) == 0


def test_a_measure_needs_a_unit_and_a_count_is_not_a_year():
    from edgellama.retrieve import Sentence, fitting_quantities, measure_words, quantity_missing, quantity_unfit

    assert measure_words("about 4 miles west, half a mile, 16 °C, nearly an inch deep") == {"4", "half", "a", "16", "an"}
    assert measure_words("We'd like you to get two core tubes and the solar wind experiment.") == set()
    assert fitting_quantities("How many soldiers defended the fort?", "In 1565, 500 soldiers") == {"500"}
    assert fitting_quantities("How many soldiers defended the fort?", "In 1565, 5.3% of them") == set()
    assert fitting_quantities("How many years did it last?", "From 1756 to 1763") == {"1756", "1763"}

    def units(*texts):
        return [Sentence(0, t, 0.8 - i * 0.05, 1, 1) for i, t in enumerate(texts)]

    speed = "What speed of solar wind did the experiment measure?"
    tubes = units("We'd like you to get two core tubes and the solar wind experiment.")
    assert quantity_missing(question=speed, sentences=tubes, near=0.15)  # a count of things is no speed
    assert not quantity_missing(question=speed, sentences=units("The solar wind blew at 400 km per second."), near=0.15)
    soldiers = "How many soldiers defended Fort Caroline?"
    years = units("Fort Caroline fell in 1565.", "The French built Fort Caroline in 1564.")
    assert quantity_unfit(question=soldiers, answer="1565", sentences=years, near=0.15)
    # a wrong span where the passage does name a count is the span scorer's to fix, not a refusal
    assert not quantity_unfit(question=soldiers, answer="1565", sentences=units("In 1565 500 soldiers held it."), near=0.15)
    assert not quantity_unfit(question=soldiers, answer="500 soldiers", sentences=years, near=0.15)
    camera = units("Temperature of the camera is showing zero.")
    # a bare number may answer a measure (the unit goes without saying); the check before the model
    # still wants one near the best when the passage is not trusted (relevance under the band)
    assert not quantity_unfit(question="What temperature was the camera showing?", answer="zero", sentences=camera,
                              near=0.15)
    assert quantity_missing(question="What temperature was the camera showing?", sentences=camera, near=0.15)


def test_a_short_answer_of_the_wrong_kind_of_quantity_is_refused(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fort.txt").write_text(
        "Fort Caroline was a French colony on the St. Johns River, founded by René de Laudonnière in 1564.\n"
        "The Spanish under Pedro Menéndez attacked Fort Caroline and took it in 1565.\n\n"
        "The river flows north past the city before it turns east to the sea.\n")
    embedder = BagOfWordsEmbedder()
    store = Store.open(tmp_path / "s.db")
    index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=300, chunk_overlap=30, max_file_bytes=10**6)
    with store:
        # relevance above min_relevance + QUANTITY_MARGIN: the check before the model trusts the passage
        options = dict(store=store, embedder=embedder, min_relevance=0.1)
        many = ask(question="How many soldiers defended Fort Caroline against the Spanish?",
                   generator=ScriptedGenerator("1565"), **options)
        when = ask(question="In which year did the Spanish take Fort Caroline?", generator=ScriptedGenerator("1565"),
                   **options)
    assert (many.kind, many.text) == ("abstain", NOT_IN_DOCUMENTS) and "not of that kind" in many.reason
    assert when.kind == "answer" and when.text == "1565"  # the same span answers the question that asks for a year


def test_a_measure_is_of_the_kind_asked():
    from edgellama.retrieve import asks_for_measure, fitting_quantities, measure_words

    assert [asks_for_measure(q) for q in ("How far is it?", "What was the speed?", "At what temperature?",
                                          "How heavy is it?", "How many are there?")] == [
        "length", "speed", "temperature", "mass", ""]
    assert measure_words("four tanks of 5,000 litres", kind="length") == set()  # a volume is no distance
    assert measure_words("30 km/h on the glacier", kind="speed") == {"30"}
    assert fitting_quantities("How far behind the shed is the tank farm?", "four tanks of 5,000 litres") == set()
    assert fitting_quantities("How far behind the shed is the tank farm?", "40 m behind it") == {"40"}


def test_a_sum_of_money_and_a_year_are_kinds_of_measure():
    from edgellama.retrieve import Sentence, asks_for_measure, fitting_quantities, quantity_missing, quantity_unfit

    assert [asks_for_measure(q) for q in ("How much money did his patents earn him?",
                                          "How much did the construction of the new bridge cost?",
                                          "What was the price of a ticket?", "In which year was the shed built?",
                                          "How much fuel is left?")] == ["money", "money", "money", "year", ""]
    assert fitting_quantities("How much did it cost?", "It cost $5 million, or 20 dollars a head, in 1998") == {"5", "20"}
    assert fitting_quantities("How much money did his patents earn him?", "17 patents in one season") == set()
    assert fitting_quantities("In which year was the shed built?", "In the 1980s, or 1991; 30 kVA, 6,140 hours") == {
        "1980", "1991"}
    assert fitting_quantities("What year did Rome fall?", "Rome fell in AD 476, Troy in 1180 BC") == {"476", "1180"}
    units = [Sentence(0, "Both D-30 units rated 30 kVA stand in the Generator Shed.", 0.8, 1, 1)]
    assert quantity_missing(question="In which year was the Generator Shed built?", sentences=units, near=0.15)
    assert quantity_unfit(question="How much does the resupply convoy cost?", answer="one season",
                          sentences=[Sentence(0, "The convoy runs once a season, in one season.", 0.8, 1, 1)], near=0.15)
    assert not quantity_unfit(question="How much does the convoy cost?", answer="$40,000",
                              sentences=[Sentence(0, "The convoy costs $40,000.", 0.8, 1, 1)], near=0.15)


def test_the_reply_to_the_best_entry_is_evidence_beside_it(tmp_path):
    text = "\n".join([
        *(f"04:12:{m:02d}:00 CC: Roger. Standing by for the crew status report number {m}." for m in range(10, 16)),
        "04:12:30:00 CC: Columbia, Houston. What is your glycol evaporator outlet temperature?",
        "04:12:30:20 CMP: Forty-eight degrees.",
        "04:12:31:00 CDR (TRANQ): The television camera is on the tripod.",
    ]) + "\n"
    store, embedder = _transcript_store(tmp_path, text)
    question = "What glycol evaporator outlet temperature did Collins report?"
    with store:
        found = search(store=store, embedder=embedder, query=question, k=3)
        picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=3)
    # The reply shares no word with the question: by its own score it would not be evidence at all.
    assert "glycol evaporator outlet temperature" in picked[0].said
    assert picked[1].said == "Forty-eight degrees."
    assert len(picked) == 3


def test_the_entries_of_two_more_chunks_compete_in_a_transcript(tmp_path):
    lines = [f"04:10:{m:02d}:00 CC: Roger. Readback number {m} of the landing site update." for m in range(40)]
    lines[3] = "04:10:03:00 LMP (TRANQ): The passive seismometer is out of the quad."
    lines[30] = "04:10:30:00 CDR (EVA): The passive seismometer is deployed, bubble leveled."
    store, embedder = _transcript_store(tmp_path, "\n".join(lines) + "\n")
    with store:
        store_chunks = search(store=store, embedder=embedder, query="passive seismometer deployed", k=5)
        answer = ask(question="Where was the passive seismometer deployed?", store=store, embedder=embedder,
                     generator=ScriptedGenerator("bubble leveled"), min_relevance=0.3, evidence_chunks=1)
    first = store_chunks[0].chunk
    outside = [c for c in answer.context if not first.line_start <= c.line_start <= first.line_end]
    assert outside, [(c.line_start, c.text) for c in answer.context]  # a transcript's pool is wider than one chunk
    from edgellama.retrieve import is_record_chunk
    assert is_record_chunk("\n".join(lines[:5])) and not is_record_chunk("The pump runs at night. It is quiet.")


def test_a_phrase_the_question_quotes_finds_its_entry_first(tmp_path):
    lines = [f"04:15:{m:02d}:00 CC: Armstrong, say after the tone {m}: Tranquility Base, Houston is here."
             for m in range(40)]
    lines[5] = "04:06:45:59 CDR (TRANQ): Houston, Tranquility Base here."
    lines[6] = "04:06:46:04 CDR (TRANQ): The Eagle has landed."
    store, embedder = _transcript_store(tmp_path, "\n".join(lines) + "\n")
    question = 'What did Armstrong say after "Houston, Tranquility Base here"?'
    with store:
        found = search(store=store, embedder=embedder, query=question, k=3)
        picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=3)
        plain = best_sentences(query=question.replace('"', ""), chunks=found, embedder=embedder, limit=3)
    assert picked[0].said == "Houston, Tranquility Base here."
    assert picked[1].said == "The Eagle has landed."  # its reply beside it
    assert plain[0].said != "Houston, Tranquility Base here."  # without the quotes the words alone do not find it
    from edgellama.retrieve import quoted_phrases
    assert quoted_phrases('Who said \u201cOne small step\u201d? Or "go for landing"') == ["one small step", "go for landing"]


# A transcript's preamble: its title, what a line holds, the key to its speakers' labels.
PREAMBLE = ["Apollo 11 air-to-ground transcript", "",
            "Each line is: GET time stamp, speaker, words spoken.",
            "Speakers: CDR = Commander Neil Armstrong; CMP = Command Module Pilot Michael Collins; LMP = Lunar Module",
            'Pilot Edwin "Buzz" Aldrin; CC = Capsule Communicator (CapCom) at Mission Control, Houston.', ""]


def test_a_speaker_the_question_names_is_found_by_the_label_the_entries_give(tmp_path):
    from edgellama.retrieve import speaker_names, speakers_named

    lines = [f"04:10:{m:02d}:00 CC: Roger. Readback number {m} of the landing site update." for m in range(40)]
    lines[20] = "04:10:20:00 CMP (COLUMBIA): If you'll excuse me a minute, I'm going to have a cup of coffee."
    lines[21] = "04:10:21:00 CC: Excuse me, Columbia, say again the cup count."
    store, embedder = _transcript_store(tmp_path, "\n".join(PREAMBLE + lines) + "\n")
    question = "What did Collins excuse himself to have?"
    with store:
        speakers = speaker_names(store.document_chunks(str(tmp_path / "docs" / "a11.txt"), first=3))
        found = search(store=store, embedder=embedder, query=question, k=5)
        named = speakers_named(question, speakers)
        picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=2, speakers=named)
        unnamed = best_sentences(query=question, chunks=found, embedder=embedder, limit=2)
    assert speakers["collins"] == "CMP" and speakers["aldrin"] == "LMP" and speakers["houston"] == "CC"
    assert "pilot" not in speakers and "module" not in speakers  # in two descriptions: names neither
    assert named == {"collins": "CMP"}
    assert speakers_named("Collins said what?", speakers) == {}  # a question's first word is capitalized anyway
    assert picked[0].said.endswith("a cup of coffee.")
    assert not unnamed[0].said.endswith("a cup of coffee.")  # by its words alone CC's "Excuse me" comes first


def test_a_sentence_that_refers_back_is_read_with_the_one_before_it(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "exchange.md").write_text(
        "# Markets\n\nThe Warsaw Stock Exchange was closed by the war in 1939. "
        "It was re-established in April 1991. Trading volumes grew quickly afterwards. "
        "Banks in Krakow opened branches. Stock prices in Gdansk were reported weekly.\n")
    embedder = BagOfWordsEmbedder()
    question = "When was the Warsaw stock exchange brought back?"
    with Store.open(tmp_path / "t.db") as store:
        index_paths(store=store, embedder=embedder, paths=[docs], chunk_tokens=200, chunk_overlap=20,
                    max_file_bytes=10**6)
        found = search(store=store, embedder=embedder, query=question, k=3)
        picked = best_sentences(query=question, chunks=found, embedder=embedder, limit=2, read_back=True)
        alone = best_sentences(query=question, chunks=found, embedder=embedder, limit=2)  # a summary's sentences
    assert [s.text for s in picked] == ["The Warsaw Stock Exchange was closed by the war in 1939.",
                                        "It was re-established in April 1991."]
    assert "It was re-established in April 1991." not in [s.text for s in alone]  # "It" shares no word with the question


def test_a_question_naming_speakers_searches_the_entries_without_their_names(tmp_path):
    from edgellama.retrieve import without_words

    lines = [f"04:13:{m:02d}:00 CC: Roger. Copy the readback number {m} of the pad." for m in range(60)]
    lines[40] = "04:13:40:00 CDR (EVA): Isn't that something! Magnificent sight out here."
    lines[41] = "04:13:41:00 LMP (EVA): Magnificent desolation."
    store, embedder = _transcript_store(tmp_path, "\n".join(PREAMBLE + lines) + "\n")
    question = "What did Aldrin say right after Armstrong called it a magnificent sight?"
    assert without_words(question, ["aldrin", "armstrong"]) == "What did   say right after   called it a magnificent sight?"
    gen = ScriptedGenerator("Magnificent desolation")
    with store:
        by_all = search(store=store, embedder=embedder, query=question, k=1)
        ask(question=question, store=store, embedder=embedder, generator=gen, top_k=1, min_relevance=0.0)
    assert "Speakers:" in by_all[0].chunk.text and "Magnificent" not in by_all[0].chunk.text  # the names find the list
    assert "Magnificent sight out here." in gen.prompts[0]  # without them, the exchange is found


def test_a_transcripts_entries_are_ranked_by_the_rare_words_they_hold(tmp_path):
    from edgellama.text import content_words

    lines = [f"04:{m // 60:02d}:{m % 60:02d}:00 CC: Eagle, Houston. Roger, we copy you, Eagle, number {m}." for m in range(150)]
    lines[12] = "04:03:12:00 CC: Roger, Buzz. K factor coming at you: 90 00 00 15. Over."
    store, embedder = _transcript_store(tmp_path, "\n".join(lines) + "\n")
    question = "What K factor did Houston give Eagle?"
    with store:
        found = search(store=store, embedder=embedder, query=question, k=3)
        rarity = (store.chunk_counts(content_words(question)), len(load_vectors(store, model=embedder.name)))
        ranked = best_sentences(query=question, chunks=found, embedder=embedder, limit=60, rarity=rarity)
        plain = best_sentences(query=question, chunks=found, embedder=embedder, limit=60)
    at_plain = next(i for i, s in enumerate(plain) if "K factor" in s.said)
    at_ranked = next(i for i, s in enumerate(ranked) if "K factor" in s.said)
    assert at_plain >= 3  # the greetings echo the question's names
    assert at_ranked < at_plain  # "factor" is in one chunk, "Eagle" and "Houston" in all of them
    assert ranked[at_ranked].score == plain[at_plain].score  # ranked higher, scored the same: abstention reads the score
