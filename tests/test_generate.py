"""Generation with tools on the tiny model, a toolken forced by a very large bias."""

import sys
import time
from pathlib import Path

import pytest
import torch

from toolken.generation.decode import Event, Generation, GenerationError, generate
from toolken.model import ToolkenModel
from toolken.tools.registry import ToolRegistry
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
    from toolken.generation.decode import generate_batch

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
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from paper_loop import paper_generate

    m = model_with(tiny_base, add)
    kw = dict(max_new_tokens=8, toolken_bias=1e4, max_tool_calls=2)
    ours = m.generate("Q: 5 and 6? A:", **kw)
    paper = paper_generate(m, "Q: 5 and 6? A:", "Q: 5 and 6? A:", m.generation_config.replace(**kw))
    assert ours.text == paper.text and len(ours.calls) == 2
    assert paper.prefilled_tokens > ours.prefilled_tokens


def test_prompt_prefix_reuse_is_exact(tiny_base):
    m = model_with(tiny_base, add)
    template = "Answer with tools. Q: 1 and 2? A: 3.\nQ: "
    kw = dict(max_new_tokens=6, toolken_bias=1e4, max_tool_calls=1)
    m.prefix_store.clear()
    first = m.generate(template + "4 and 4? A:", **kw)
    second = m.generate(template + "5 and 9? A:", **kw)
    cold = m.generate(template + "5 and 9? A:", reuse_prompt=False, **kw)
    assert second.text == cold.text and second.token_ids == cold.token_ids
    assert second.prefilled_tokens <= cold.prefilled_tokens - len(template) + 1
    assert first.calls and m.prefix_store.hits == 1
    fresh, _ = m(torch.tensor([second.token_ids]))
    torch.testing.assert_close(second.next_logits, fresh[0, -1], rtol=1e-4, atol=1e-4)


def test_batch_shares_its_prompt_prefix(tiny_base):
    from toolken.generation.decode import generate_batch

    m = model_with(tiny_base, add)
    template = "Use the add tool when asked.\nQ: "
    prompts = [template + q for q in ("2 and 3? A:", "what is 10 plus 20? A: ", "x")]
    kw = dict(max_new_tokens=7, toolken_bias=1e4, max_tool_calls=2, stop=["Q"])
    m.prefix_store.clear()
    batch = generate_batch(m, prompts, batch_size=3, **kw)
    single = [m.generate(p, reuse_prompt=False, **kw) for p in prompts]
    for b, s in zip(batch, single):
        assert b.text == s.text and b.token_ids == s.token_ids
    shared = len(m.tokenizer(template, add_special_tokens=True)["input_ids"])  # no BOS here
    assert sum(b.prefilled_tokens for b in batch) == \
        sum(s.prefilled_tokens for s in single) - 2 * shared  # the prefix is encoded once


def test_prefix_store_bounds_and_partial_reuse(tiny_base):
    from toolken.generation.prefix import PrefixStore

    m = model_with(tiny_base, add)
    store = PrefixStore(max_tokens=30, min_reuse=4)
    ids = list(range(5, 25))
    cache, n = store.start(m, ids)
    assert n == 0
    m.decode(torch.tensor([ids]), cache)
    store.remember(m, ids, cache)
    c2, n = store.start(m, ids[:12] + [99, 98])
    assert n == 12 and c2.get_seq_length() == 12
    _, n = store.start(m, ids)  # never the whole prompt: its last token must be fed
    assert n == len(ids) - 1
    store.remember(m, ids + [1, 2], cache)  # extends the first: replaces it
    assert list(map(len, store.entries)) == [22]
    store.remember(m, list(range(100, 115)), cache)  # 22 + 15 > 30 tokens: the oldest goes
    assert list(map(len, store.entries)) == [15]


def test_lookup_draft():
    from toolken.generation.steps import lookup_draft

    ids = [1, 2, 3, 4, 5, 9, 2, 3, 4, 7, 2, 3]
    assert lookup_draft(ids, 2) == [4, 7]  # the latest earlier "2 3", longest n-gram first
    assert lookup_draft(ids + [4], 3) == [7, 2, 3]  # "2 3 4" -> what followed it last time
    assert lookup_draft([1, 2, 3], 4) == []  # no repeat: no draft
    assert lookup_draft([5, 5, 5], 2) == [5]


