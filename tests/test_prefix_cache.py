"""The KV cache of the fixed prompt prefix: evaluated once, kept next to the model, restored by the
next process; answers are the same with it as without it."""

import pytest

from edgellama.generate import LlamaGenerator
from edgellama.prompt import COMPLETION_PREFIX, STOP, build_prompt

pytestmark = pytest.mark.models


def _prompt(count_tokens) -> str:
    plan = build_prompt(question="How much does the treated water tank hold?",
                        chunks=[("Water", "The treated water tank holds 4,500 litres. It is cleaned in May.")],
                        count_tokens=count_tokens, context_budget=500, n_ctx=4096, max_tokens=16)
    assert plan.prompt.startswith(COMPLETION_PREFIX)
    return plan.prompt


def test_prefix_state_is_saved_then_restored_and_answers_do_not_change(generator, tmp_path):
    cold = LlamaGenerator(generator.model_path, threads=generator.threads)
    prompt = _prompt(cold.count_tokens)
    plain = "".join(cold.stream(prompt, max_tokens=12, stop=STOP))
    cold.close()

    first = LlamaGenerator(generator.model_path, threads=generator.threads)
    made = first.warm_prefix(COMPLETION_PREFIX, cache_dir=tmp_path)
    assert made.source == "eval" and made.path.exists() and made.tokens > 50
    assert "".join(first.stream(prompt, max_tokens=12, stop=STOP)) == plain
    first.close()

    second = LlamaGenerator(generator.model_path, threads=generator.threads)
    restored = second.warm_prefix(COMPLETION_PREFIX, cache_dir=tmp_path)
    assert restored.source == "file" and restored.path == made.path
    assert "".join(second.stream(prompt, max_tokens=12, stop=STOP)) == plain
    second.close()


def test_a_damaged_prefix_file_is_evaluated_again_and_replaced(generator, tmp_path):
    gen = LlamaGenerator(generator.model_path, threads=generator.threads)
    path = gen.warm_prefix(COMPLETION_PREFIX, cache_dir=tmp_path).path
    path.write_bytes(b"not a llama state")
    again = gen.warm_prefix(COMPLETION_PREFIX, cache_dir=tmp_path)
    assert again.source == "eval" and path.stat().st_size > 1000
    assert "4,500" in "".join(gen.stream(_prompt(gen.count_tokens), max_tokens=12, stop=STOP))
    gen.close()
