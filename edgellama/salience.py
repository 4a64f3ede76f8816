"""Salience: how much each unit of a document (a sentence, or one entry of a log or transcript)
tells the reader that the rest of the document does not; and the greedy pick of points by it.
Pure and model-free; knows nothing of files, caches or models. Scores are computed once per
document (its word statistics are the background, and an event is recognized by what happens
around it); the summary tree then picks by them.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from .text import STOPWORDS, content_words

__all__ = ["ACKNOWLEDGEMENTS", "MOMENT_WINDOW", "SCORERS", "Scorer", "Unit", "centrality", "content_terms", "salience",
           "salient_sentences"]

REDUNDANCY_WEIGHT = 0.7  # penalty for similarity to a sentence already picked
_WORD = re.compile(r"[^\W\d_][\w'-]*|\d[\w.-]*\w|\d")
# Words that acknowledge, confirm or hail rather than tell: what a radio loop or a log's
# replies are mostly made of ("Roger.", "Copy, thanks.", "Noted."). They count for nothing.
ACKNOWLEDGEMENTS = frozenset("""ack acknowledged affirm affirmative ahead all alright also copied copy copying
    done fine go good great hello hey hi yes yeah no negative noted ok okay out over read reading received
    right roger see sir stand standby standing sure thank thanks understand understood very well will
    wilco yep loud clear say again checked""".split())
# Words a writer uses to flag what matters (Edmundson's bonus words): a small, generic bonus.
CUES = frozenset("""important importantly never warning caution critical essential failed failure alarm
    error emergency incident unexpected lost broke broken injured injury decided decision concluded conclusion
    significant""".split())

LABELS_SETTLED = 0.05  # share of the units before which every speaker is new (no bonus)
LABEL_ONCE = 0.5  # share of the bonus for a new label not heard again within LABEL_RUN units
LABEL_RUN = 30  # units: a new speaker label this close after another is part of the same change
MOMENT_WINDOW = 4  # units either side of an event that share its bonus (a question, its answer, a reaction)
ONSET_HORIZON = 300  # units: a word unused this long before is new when it comes up
UPTAKE_WINDOW = 60  # units after a new word in which other speakers must take it up for it to count
ROUTINE_WEIGHT = 0.6  # per log-count of units shaped the same (numbers aside)
CUE_WEIGHT = 0.15  # for a word that flags an event or a warning (CUES)
SPECIFIC_WEIGHT = 0.3  # for the particulars a unit states: numbers, codes, names (up to two)
ONSET_WEIGHT = 0.25  # for a new word other speakers take up (its percentile, to the 4th power: only the top few)
REACTION_WEIGHT = 0.6  # for an exclamation by another speaker within three units
REFERENCE_WEIGHT = 0.3  # prose: for introducing a word the document mentions again much later (its percentile, squared)
REFERENCE_GAP = 0.1  # share of the units: a mention at least this far after the first one refers back to it
REFERENCE_MIN_UNITS = 100  # ... in a document this long at least: a note or a handful of retrieved sentences has no "later"
ECHO_WEIGHT = 0.4  # log: for bringing up a rare word pair that another speaker takes up at once (_echoes)
ECHO_WINDOW = 2  # entries before (not new) and after (taken up)
ECHO_MAX_UNITS = 3  # a pair in more units than this is not rare
ECHO_MAX_SHARE = 0.01  # echo counts only where at most this share of the units have it (not a radio loop)
READOUT_WEIGHT = 0.6  # log or transcript: for an entry that reads out a quoted text of READOUT_WORDS words or more
READOUT_WORDS = 6  # ... a quoted word or two is a term, not a text
READOUT_BACK = 10  # units: a quote of what was said this recently is a read-back
_QUOTED = re.compile(r'["\u201c]([^"\u201c\u201d]+)["\u201d]')


@dataclass(frozen=True)
class Unit:
    text: str  # what it says (a record's time stamp and speaker label removed)
    speaker: str  # a record's speaker label, "" for prose


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=16384)  # a text is scored once and compared at every level of the tree
def content_terms(text: str) -> tuple[str, ...]:
    """The words of ``text`` that can tell something: no stopwords, acknowledgements or single letters."""
    return tuple(w for w in _words(text) if w not in STOPWORDS and w not in ACKNOWLEDGEMENTS and len(w) > 1)


def _shape(words: Sequence[str]) -> frozenset[str]:
    return frozenset("#" if w[0].isdigit() else w for w in words)


def _specifics(text: str) -> int:
    """Words that state a particular: numbers, codes (T-7), names (capitalized inside a sentence)."""
    words = re.findall(r"\w(?:[\w,.:/-]*\w)?", text)
    return sum(1 for k, w in enumerate(words) if any(ch.isdigit() for ch in w) or (k and w[0].isupper()))


def _percentiles(values: Sequence[float]) -> list[float]:
    """Each positive value's rank among all, in 0..1 (0 for values <= 0): features on one scale."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    top = max(1, len(values) - 1)
    for rank, i in enumerate(order):
        if values[i] > 0:
            out[i] = rank / top
    return out


