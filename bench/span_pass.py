"""How many spans the model's log-probability is asked for (``answer.SPAN_RESCORE``, issue 22, stop 28),
A/B in one process: a warm question with the current count against the same question with another.

    PYTHONPATH=. python -m bench.span_pass [--n 100] [--baseline 8] [--baseline-confidence 0.18] [SET=QUESTIONS:DOCS]

Every question is asked once in each mode, the order alternating by question (bench/_ask_ab.py).
The baseline runs with ``--baseline`` spans and ``MIN_SPAN_CONFIDENCE`` ``--baseline-confidence``
(the pair before stop 28). Prints p50 and mean of a whole ``ask``, the span pass's own seconds
(``answer_logprobs``), their ratios, and how many answers differ.

Default set: xquad-dev (../shared/data/xquad-dev; $EDGELLAMA_DEV_DATA).
"""

from __future__ import annotations

import statistics

from ._ask_ab import differ, parser, run
from ._common import report


def main() -> None:
    args_parser = parser("python -m bench.span_pass", __doc__)
    args_parser.add_argument("--baseline", type=int, default=8)
    args_parser.add_argument("--baseline-confidence", type=float, default=0.18)
    args = args_parser.parse_args()

    from edgellama import answer

    rescore, confidence = answer.score_spans.__kwdefaults__["rescore"], answer.decide.__kwdefaults__["min_span_confidence"]
    pairs = {"current": (answer.SPAN_RESCORE, answer.MIN_SPAN_CONFIDENCE),
             "baseline": (args.baseline, args.baseline_confidence)}

    def mode(spans: int, threshold: float):
        def apply() -> None:
            answer.score_spans.__kwdefaults__["rescore"] = spans
            answer.decide.__kwdefaults__["min_span_confidence"] = threshold
        return apply

    asked = run(args, modes={name: mode(*pair) for name, pair in pairs.items()}, restore=mode(rescore, confidence),
                describe=str(pairs))
    ours, base = asked["current"], asked["baseline"]
    p50 = {m: statistics.median(r.seconds for r in runs) for m, runs in asked.items()}
    report(f"warm ask p50, {pairs['current'][0]} spans rescored", value=p50["current"], unit="s",
           baseline_name=f"{pairs['baseline'][0]} spans", baseline=p50["baseline"],
           ratio=p50["current"] / p50["baseline"], target="< 1.0x", met=p50["current"] < p50["baseline"],
           reps=len(ours), note=f"{differ(ours, base)} of {len(ours)} answers differ (quality: docs/retrieval.md, 'Stop 28')")
    mean_span = {m: statistics.mean(r.span_seconds for r in runs) for m, runs in asked.items()}
    report(f"span pass mean, {pairs['current'][0]} spans", value=mean_span["current"], unit="s",
           baseline_name=f"{pairs['baseline'][0]} spans", baseline=mean_span["baseline"],
           ratio=mean_span["current"] / max(mean_span["baseline"], 1e-9), target="(part of the above)", met=None,
           reps=len(ours))


if __name__ == "__main__":
    main()
