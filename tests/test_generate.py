"""Generation with tools on the tiny model, a toolken forced by a very large bias."""

import time

import pytest
import torch

from toolken.generate import Event, Generation, GenerationError, generate
from toolken.model import ToolkenModel
from toolken.registry import ToolRegistry
from toolken.tools import ToolError, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def boom(a: int) -> int:
    """Always raises."""
    raise RuntimeError("kaboom")


@tool
def sleepy(a: int) -> int:
    """Sleeps far too long."""
    time.sleep(30)
    return a


def model_with(base, *tools):
    torch.manual_seed(0)
    m = ToolkenModel(base, [])
    m.add_tools([t.name for t in tools])
    return m.attach_tools(ToolRegistry(list(tools)))


def test_forced_call_trace_and_text(tiny_base):
    m = model_with(tiny_base, add)
    g = m.generate("Q: 2 and 3? A: ", max_new_tokens=6, toolken_bias=1e4, max_tool_calls=1)
    assert len(g.calls) == 1
    c = g.calls[0]
    assert c.error is None and c.tool == "add"
    assert isinstance(c.arguments, list) and len(c.arguments) == 2
    assert all(isinstance(x, int) for x in c.arguments)
    assert c.argument_text.endswith(")")
    assert c.result == str(sum(c.arguments))
    assert g.text[c.start:c.end] == c.result
    assert g.decoded_tokens > 0 and g.prefilled_tokens > len("Q: 2 and 3? A: ")


def test_logits_after_tool_call_equal_fresh_forward(tiny_base):
    m = model_with(tiny_base, add)
    g = m.generate("Q: 7 plus 8? A:", max_new_tokens=5, toolken_bias=1e4, max_tool_calls=2)
    assert any(c.result for c in g.calls)
    fresh, _ = m(torch.tensor([g.token_ids]))
    torch.testing.assert_close(g.next_logits, fresh[0, -1], rtol=1e-4, atol=1e-4)


def test_failing_and_hanging_tools_never_crash_generation(tiny_base):
    m = model_with(tiny_base, boom, sleepy)
    t0 = time.perf_counter()
    g = m.generate("Q: x? A:", max_new_tokens=4, toolken_bias=1e4, max_tool_calls=4, tool_timeout=0.3)
    assert time.perf_counter() - t0 < 20
    assert len(g.calls) == 4
    for c in g.calls:
        assert c.result is None and c.error, c
        assert ("kaboom" in c.error) if c.tool == "boom" else ("time" in c.error.lower()), c.error
    assert g.decoded_tokens >= 4  # fallback tokens were chosen


def test_max_tool_calls_and_no_bias(tiny_base):
    m = model_with(tiny_base, add)
    g = m.generate("Q: 1 and 1? A:", max_new_tokens=5, toolken_bias=1e4, max_tool_calls=0)
    assert g.calls == []
    g = m.generate("Q: 1 and 1? A:", max_new_tokens=5, toolken_bias=-1e4)
    assert g.calls == []


def test_streaming_events(tiny_base):
    m = model_with(tiny_base, add)
    items = list(m.stream("Q: 4 and 4? A:", max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1))
    kinds = [i.kind for i in items if isinstance(i, Event)]
    assert kinds[:2] == ["tool_call", "tool_result"]
    assert isinstance(items[-1], Generation)
    assert "".join(i.text for i in items if isinstance(i, Event)) == items[-1].text


def test_bad_input_errors(tiny_base):
    m = model_with(tiny_base, add)
    with pytest.raises(GenerationError, match="empty"):
        m.generate("   ")
    with pytest.raises(GenerationError, match="context"):
        m.generate("x" * 9000, max_new_tokens=4)
    bare = ToolkenModel(tiny_base, [])
    bare.add_tools(["add"])
    with pytest.raises(GenerationError, match="no tools attached"):
        generate(bare, "Q: hi")
    with pytest.raises(ToolError, match="boom"):
        bare.attach_tools(ToolRegistry([boom]))


def test_sampling_is_seeded(tiny_base):
    m = model_with(tiny_base, add)
    a = m.generate("Q: hi A:", max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9, seed=3)
    b = m.generate("Q: hi A:", max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9, seed=3)
    assert a.text == b.text


def test_batched_generation_equals_one_by_one(tiny_base):
    from toolken.batch import generate_batch

    m = model_with(tiny_base, add)
    prompts = ["Q: 2 and 3? A:", "Q: what is 10 plus 20? A: ", "Q: x"]
    for bias in (1e4, 0.0):
        kw = dict(max_new_tokens=7, toolken_bias=bias, max_tool_calls=2, stop=["Q"])
        batch = generate_batch(m, prompts, batch_size=3, **kw)
        single = [m.generate(p, **kw) for p in prompts]
        for b, s in zip(batch, single):
            assert b.text == s.text and b.token_ids == s.token_ids
            assert [(c.tool, c.arguments, c.result, c.start, c.end) for c in b.calls] == \
                   [(c.tool, c.arguments, c.result, c.start, c.end) for c in s.calls]
            assert b.stop_reason == s.stop_reason


def test_reencoding_gives_the_same_text(tiny_base):
    m = model_with(tiny_base, add)
    kw = dict(max_new_tokens=8, toolken_bias=1e4, max_tool_calls=2)
    ours = m.generate("Q: 5 and 6? A:", **kw)
    paper = m.generate("Q: 5 and 6? A:", reencode=True, **kw)
    assert ours.text == paper.text and len(ours.calls) == 2
    assert paper.prefilled_tokens > ours.prefilled_tokens