@pytest.mark.parametrize("bias", [0.0, 1e4])
def test_prompt_lookup_keeps_greedy_text(tiny_base, bias):
    m = model_with(tiny_base, add)
    prompt = "Q: 2 and 3 and 2 and 3 and 2 and 3? A: 2 and 3 and 2 and"
    kw = dict(max_new_tokens=24, toolken_bias=bias, max_tool_calls=2, ignore_eos=True)
    plain = m.generate(prompt, **kw)
    fast = m.generate(prompt, prompt_lookup=3, **kw)
    assert fast.text == plain.text and fast.token_ids == plain.token_ids
    assert [(c.tool, c.arguments, c.result) for c in fast.calls] == \
           [(c.tool, c.arguments, c.result) for c in plain.calls]
    assert 0 < fast.accepted_drafts < fast.drafted_tokens and plain.drafted_tokens == 0  # both paths
    fresh, _ = m(torch.tensor([fast.token_ids]))
    torch.testing.assert_close(fast.next_logits, fresh[0, -1], rtol=1e-4, atol=1e-4)


def test_streamed_text_never_includes_a_stop_string(tiny_base):
    from toolken.generation.steps import held as _held

    assert _held("ab\n", ["\n\n"]) == 1 and _held("ab", ["\n\n"]) == 0 and _held("xQ", ["\nQ:", "Q:"]) == 1
    m = model_with(tiny_base, add)
    kw = dict(max_new_tokens=12, toolken_bias=-1e4, ignore_eos=True)
    full = m.generate("Q: hi A:", **kw).text
    stop = full[5:7]
    assert stop[0] not in full[:5], "pick another prompt: the stop string must start at 5"
    items = list(m.stream("Q: hi A:", stop=[stop], **kw))
    final = items[-1]
    assert final.text == full[:5] and final.stop_reason == "stop"
    assert "".join(i.text for i in items[:-1]) == final.text


@tool
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


def test_arg_strings_context_copies_a_quoted_span(tiny_base):
    """arg_strings="context": a random model forced into tool mode can only write one of the
    question's quoted spans as the string argument (any string otherwise)."""
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [])
    m.add_tools(["shout"])
    m.attach_tools(ToolRegistry([shout]))
    prompt = 'Q: Shout "hello there" or "bye"? A:'
    g = generate(m, prompt, toolken_bias=1e4, max_tool_calls=1, max_new_tokens=3,
                 arg_strings="context", max_arg_tokens=24)
    c = g.calls[0]
    assert c.arguments[0] in ("hello there", "bye") and c.result == c.arguments[0].upper()
    g = generate(m, prompt, toolken_bias=1e4, max_tool_calls=1, max_new_tokens=3, max_arg_tokens=24)
    assert g.calls and g.calls[0].tool == "shout"


