"""Pure: question + retrieved chunks -> a prompt within an exact token budget, counted by the
model's own tokenizer (passed in); what does not fit is reported, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .text import truncate_to_tokens

__all__ = ["DroppedChunk", "build_prompt", "STOP", "COMPLETION_PREFIX"]

# A few-shot completion prompt ("Context: / Question: / Answer:", stop at the newline): on a 135M
# model it beats the chat template by far (token F1 0.31 vs 0.13 on a SQuAD-style set), and on our
# corpus QA set two examples beat one (0.33 vs 0.31) and an example about water tanks was copied
# into answers about water. The fixed prefix comes first so its KV cache can be reused.
INSTRUCTION = "Answer the question with a short phrase copied from the context."
EXAMPLES = (
    "Context: The loading dock door is opened with key K-17. Deliveries arrive on Thursdays.\n"
    "Question: Which key opens the loading dock door?\n"
    "Answer: key K-17\n\n"
    "Context: Night watch starts at 22:00 and the watch officer checks the boiler pressure every 2 hours.\n"
    "Question: How often is the boiler pressure checked?\n"
    "Answer: every 2 hours\n\n"
)
STOP = ("\n", "Question:", "Context:")
# The fixed start of every completion prompt (see _render): the daemon keeps its KV cache warm.
COMPLETION_PREFIX = f"{INSTRUCTION}\n\n{EXAMPLES}Context:"
CHAT_SYSTEM = (
    "You answer questions using only the numbered sources. Answer in one short sentence. "
    "If the sources do not contain the answer, reply exactly: The documents do not say."
)


@dataclass(frozen=True)
class DroppedChunk:
    index: int  # position in the retrieved list
    reason: str


@dataclass(frozen=True)
class PromptPlan:
    style: str
    prompt: str  # the completion prompt (style "completion") or the user message (style "chat")
    messages: tuple[dict, ...]  # chat style only
    included: tuple[int, ...]  # positions in the retrieved list, in prompt order; [n] is included[n-1]
    dropped: tuple[DroppedChunk, ...]
    context_tokens: int
    prompt_tokens: int


def _source_block(number: int, heading: str, text: str, style: str) -> str:
    if style == "completion":
        return " ".join(text.split()) + " "
    label = f"[{number}] ({heading}) " if heading else f"[{number}] "
    return label + " ".join(text.split()) + "\n"


def build_prompt(
    *,
    question: str,
    chunks: Sequence[tuple[str, str]],
    count_tokens: Callable[[str], int],
    context_budget: int,
    n_ctx: int,
    max_tokens: int,
    style: str = "completion",
) -> PromptPlan:
    """``chunks`` are (heading, text) passages in rank order. Whole passages go in while they fit
    the budget; the first one is cut to fit if it alone is too long; the rest are reported in
    ``dropped``. In the completion prompt the best passage stands last, next to the question
    (F1 0.41 against 0.26 with the best first, 4 passages, on our QA set)."""
    question = " ".join(question.split())
    blocks: list[str] = []
    included: list[int] = []
    dropped: list[DroppedChunk] = []
    used = 0
    for index, (heading, text) in enumerate(chunks):
        block = _source_block(len(blocks) + 1, heading, text, style)
        cost = count_tokens(block)
        if used + cost <= context_budget:
            blocks.append(block)
            included.append(index)
            used += cost
        elif not blocks:
            head = _source_block(1, heading, "", style)
            cut = truncate_to_tokens(text, context_budget - count_tokens(head), count_tokens)
            if cut:
                block = _source_block(1, heading, cut, style)
                blocks.append(block)
                included.append(index)
                used += count_tokens(block)
                dropped.append(DroppedChunk(index, f"truncated to fit the {context_budget}-token context budget"))
            else:
                dropped.append(DroppedChunk(index, f"over the {context_budget}-token context budget"))
        else:
            dropped.append(DroppedChunk(index, f"over the {context_budget}-token context budget"))

    while True:
        plan = _render(question, blocks, style)
        total = count_tokens(plan[0] if style == "completion" else CHAT_SYSTEM + plan[0]) + (
            0 if style == "completion" else 16  # the chat template's own markers
        )
        if total + max_tokens <= n_ctx or not blocks:
            break
        blocks.pop()
        dropped.append(DroppedChunk(included.pop(), f"over the model context of {n_ctx} tokens"))
    text, messages = plan
    return PromptPlan(
        style=style, prompt=text, messages=messages, included=tuple(included),
        dropped=tuple(sorted(dropped, key=lambda d: d.index)), context_tokens=used, prompt_tokens=total,
    )


def _render(question: str, blocks: list[str], style: str) -> tuple[str, tuple[dict, ...]]:
    if style == "completion":
        context = "".join(reversed(blocks)).strip()
        return f"{INSTRUCTION}\n\n{EXAMPLES}Context: {context}\nQuestion: {question}\nAnswer:", ()
    context = "".join(blocks)
    user = f"Sources:\n{context}\nQuestion: {question}"
    return user, ({"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": user})
