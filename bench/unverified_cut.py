"""Stopping the model once its answer can no longer be verified (``answer.UNVERIFIED_TOKENS``, issue
22, stop 29), A/B in one process: a warm question with the cut against the same question without.

    PYTHONPATH=. python -m bench.unverified_cut [--n 100] [SET=QUESTIONS:DOCS]

Every question is asked once in each mode, the order alternating by question (bench/_ask_ab.py).
The baseline lets the model write up to ``max_tokens`` (48) whatever it writes. Prints p50 and mean
of a whole ``ask``, the mean number of answer tokens, their ratios, and how many answers differ.

Default set: xquad-dev (../shared/data/xquad-dev; $EDGELLAMA_DEV_DATA).
"""

from __future__ import annotations

import statistics

from ._ask_ab import differ, parser, run
from ._common import report


def main() -> None:
    args = parser("python -m bench.unverified_cut", __doc__).parse_args()

    from edgellama import answer

    cut = answer.UNVERIFIED_TOKENS

    def mode(tokens: int):
        def apply() -> None:
            answer.UNVERIFIED_TOKENS = tokens
        return apply

    asked = run(args, modes={"cut": mode(cut), "uncut": mode(10**6)}, restore=mode(cut),
                describe=f"cut after {cut} unverifiable tokens against no cut")
    ours, base = asked["cut"], asked["uncut"]
    p50 = {m: statistics.median(r.seconds for r in runs) for m, runs in asked.items()}
    report(f"warm ask p50, unverifiable answers cut at {cut} tokens", value=p50["cut"], unit="s",
           baseline_name="no cut", baseline=p50["uncut"], ratio=p50["cut"] / p50["uncut"], target="< 1.0x",
           met=p50["cut"] < p50["uncut"], reps=len(ours),
           note=f"{differ(ours, base)} of {len(ours)} answers differ (quality: docs/retrieval.md, 'Stop 29')")
    tokens = {m: statistics.mean(r.completion_tokens for r in runs) for m, runs in asked.items()}
    report("answer tokens mean, cut", value=tokens["cut"], unit="tokens", baseline_name="no cut",
           baseline=tokens["uncut"], ratio=tokens["cut"] / max(tokens["uncut"], 1e-9), target="(part of the above)",
           met=None, reps=len(ours))


if __name__ == "__main__":
    main()
