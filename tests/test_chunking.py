from edgellama.chunking import approx_tokens, chunk_text, line_span

DOC = """# Power

The station runs on a 48 kW solar array. It has 120 panels.

## Battery bank

The battery stores 220 kWh. Keep it above 30 percent.

""" + " ".join(f"Long paragraph sentence number {i} keeps going." for i in range(80)) + """

Water
=====

The tank holds 9,000 litres.
"""


def test_chunks_are_exact_spans_within_the_token_limit():
    chunks = chunk_text(DOC, count_tokens=approx_tokens, max_tokens=60, overlap=12)
    assert len(chunks) > 5
    for c in chunks:
        assert DOC[c.char_start:c.char_end] == c.text
        assert c.token_count <= 60
    # every character of content is in some chunk
    covered = set()
    for c in chunks:
        covered.update(range(c.char_start, c.char_end))
    assert all(i in covered for i, ch in enumerate(DOC) if not ch.isspace() and ch not in "=")


def test_headings_start_chunks_and_give_their_path():
    chunks = chunk_text(DOC, count_tokens=approx_tokens, max_tokens=60, overlap=0)
    headings = [c.heading for c in chunks]
    assert headings[0] == "Power"
    assert "Power > Battery bank" in headings
    assert headings[-1] == "Water"
    assert chunks[-1].text.startswith("Water\n=====")


def test_long_paragraphs_overlap_by_whole_sentences():
    chunks = chunk_text(DOC, count_tokens=approx_tokens, max_tokens=60, overlap=12)
    long = [c for c in chunks if "Long paragraph" in c.text]
    for a, b in zip(long, long[1:]):
        assert a.char_end > b.char_start, "neighbours share their boundary sentence"
        assert b.text.startswith("Long paragraph sentence")


def test_an_endless_sentence_is_cut_at_words():
    text = "word " * 2000
    chunks = chunk_text(text, count_tokens=approx_tokens, max_tokens=100, overlap=0)
    assert all(c.token_count <= 100 for c in chunks)
    assert sum(c.text.count("word") for c in chunks) == 2000


def test_line_span_is_zero_based_and_inclusive():
    text = "a\nbb\nccc\n"
    assert line_span(text, 0, 1) == (0, 0)
    assert line_span(text, 2, 8) == (1, 2)
    assert line_span(text, 2, 5) == (1, 1)  # the newline closing line 1 does not reach line 2
