"""One decode core: for every generation option, single, streamed and batched generation give
the same text, calls and tokens (issue 12). Tiny model; toolkens forced by a large bias where
an option needs a call."""

from types import SimpleNamespace

import pytest
import torch

from toolken.core.data import Record, ToolCall
from toolken.generation.config import GenerationConfig
from toolken.generation.decode import Generation, generate_batch
from toolken.model import ToolkenModel
from toolken.tools import tool
from toolken.tools.registry import ToolRegistry
from toolken.training.pipeline import demo_records


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _rec(q, name, args, result):
    text = f"Q: {q}\nA: {result}."
    return Record(text, [ToolCall(name, len(text) - len(result) - 1, len(text) - 1, result, args)])


RECORDS = [_rec("3 and 4 together?", "add", [3, 4], "7"), _rec("5 times 2?", "mul", [5, 2], "10"),
           _rec("6 and 1 together?", "add", [6, 1], "7"), _rec("2 times 9?", "mul", [2, 9], "18")]
PROMPTS = ["Q: 2 and 3? A:", "Q: what is 10 plus 20? A: "]
FORCE = dict(toolken_bias=1e4, max_tool_calls=2)
OPTIONS = {
    "defaults": {},
    "forced call": FORCE,
    "no tools": dict(max_tool_calls=0),
    "stop": dict(stop=["Q", "3"], **FORCE),
    "ignore_eos": dict(ignore_eos=True),
    "sampling": dict(do_sample=True, temperature=0.9, top_p=0.8, seed=5),
    "close_results": dict(close_results=True, **FORCE),
    "tool_filter": dict(tool_filter=["mu*"], **FORCE),
    "arg_candidates": dict(arg_candidates=3, **FORCE),
    "arg_numbers": dict(arg_numbers="context", **FORCE),
    "arg_demos": dict(arg_demos=1, **FORCE),
    "rerank pmi": dict(rerank_top_k=2, **FORCE),
    "rerank choice": dict(rerank_top_k=2, rerank_method="choice", rerank_none_bias=-1.0, **FORCE),
    "no prompt reuse": dict(reuse_prompt=False, **FORCE),
    "prompt_lookup": dict(prompt_lookup=2, ignore_eos=True),
    "max_result_chars": dict(max_result_chars=1, **FORCE),
    "call_tools off": dict(call_tools=False, **FORCE),
}


@pytest.fixture(scope="module")
def model(tiny_base):
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [])
    m.add_tools(["add", "mul"])
    m.demo_records = demo_records(SimpleNamespace(dev_fraction=0.25, seed=0), RECORDS, None)
    return m.attach_tools(ToolRegistry([add, mul]))


def _key(g: Generation):
    return (g.text, g.token_ids, g.stop_reason,
            [(c.tool, c.arguments, c.argument_text, c.result, c.error, c.start, c.end) for c in g.calls])


@pytest.mark.parametrize("name", list(OPTIONS))
def test_single_stream_and_batch_agree(model, name):
    cfg = GenerationConfig(max_new_tokens=8).replace(**OPTIONS[name])
    batch = generate_batch(model, PROMPTS, cfg.replace(batch_size=2))
    for i, prompt in enumerate(PROMPTS):
        seeded = cfg.replace(seed=cfg.seed + i) if cfg.seed is not None else cfg
        single = model.generate(prompt, seeded)
        items = list(model.stream(prompt, seeded))
        streamed = "".join(e.text for e in items[:-1] if e.kind in ("text", "tool_result"))
        assert _key(batch[i]) == _key(single) == _key(items[-1]), (name, i)
        assert streamed == single.text
    if name in ("forced call", "tool_filter"):
        assert all(g.calls for g in batch)
    if name == "tool_filter":
        assert {c.tool for g in batch for c in g.calls} == {"mul"}


def test_template_with_prompt_demos_in_every_mode(model):
    template = "Q: fixed\nA: 1.\n\nQ: [QUESTION]\nA:"
    qs = ["7 and 8 together?", "4 times 4?"]
    cfg = GenerationConfig(max_new_tokens=6, prompt_demos=1, **FORCE)
    batch = model.generate_batch([template] * 2, cfg, questions=qs)
    for q, b in zip(qs, batch):
        single = model.generate(template, cfg, question=q)
        assert _key(b) == _key(single)
        assert "fixed" not in model.tokenizer.decode(single.token_ids)


def test_tool_filter_matching_nothing_is_an_error(model):
    with pytest.raises(ValueError, match="matches none"):
        model.generate("Q: hi", tool_filter=["zz*"])


def test_call_tools_off_ends_at_the_choice(model):
    """call_tools=False: the first toolken that wins is the answer (the same one tool mode
    would have been entered with); nothing is written or run after it."""
    cfg = GenerationConfig(max_new_tokens=8, tool_filter=["mu*"], **FORCE)
    for prompt in PROMPTS:
        full, choice = model.generate(prompt, cfg), model.generate(prompt, cfg.replace(call_tools=False))
        assert choice.stop_reason == "toolken" and [c.tool for c in choice.calls] == ["mul"]
        assert choice.calls[0].tool == full.calls[0].tool and full.calls[0].arguments is not None
        assert choice.calls[0].arguments is None and choice.calls[0].result is None
        assert full.text.startswith(choice.text) and choice.decoded_tokens < full.decoded_tokens