@tool(demos=["Q: 2 and 3?\nA: <add_demo>(2, 3)=5"])
def add_demo(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_arg_names_writes_each_argument_after_its_name(tiny_base):
    """arg_names: tool mode writes ``a=.., b=..`` (the grammar forces the names), shows its
    demos the same way, and runs the tool on the values; a model keeps one tool mode per set
    of tool-mode options (arg_strings and arg_names included)."""
    m = model_with(tiny_base, add_demo)
    kw = dict(max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1)
    g = m.generate("Q: 7 plus 8? A:", arg_names=True, **kw)
    c = g.calls[0]
    assert c.argument_text.startswith("a=") and ", b=" in c.argument_text, c.argument_text
    assert c.result == str(sum(c.arguments))
    cfg = m.generation_config.replace(arg_names=True)
    head, _ = m.tool_mode(m.registry, cfg).split_prompt(m.registry["add_demo"], "7 plus 8?")
    assert head.endswith("A: <add_demo>(a=2, b=3)=5\n\nQ: ")
    plain = m.generate("Q: 7 plus 8? A:", **kw).calls[0]
    assert "=" not in plain.argument_text
    assert m.tool_mode(m.registry, cfg) is not m.tool_mode(m.registry, cfg.replace(arg_strings="context"))


def test_tool_choice_required_calls_where_a_toolken_came_closest(tiny_base, monkeypatch):
    """tool_choice required: an answer without a call is decoded again from the step where the
    best toolken's logit + bias - the best token's was highest (found here by a plain forward
    over the first answer), with that toolken chosen there; tool mode reads the kept answer."""
    from toolken.generation.decode import generate_batch
    from toolken.generation.tool_mode import ToolMode

    seen = []  # the answer so far, as tool mode is given it at each call
    call = ToolMode.call
    monkeypatch.setattr(ToolMode, "call", lambda self, tool, q, answer, *a, **k:
                        seen.append(answer) or call(self, tool, q, answer, *a, **k))

    m = model_with(tiny_base, add, add_demo)
    V, bias = m.vocab_size, -30.0
    kw = dict(max_new_tokens=6, toolken_bias=bias, max_tool_calls=2)
    for prompt in ("Q: 2 and 3? A:", "Q: what is 10 plus 20? A: "):
        auto = m.generate(prompt, **kw)
        assert auto.calls == []
        P = len(m.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        out = auto.token_ids[P:]
        z, _ = m(torch.tensor([auto.token_ids]))
        z = z[0, P - 1:P - 1 + len(out)]  # the logits each answer token was chosen from
        gaps = (z[:, V:] + bias).max(-1).values - z[:, :V].max(-1).values
        t = int(gaps.argmax())
        want = m.tools[int(z[t, V:].argmax())]
        seen.clear()
        g = m.generate(prompt, tool_choice="required", **kw)
        assert g.calls and g.calls[0].tool == want
        assert g.token_ids[:P + t] == auto.token_ids[:P + t]
        prefix = m.tokenizer.decode(out[:t], skip_special_tokens=True)
        assert seen[0] == prefix  # the kept text, not an empty one
        assert g.text.startswith(prefix)
        assert g.calls[0].start is None or g.calls[0].start >= len(prefix)
        items = list(m.stream(prompt, tool_choice="required", **kw))  # held until the call
        events = [i for i in items if isinstance(i, Event)]
        kinds = [e.kind for e in events]
        assert "tool_call" in kinds and set(kinds[:kinds.index("tool_call")]) <= {"text"}
        assert "".join(e.text for e in events) == items[-1].text
        assert all(e.text.strip() == e.call.result for e in events if e.kind == "tool_result")
        assert items[-1].text == g.text
        batch = generate_batch(m, [prompt, "Q: x"], tool_choice="required", batch_size=2, **kw)
        assert batch[0].text == g.text and batch[0].token_ids == g.token_ids
    # a call made anyway, or no toolken allowed: the same as auto
    for extra in (dict(toolken_bias=1e4), dict(max_tool_calls=0)):
        a = m.generate("Q: 2 and 3? A:", **{**kw, **extra})
        r = m.generate("Q: 2 and 3? A:", tool_choice="required", **{**kw, **extra})
        assert (r.text, r.token_ids) == (a.text, a.token_ids)
    with pytest.raises(ValueError, match="tool_choice='always' is not one of"):
        m.generate("Q: hi", tool_choice="always")


def test_unused_number_rewinds_go_back_to_the_sentence_start(tiny_base):
    """unused_number_rewinds: an answer that ends having written the answer marker while a
    number of the question is unused goes back to the start of the marker's sentence, not before
    the last call's result (computed here from the text by a plain scan), and goes on with the
    best other token there (a plain forward with that token masked); the text before is kept
    token for token and nothing streamed is taken back."""
    from toolken.generation.decode import generate_batch, question_numbers, unused_numbers

    m = model_with(tiny_base, add)
    prompt, question = "Q: 2 and 3? A:", "How much is 987654 and 3?"
    kw = dict(max_new_tokens=14, toolken_bias=1e4, max_tool_calls=1)  # a call first, then text
    auto = m.generate(prompt, question=question, **kw)
    assert auto.calls and auto.calls[0].end
    P = len(m.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    out = auto.token_ids[P:]
    text = lambda ids: m.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    late = auto.text[auto.calls[0].end:]
    marker = late[len(late) // 2:][:2]  # written after the call
    at = auto.text.lower().rfind(marker.lower())
    start = auto.calls[0].end
    for i, ch in enumerate(auto.text[:at]):  # after the last sentence end before the marker
        if ch == "\n" or (ch in ".!?:" and auto.text[i + 1:i + 2].isspace()):
            start = max(start, i + 1)
    k = max(k for k in range(len(out) + 1) if len(text(out[:k])) <= start)
    args = auto.calls[0].argument_text
    assert 0 < k < len(out) and unused_numbers(question_numbers(question), auto.text + args)  # 987654
    g = m.generate(prompt, question=question, unused_number_rewinds=1, answer_marker=marker, **kw)
    assert g.token_ids[:P + k] == auto.token_ids[:P + k]
    z, _ = m(torch.tensor([auto.token_ids[:P + k]]))
    z = z[0, -1, :m.vocab_size].clone()
    z[out[k]] = float("-inf")
    assert g.token_ids[P + k] == int(z.argmax()) != out[k]
    items = list(m.stream(prompt, question=question, unused_number_rewinds=1, answer_marker=marker, **kw))
    assert "".join(e.text for e in items[:-1]) == items[-1].text == g.text
    batch = generate_batch(m, [prompt, "Q: x"], questions=[question, "y"], unused_number_rewinds=1,
                           answer_marker=marker, batch_size=2, **kw)
    assert batch[0].token_ids == g.token_ids
    # no number in the question, or no question (a bare prompt: its own numbers do not count):
    # the marker is written, and the answer is the same as without the option
    for q in ("How much?", None):
        r0 = m.generate(prompt, question=q, **kw)
        late = r0.text[r0.calls[0].end:].strip()
        mark = late[len(late) // 2:][:2]
        assert len(mark) == 2
        r1 = m.generate(prompt, question=q, unused_number_rewinds=1, answer_marker=mark, **kw)
        assert r1.token_ids == r0.token_ids
    with pytest.raises(ValueError, match="answer_marker"):
        m.generate(prompt, answer_marker=" ")


def test_question_numbers_and_unused_numbers():
    from toolken.generation.decode import question_numbers, unused_numbers

    n = question_numbers("38 boxes at $4.25, $27.50 for delivery, a 6% tax, 1,260 eggs, -14 C")
    assert n == ((38.0,), (4.25,), (27.5,), (6.0, 0.06), (1260.0,), (-14.0,))
    assert unused_numbers(n, "38 * 4.25 = 161.5; 1 - 0.06 = 0.94; 1260 / 12; -14 + 9") == [(27.5,)]
    assert unused_numbers(n, "27.5, 6 and 1,260 of 38 4.25-14") == []
    assert question_numbers("the 3rd row of the 12th box, a base-10 log, no digits") == ()


def test_an_answer_goes_back_to_its_marker_sentence_unless_every_number_is_used(tiny_base):
    """unused_number_rewinds' choice on a finished answer: the start of the marker's sentence,
    unless each number of the question is in the text or in a call's arguments, the marker lies
    in text already streamed, or the rewinds are spent."""
    from types import SimpleNamespace

    from toolken.generation.config import GenerationConfig
    from toolken.generation.decode import CallTrace, _goes_back, _Row, question_numbers

    m = model_with(tiny_base, add)
    text = "It is 38 * 4.25 = 161.5. So, the answer is 161.5."
    q = "38 pens at 4.25 and 27.50 for delivery?"
    out = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert m.tokenizer.decode(out, skip_special_tokens=True) == text
    ctx = SimpleNamespace(cfg=GenerationConfig(unused_number_rewinds=1), model=m)

    def row(question=q, calls=(), **kw):
        return _Row(ids=[], question=question, gen=None, out=list(out), text=text, calls=list(calls),
                    numbers=question_numbers(question), reason="eos", **kw)

    r = row()
    assert _goes_back(ctx, r)
    assert m.tokenizer.decode(out[:r.back_to], skip_special_tokens=True) == "It is 38 * 4.25 = 161.5."
    assert not _goes_back(ctx, row(calls=[CallTrace(tool="subtract", argument_text="161.5, 27.5)")]))
    assert not _goes_back(ctx, row(question="38 pens at 4.25?"))
    assert not _goes_back(ctx, row(emitted=len(text) - 1))  # the marker was streamed already
    assert not _goes_back(ctx, row(rewinds=1))
    late = _Row(ids=[], question=q, gen=None, out=list(out), text=text, numbers=question_numbers(q),
                reason="context")
    assert not _goes_back(ctx, late)
