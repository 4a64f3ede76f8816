from edgellama.chunking import approx_tokens
from edgellama.prompt import build_prompt

CHUNKS = [("Power", "alpha " * 40), ("Water", "bravo " * 40), ("Food", "charlie " * 40)]


def test_whole_chunks_within_the_budget_and_the_rest_reported():
    plan = build_prompt(question="Which?", chunks=CHUNKS, count_tokens=approx_tokens, context_budget=130,
                        n_ctx=4096, max_tokens=32)
    assert plan.context_tokens <= 130
    assert len(plan.included) == 2
    assert [d.index for d in plan.dropped] == [2]
    assert "over the 130-token context budget" in plan.dropped[0].reason
    assert plan.prompt.endswith("Question: Which?\nAnswer:")
    context = plan.prompt.rsplit("Context: ", 1)[1]
    assert context.index("bravo") < context.index("alpha"), "the best passage stands last, by the question"
    assert "charlie" not in context


def test_a_first_chunk_too_long_is_cut_and_said():
    plan = build_prompt(question="Which?", chunks=CHUNKS, count_tokens=approx_tokens, context_budget=30,
                        n_ctx=4096, max_tokens=32)
    assert plan.included == (0,)
    assert plan.context_tokens <= 30
    assert plan.dropped[0].reason.startswith("truncated")
    assert {d.index for d in plan.dropped} == {0, 1, 2}


def test_the_model_context_is_never_exceeded():
    plan = build_prompt(question="Which?", chunks=CHUNKS, count_tokens=approx_tokens, context_budget=1000,
                        n_ctx=200, max_tokens=64)
    assert plan.prompt_tokens + 64 <= 200
    assert any("model context of 200" in d.reason for d in plan.dropped)


def test_chat_style_has_system_and_user_messages():
    plan = build_prompt(question="Which?", chunks=CHUNKS[:1], count_tokens=approx_tokens, context_budget=1000,
                        n_ctx=4096, max_tokens=32, style="chat")
    assert [m["role"] for m in plan.messages] == ["system", "user"]
    assert "[1] (Power)" in plan.messages[1]["content"]
