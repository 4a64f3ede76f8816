"""Score sentences for a summary: what is salient (central, specific, on the query), not redundant.
Pure and model-free (TF-IDF over the given sentences); knows nothing of documents, caches or models.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from .text import STOPWORDS, content_words

__all__ = ["salient_sentences"]

SPECIFIC_WEIGHT = 1.0  # weight of the particulars a sentence states, against its centrality (0..1)
REDUNDANCY_WEIGHT = 0.7  # penalty for similarity to a sentence already picked

_WORD = re.compile(r"\w(?:[\w,.:/-]*\w)?")


@dataclass(frozen=True)
class Pick:
    text: str
    sources: tuple[int, ...]  # positions of the given sentences it stands for (repeats count once)


def _specifics(text: str) -> int:
    """Words that state a particular: numbers, codes (T-7), names (capitalized inside a sentence)."""
    words = _WORD.findall(text)
    return sum(1 for k, w in enumerate(words) if any(ch.isdigit() for ch in w) or (k and w[0].isupper()))


def salient_sentences(texts: Sequence[str], *, points: int, query: str = "") -> list[Pick]:
    """Central, specific, not redundant: each sentence is scored by its TF-IDF cosine to the
    centroid of all of them (what the text is about) plus a bonus for the particulars it states
    (numbers, codes, names: what a reader needs kept), with a query the share of its words; then
    picked greedily, each pick penalized by its similarity to those already picked (maximal marginal
    relevance). Picks keep their original order; a sentence repeated word for word counts once
    and stands for every place it stands."""
    if not texts:
        return []
    bags = [Counter(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS) for text in texts]
    df = Counter(w for bag in bags for w in bag)
    n = len(bags)
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
    top = max(central) or 1.0
    query_words = content_words(query)
    scores = []
    for i, text in enumerate(texts):
        score = central[i] / top + SPECIFIC_WEIGHT * min(1.0, _specifics(text) / 2)
        if query_words:
            score += len(query_words & content_words(text)) / len(query_words)
        scores.append(score)

    def similarity(a: int, b: int) -> float:
        small, big = sorted((vectors[a], vectors[b]), key=len)
        return sum(v * big.get(w, 0.0) for w, v in small.items())

    same: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        same.setdefault(" ".join(text.lower().split()), []).append(i)
    candidates = [ids[0] for ids in same.values()]
    picked: list[int] = []
    while candidates and len(picked) < points:
        best = max(candidates, key=lambda i: scores[i] - REDUNDANCY_WEIGHT * max(
            (similarity(i, j) for j in picked), default=0.0))
        picked.append(best)
        candidates.remove(best)
    return [Pick(texts[i], tuple(same[" ".join(texts[i].lower().split())])) for i in sorted(picked)]
