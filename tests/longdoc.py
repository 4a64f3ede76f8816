"""A generated long handbook (about 60k SmolLM2 tokens at the default size) with one known fact
placed in each section, for the summarization tests and bench/summarize.py.

Deterministic: the same arguments always give the same text. Filler sentences are built from
templates and never contain a digit or a fact's keyword, so a keyword in a summary can only come
from the sentence that states the fact.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass

__all__ = ["Fact", "LongDocument", "make_document", "FACTS"]


@dataclass(frozen=True)
class Fact:
    section: str  # the section heading the fact stands under
    sentence: str
    keyword: str  # what a summary must contain to count as keeping the fact


@dataclass(frozen=True)
class LongDocument:
    text: str
    facts: tuple[Fact, ...]
    sections: tuple[str, ...]


# (heading, the fact, its keyword, what the section is about: nouns its filler talks of)
FACTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Water Treatment", "The ultraviolet lamp of the water treatment unit must be replaced after 9,000 hours of use.",
     "9,000", ("sand filter", "intake pipe", "storage tank", "pressure gauge", "chlorine doser", "water meter")),
    ("Power Distribution", "The main battery bank of the station stores 340 kWh of energy.",
     "340 kWh", ("battery bank", "inverter", "solar array", "breaker panel", "charge controller", "cable run")),
    ("Heating", "The heating boilers burn pellets from the northern silo, which holds 62 tonnes.",
     "62 tonnes", ("boiler", "pellet auger", "radiator loop", "flue", "thermostat", "heat exchanger")),
    ("Radio Schedule", "The station calls the coast relay on 8.291 MHz every morning at 07:30.",
     "8.291", ("radio log", "antenna mast", "handheld set", "base station", "call sign list", "relay")),
    ("Medical Care", "The medical officer for the season is Dr. Ingrid Halvorsen.",
     "Halvorsen", ("first aid kit", "stretcher", "medicine cabinet", "oxygen bottle", "sick bay", "defibrillator")),
    ("Food Storage", "The freezer store keeps food for 14 months at minus 24 degrees.",
     "14 months", ("freezer store", "dry pantry", "ration list", "root cellar", "flour bin", "galley")),
    ("Vehicles", "The snow vehicles are fuelled only from tank T-7 behind the garage.",
     "T-7", ("snowmobile", "tracked tractor", "sledge", "garage", "spare track", "tow rope")),
    ("Fire Safety", "The fire assembly point is the flagpole at the north gate.",
     "flagpole", ("fire door", "extinguisher", "smoke detector", "hose reel", "alarm panel", "fire blanket")),
    ("Waste Handling", "All sorted waste leaves the station on the supply ship Polar Wren.",
     "Polar Wren", ("waste bin", "compactor", "sorting table", "burn barrel", "oil drum", "scrap pile")),
    ("Weather Observations", "The weather mast stands on Skua Point, forty metres above the sea.",
     "Skua Point", ("anemometer", "rain gauge", "barometer", "snow stake", "sensor cable", "data logger")),
    ("Satellite Link", "The satellite link allows 2 GB of data per day for the whole station.",
     "2 GB", ("satellite dish", "modem", "router", "network switch", "usage log", "backup link")),
    ("Emergency Shelter", "The emergency shelter at Gull Hut holds food and fuel for 12 people for 30 days.",
     "Gull Hut", ("shelter door", "emergency stove", "sleeping bag", "signal flare", "marker pole", "spare radio")),
)

SUBSECTIONS = ("Daily checks", "Maintenance", "Records", "Faults and repairs")
WHO = ("The duty engineer", "Each crew member", "The station leader", "The night watch", "A trained volunteer",
       "The deputy leader", "Whoever is on kitchen duty", "The outgoing shift", "The incoming shift",
       "The logistics officer")
DOES = ("checks", "inspects", "cleans", "looks over", "tests", "records the state of", "reports any fault in",
        "writes a short note about", "walks past and glances at", "compares the manual with")
WHEN = ("before the weekly meeting", "after each storm", "at the start of every shift", "when the wind drops",
        "once the morning briefing is over", "before the supply flight", "whenever the alarm panel chirps",
        "during the quiet evening hours", "at the end of each month", "after any power cut")
WHY = ("so that small problems are found early", "because winter leaves little room for mistakes",
       "as the season plan asks", "so that the next shift knows what happened",
       "because spare parts take weeks to arrive", "so that nobody has to guess later",
       "as agreed with the station leader", "since the manufacturer recommends it")
ADJ = ("clean", "dry", "labelled", "free of ice", "easy to reach", "in good order", "well lit", "tidy")


def _filler(rng: random.Random, nouns: tuple[str, ...], topic: str) -> str:
    noun = rng.choice(nouns)
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.choice(WHO)} {rng.choice(DOES)} the {noun} {rng.choice(WHEN)}."
    if kind == 1:
        return f"The {noun} must be kept {rng.choice(ADJ)} {rng.choice(WHY)}."
    if kind == 2:
        return (f"{rng.choice(WHO)} {rng.choice(DOES)} the {noun} and the {rng.choice(nouns)} "
                f"{rng.choice(WHEN)}, {rng.choice(WHY)}.")
    return f"Good {topic.lower()} practice means the {noun} stays {rng.choice(ADJ)} {rng.choice(WHEN)}."


def make_document(*, sentences_per_section: int = 240, seed: int = 7, edited_section: int | None = None,
                  sections: int = len(FACTS)) -> LongDocument:
    """The handbook. ``edited_section``: that section (0-based) gets one sentence more, the rest is
    unchanged byte for byte (the case a re-summary must handle by recomputing one branch)."""
    facts = FACTS[:sections]
    lines = ["# Kestrel Ridge Field Station: Operations Handbook", "",
             "This handbook describes how the station is run through the long season.", ""]
    placed: list[Fact] = []
    for number, (heading, fact, keyword, nouns) in enumerate(facts):
        rng = random.Random(seed * 1000 + number)  # each section on its own stream: edits stay local
        lines += [f"## {heading}", ""]
        per_sub = sentences_per_section // len(SUBSECTIONS)
        fact_at = (rng.randrange(len(SUBSECTIONS)), rng.randrange(per_sub // 4, per_sub * 3 // 4))
        for s, sub in enumerate(SUBSECTIONS):
            lines += [f"### {sub}", ""]
            sentences = [_filler(rng, nouns, heading) for _ in range(per_sub)]
            if s == fact_at[0]:
                sentences.insert(fact_at[1], fact)
            if edited_section == number and s == len(SUBSECTIONS) - 1:
                sentences.append(f"This part of the {heading.lower()} section was revised after the last inspection.")
            for p in range(0, len(sentences), 6):
                lines += textwrap.wrap(" ".join(sentences[p:p + 6]), width=100) + [""]
        placed.append(Fact(heading, fact, keyword))
    return LongDocument("\n".join(lines), tuple(placed), tuple(h for h, *_ in facts))