def salience(units: Sequence[Unit]) -> list[float]:
    """Per unit: what it tells, minus how routine it is, plus the bonus of an event near it.

    - told: the summed rarity (IDF over the document's own units: its background) of
      its content words, acknowledgements not counted, scaled down by its share of bare numbers
      (a read-back or a table of readings states many figures and no event);
    - routine: how many units have the same words once numbers are set aside ("Reservoir
      levels: R1 4.21 m ..." every hour): many near-duplicates are routine, not central;
    - events: an entry by a speaker label never heard before (someone new speaks, a call sign
      changes), a word nobody used for a long while that others then take up (a new subject
      the rest refers back to), an exclamation in reply. The bonus goes to the units around
      it, so the clearest unit of the moment (the one that tells most) is the one picked;
    - in a log or transcript, an entry that reads out a quoted text (a plaque, a message), and,
      where few entries are repeated back (a log, not a radio loop), one that brings up a rare
      word pair another speaker takes up at once (``_echoes``);
    - in prose, a small bonus for the sentence that introduces a term the document refers back
      to much later (a definition, a rule stated once and invoked again).
    """
    n = len(units)
    if not n:
        return []
    tokens = [content_terms(u.text) for u in units]
    sets = [set(t) for t in tokens]
    df = Counter(w for s in sets for w in s)
    idf = {w: math.log(n / c) for w, c in df.items()}
    shapes = Counter(_shape(t) for t in tokens)
    told: list[float] = []
    for t, s in zip(tokens, sets):
        numbers = sum(1 for w in t if w[0].isdigit()) / max(1, len(t))
        value = sum(idf.get(w, 0.0) for w in s) / (1 + math.sqrt(len(s))) * (1 - numbers) if len(s) >= 2 else 0.0
        told.append(value)
    where: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for w in s:
            where[w].append(i)
    heard: set[str] = set()
    voiced = any(u.speaker for u in units)
    label, onset, reaction = [0.0] * n, [0.0] * n, [0.0] * n
    last_new = -ONSET_HORIZON
    for i, unit in enumerate(units):
        if voiced and unit.speaker and unit.speaker not in heard and i > LABELS_SETTLED * n:
            # New labels in a row (each crew member's new call sign) are one change, not several.
            label[i] = 1.0 if i - last_new > LABEL_RUN else 0.0
            if LABEL_ONCE < 1.0 and not any(units[j].speaker == unit.speaker for j in range(i + 1, min(n, i + LABEL_RUN + 1))):
                label[i] *= LABEL_ONCE  # heard once and not again soon: a stray or garbled label
            last_new = i
        heard.add(unit.speaker)
        if voiced:
            for w in sets[i]:
                places = where[w]
                k = bisect.bisect_left(places, i)
                if k - bisect.bisect_left(places, i - ONSET_HORIZON):
                    continue  # used lately: not new
                others = sum(1 for j in places[k + 1: bisect.bisect_right(places, i + UPTAKE_WINDOW)]
                             if units[j].speaker != unit.speaker)
                if others >= (2 if w[0].isdigit() else 1):  # a read-back repeats a number once
                    onset[i] = max(onset[i], idf.get(w, 0.0) * math.log1p(others) * min(1.0, i / ONSET_HORIZON))
            reaction[i] = float(any(units[j].speaker != unit.speaker and "!" in units[j].text
                                    for j in range(max(0, i - 3), min(n, i + 4))))
    # Prose: the sentence that introduces a term the rest of the document refers back to much
    # later (a definition, the first statement of a rule). A term used everywhere is not one
    # (at most one unit in 50); in a log or transcript the onset of a word is its form of this. Only
    # in a long document read in order (not, e.g., the sentences retrieved for a topic).
    reference = [0.0] * n
    if not voiced and n >= REFERENCE_MIN_UNITS:
        gap = max(10, int(REFERENCE_GAP * n))
        for w, places in where.items():
            later = len(places) - bisect.bisect_left(places, places[0] + gap)
            if later and len(places) <= max(3, n // 50):
                reference[places[0]] = max(reference[places[0]], idf[w] * math.log1p(later))
    reference_p = _percentiles(reference)
    # A log: a rare word pair (in at most ECHO_MAX_UNITS units) that another speaker takes up
    # within ECHO_WINDOW entries ("Is the combined filtered water still in spec?" answered by
    # "Combined filtered turbidity 0.19 NTU, ..." just after a filter bed's turbidity rose): people
    # asking and answering about something unusual. Only where that is rare (at most ECHO_MAX_SHARE
    # of the units): in a radio loop every call is read back, and echo is routine.
    echo = _echoes(units, tokens) if voiced else [0.0] * n
    if sum(echo) > ECHO_MAX_SHARE * n:
        echo = [0.0] * n
    # A log or transcript: an entry that reads out a written text (a plaque, a message, a
    # statement quoted word for word) marks a moment; a quoted word or two is not one, nor a
    # quote of what was said just before (a read-back: most of its words in the READOUT_BACK units before).
    readout = [0.0] * n
    for i, unit in enumerate(units if voiced else ()):
        for quote in _QUOTED.findall(unit.text):
            said = set(content_terms(quote))
            before = set().union(*sets[max(0, i - READOUT_BACK): i])
            if len(quote.split()) >= READOUT_WORDS and len(said - before) > len(said) / 2:
                readout[i] = 1.0
    told_p, onset_p = _percentiles(told), _percentiles(onset)
    event = [label[i] + ONSET_WEIGHT * onset_p[i] ** 4 + REACTION_WEIGHT * reaction[i] for i in range(n)]
    scores = []
    for i in range(n):
        near = max(event[max(0, i - MOMENT_WINDOW): i + MOMENT_WINDOW + 1])
        cue = (CUE_WEIGHT if sets[i] & CUES else 0.0) + SPECIFIC_WEIGHT * min(1.0, _specifics(units[i].text) / 2)
        cue += REFERENCE_WEIGHT * reference_p[i] ** 2 + READOUT_WEIGHT * readout[i] + ECHO_WEIGHT * echo[i]
        scores.append(told_p[i] - ROUTINE_WEIGHT * math.log(shapes[_shape(tokens[i])]) + near + cue)
    return scores


def _echoes(units: Sequence[Unit], tokens: Sequence[tuple[str, ...]]) -> list[float]:
    """1.0 for a unit that brings up a rare word pair (no number in it, in at most ECHO_MAX_UNITS
    units, not in the ECHO_WINDOW units before) that another speaker repeats within ECHO_WINDOW after."""
    n = len(units)
    pairs = [{p for p in zip(t, t[1:]) if not (p[0][0].isdigit() or p[1][0].isdigit())} for t in tokens]
    counts = Counter(p for ps in pairs for p in ps)
    out = [0.0] * n
    for i, unit in enumerate(units):
        new = {p for p in pairs[i] if counts[p] <= ECHO_MAX_UNITS}.difference(*pairs[max(0, i - ECHO_WINDOW): i])
        if new and any(units[j].speaker and units[j].speaker != unit.speaker and new & pairs[j]
                       for j in range(i + 1, min(n, i + ECHO_WINDOW + 1))):
            out[i] = 1.0
    return out


def centrality(units: Sequence[Unit]) -> list[float]:
    """The former extractive score, for comparison: TF-IDF cosine to the document's centroid plus
    a bonus for particulars (numbers, names). What is most typical wins: in a log, routine."""
    n = len(units)
    bags = [Counter(w for w in _words(u.text) if w not in STOPWORDS) for u in units]
    df = Counter(w for bag in bags for w in bag)
    idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
    vectors = []
    for bag in bags:
        vec = {w: (1 + math.log(c)) * idf[w] for w, c in bag.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        vectors.append({w: v / norm for w, v in vec.items()})
    centroid: Counter = Counter()
    for vec in vectors:
        centroid.update(vec)
    central = [sum(v * centroid[w] for w, v in vec.items()) for vec in vectors]
    top = max(central, default=0.0) or 1.0
    return [c / top + min(1.0, _specifics(unit.text) / 2) for unit, c in zip(units, central)]


SCORERS = {"salience": salience, "centrality": centrality}


@lru_cache(maxsize=16384)
def _vector(text: str) -> dict[str, float]:  # shared: never modified
    bag = Counter(content_terms(text))
    norm = math.sqrt(sum(v * v for v in bag.values())) or 1.0
    return {w: v / norm for w, v in bag.items()}


def pick(texts: Sequence[str], scores: Sequence[float], *, points: int,
         places: Sequence[tuple[str, int]] | None = None, redundancy: float = 0.7, gap: int = 0) -> list[int]:
    """Indexes of up to ``points`` texts, best score first, each pick penalized by its word
    similarity to those already picked (maximal marginal relevance). With ``places`` ((path,
    line) of each text) and ``gap``, texts within ``gap`` lines of a pick in the same file wait
    until nothing else is left (one moment, one point). Returned in document order."""
    vectors = [_vector(t) for t in texts]

    def similarity(a: int, b: int) -> float:
        small, big = sorted((vectors[a], vectors[b]), key=len)
        return sum(v * big.get(w, 0.0) for w, v in small.items())

    candidates = list(range(len(texts)))
    near: list[int] = []
    picked: list[int] = []
    while (candidates or near) and len(picked) < points:
        if not candidates:
            candidates, near = near, []
        best = max(candidates, key=lambda i: scores[i] - redundancy * max(
            (similarity(i, j) for j in picked), default=0.0))
        picked.append(best)
        candidates.remove(best)
        if places is not None and gap:
            path, line = places[best]
            close = [i for i in candidates if places[i][0] == path and abs(places[i][1] - line) <= gap]
            candidates = [i for i in candidates if i not in set(close)]
            near += close
    return sorted(picked)


Scorer = Callable[[Sequence[Unit]], list[float]]


@dataclass(frozen=True)
class Pick:
    text: str
    sources: tuple[int, ...]  # positions of the given sentences it stands for (repeats count once)


def salient_sentences(texts: Sequence[str], *, points: int, query: str = "", scores: Sequence[float] | None = None,
                      places: Sequence[tuple[str, int]] | None = None, gap: int = 0) -> list[Pick]:
    """The ``points`` best of ``texts`` by ``scores`` (their salience; None: scored here as one
    document by ``salience``), with a query plus the share of its words each states; picked
    greedily, each pick penalized by its similarity to those already picked and, with ``places``
    and ``gap``, kept apart from their lines (``pick``). Picks keep their original order; a
    sentence repeated word for word counts once and stands for every place it stands."""
    if not texts:
        return []
    if scores is None:
        scores = salience([Unit(t, "") for t in texts])
    query_words = content_words(query)
    same: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        same.setdefault(" ".join(text.lower().split()), []).append(i)
    firsts = [ids[0] for ids in same.values()]
    # A text shown for several units (the moment of a transcript they belong to) ranks by the best.
    ranked = [max(scores[j] for j in ids) + (len(query_words & content_words(texts[ids[0]])) / len(query_words)
                                            if query_words else 0.0) for ids in same.values()]
    chosen = pick([texts[i] for i in firsts], ranked, points=points, redundancy=REDUNDANCY_WEIGHT, gap=gap,
                  places=[places[i] for i in firsts] if places is not None else None)
    return [Pick(texts[firsts[k]], tuple(same[" ".join(texts[firsts[k]].lower().split())])) for k in chosen]
