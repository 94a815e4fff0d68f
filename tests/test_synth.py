"""Tests for toolken.tools.synth and `toolken synth`: counts per tool, valid spans, duplicates,
the report of tools that got no data, sources, and the model (self-instruct) path."""

import random
import re
from types import SimpleNamespace

import pytest

from toolken.tools import synth
from toolken.cli import main
from toolken.core.data import Record, label_records, load_jsonl, save_jsonl
from toolken.tools.registry import ToolRegistry, load_pack
from toolken.tools.synth import Seen, synthesize
from toolken.tools import Tool

PACK = '''
from toolken.tools import Tool, tool

@tool(demos=["Q: A shop has 311 apples and buys 112 more. How many apples now?\\n"
             "A: It has 311+112=<plus>(311, 112)=423 apples."])
def plus(a: int, b: int) -> int:
    """The sum of two integers."""
    return a + b

@tool(demos=['Q: What is the capital of "France"?\\nA: The capital of France is Paris.',
             'Q: Which city is the capital of "Japan"?\\nA: It is Tokyo.'])
def capital(country: str) -> str:
    """The capital city of a country."""
    return {"France": "Paris", "Japan": "Tokyo"}[country]

remote = Tool(name="remote", description="A remote service that is not available here.",
              parameters={"type": "object", "properties": {"q": {"type": "number"}},
                          "required": ["q"]})

TOOLS = [plus, capital, remote]
'''
CAPITALS = {"France": "Paris", "Japan": "Tokyo"}


@pytest.fixture(scope="module")
def pack_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "tiny_pack.py"
    path.write_text(PACK)
    return path


@pytest.fixture(scope="module")
def pack(pack_file):
    return load_pack(pack_file)


@pytest.fixture(scope="module")
def made(pack):
    return synthesize(pack, per_tool=8, seed=0)


def by_tool(records):
    out = {}
    for r in records:
        out.setdefault(r.calls[0].tool, []).append(r)
    return out


def test_counts_and_empty_tool_report(made):
    records, report = made
    rep = {r.tool: r for r in report.tools}
    assert {t: len(rs) for t, rs in by_tool(records).items()} == {"plus": 8, "capital": 8}
    assert rep["plus"].kept == rep["capital"].kept == 8
    for r in report.tools:
        assert r.generated == r.kept + sum(r.dropped.values())
    assert report.empty == ["remote"] and rep["remote"].kept == 0
    assert rep["remote"].dropped == {"tool cannot run (no implementation, no api_call)":
                                     rep["remote"].generated}
    summary = report.summary()
    assert "EMPTY remote: kept 0/" in summary and "1 tool(s) got no data: remote" in summary


def test_records_valid_spans_results_and_sources(made, pack, tmp_path):
    records, _ = made
    save_jsonl(records, tmp_path / "s.jsonl")
    assert load_jsonl(tmp_path / "s.jsonl", tools=pack.names) == records  # spans checked there
    for r in records:
        (c,) = r.calls
        assert r.text[c.start:c.end] == c.result
        assert r.source == f"synth:template:{c.tool}"
        expected = c.args[0] + c.args[1] if c.tool == "plus" else CAPITALS[c.args[0]]
        assert c.result == str(expected)
        assert r.text.startswith("Q: ") and "\nA: " in r.text
        assert r.text[c.start - 1] in " =", r.text  # whitespace rule: one space, or after "="
    assert any("+" in r.text for r in records)  # some come from the demo itself


def test_labelled_by_the_toolken_rule(made, pack, tiny_base):
    records, _ = made
    lab = label_records(records, tiny_base.tokenizer, pack.names, tiny_base.vocab_size, 256)
    assert lab.report.records == len(records) and not lab.report.skipped
    assert lab.report.toolken_labels == len(records)


def test_no_duplicate_contexts(made):
    records, _ = made
    contexts = [synth.context(r) for r in records]
    loose = [re.sub(r"[\d\W_]+", "", c.lower()) for c in contexts]
    assert len(set(loose)) == len(loose)
    sets = [set(re.findall(r"\w+", c.lower())) for c in contexts]
    for i in range(len(sets)):
        for j in range(i):
            assert len(sets[i] & sets[j]) < 0.9 * len(sets[i] | sets[j])


def test_avoid_and_other_tools_data(pack):
    first, _ = synthesize(pack, per_tool=8, seed=0)
    again, report = synthesize(pack, per_tool=8, seed=0, avoid=first)
    assert not {synth.context(r) for r in first} & {synth.context(r) for r in again}
    assert any("duplicate" in why for r in report.tools for why in r.dropped)
    # two API tools documented alike: the second finds the first's texts taken
    twins = [Tool(name=n, description="Image classification with a ResNet. It labels photos.",
                  meta={"api_call": f"load('{n}')"}) for n in ("twin_a", "twin_b")]
    recs, rep = synthesize(twins, per_tool=4, seed=1)
    assert rep.tools[0].kept == 4 and rep.tools[1].dropped["exact duplicate of another tool's "
                                                           "data"] > 0
    a, b = ({synth.context(r) for r in recs if r.calls[0].tool == n} for n in ("twin_a", "twin_b"))
    assert len(a) == 4 and b and not a & b
    for r in recs:
        (c,) = r.calls
        assert r.text.startswith("###Instruction: ")
        assert r.text.endswith(f"\n###Output: <<<api_call>>>: load('{c.tool}')")
        assert c.result == f"load('{c.tool}')" and c.args is None


def test_seen_jaccard_matches_brute_force():
    rng = random.Random(0)
    words = [a + b for a in "bcdfg" for b in ("ap", "ex", "im", "ot", "ur", "yl")]
    seen, kept, jaccard_hits = Seen(), [], 0
    for _ in range(400):
        if kept and rng.random() < 0.6:  # a neighbour of a kept text: one word dropped or added
            toks = set(rng.choice(kept))
            toks.discard(rng.choice(sorted(toks))) if rng.random() < 0.5 else toks.add(
                rng.choice(words))
            toks = toks or {words[0]}
        else:
            toks = set(rng.sample(words, rng.randint(1, 25)))
        text = " ".join(rng.sample(sorted(toks), len(toks)))
        brute = any(len(toks & k) >= 0.9 * len(toks | k) for k in kept)
        hit = seen.find(text)
        assert (hit is not None) == brute, text
        jaccard_hits += hit is not None and hit[0] == "near duplicate (token Jaccard)"
        if hit is None:
            seen.add(text, "t")
            kept.append(toks)
    assert jaccard_hits > 10
    assert seen.find("Q: What is 12 + 7?") is None
    seen.add("Q: What is 12 + 7?", "plus")
    assert seen.find("q: what is 12 + 7?")[0] == "exact duplicate"
    assert seen.find("Q: What is 45 + 3?")[0] == "near duplicate (digits/punctuation)"


def test_model_path_with_fixed_questions(pack, monkeypatch):
    """The self-instruct path, with the model's questions given: arguments come from the
    sampled ones when the question names them, else from its numbers."""
    def fake(base, prompts, seed, *a):
        if "sum of two integers" in prompts[0]:
            return ["How many is 12 plus 30 in all?", "no", "Add 5 and 6 for me please."] + \
                ["Add 5 and 6 for me please."] * (len(prompts) - 3)
        return [re.search(r'with "(\w+)"', p).group(1).join(["What is the capital of ", "?"])
                for p in prompts]
    monkeypatch.setattr(synth, "model_questions", fake)
    recs, report = synthesize([pack["plus"], pack["capital"]], per_tool=2, method="model",
                              base=SimpleNamespace(tokenizer=SimpleNamespace()), seed=0)
    plus = [r for r in recs if r.calls[0].tool == "plus"]
    assert [r.calls[0].args for r in plus] == [[12, 30], [5, 6]]
    assert [r.calls[0].result for r in plus] == ["42", "11"]
    assert all(r.source == f"synth:model:{r.calls[0].tool}" for r in recs)
    rep = {r.tool: r for r in report.tools}
    assert rep["plus"].dropped["the model wrote no usable question"] == 1
    assert rep["capital"].kept == 2
    # sampled arguments count only when the question writes them whole and in order
    assert synth._names_in_order('Are "A b." and "C d." close?', ["A b.", "C d."])
    assert not synth._names_in_order('Are "A b." and "C d." close?', ["C d.", "A b."])
    assert not synth._names_in_order("What is 120 plus 30?", [12, 30])


def test_model_path_for_an_api(monkeypatch):
    """An API request starts with anchoring words and must share a word with the API's
    description; its result is the API's call."""
    api = Tool(name="resnet", description="Image classification: labels photos of animals.",
               meta={"api_call": "load('resnet18')"})
    seen_prompts = []

    def fake(base, prompts, seed, *a):
        seen_prompts.extend(prompts)
        return ["to label photos of my cats.", "am happy to help you today."] * len(prompts)
    monkeypatch.setattr(synth, "model_questions", fake)
    recs, report = synthesize([api], per_tool=2, method="model", seed=0,
                              base=SimpleNamespace(tokenizer=SimpleNamespace()))
    assert all(p.startswith("API: Image classification") for p in seen_prompts)
    start = seen_prompts[0].split("###Instruction: ")[1]
    assert synth.context(recs[0]) == (f"###Instruction: {start} to label photos of my cats.\n"
                                      f"###Output: <<<api_call>>>: ")
    assert all(r.calls[0].result == "load('resnet18')" and r.source == "synth:model:resnet"
               for r in recs)
    why = report.tools[0].dropped
    assert why["the request shares no content word with the API's description"] >= 1


def test_model_path_runs_on_tiny_model(pack, tiny_base):
    recs, report = synthesize(pack, per_tool=3, method="both", base=tiny_base, seed=0,
                              settings=synth.SynthSettings(max_new_tokens=12))
    for r in report.tools:
        assert r.generated == r.kept + sum(r.dropped.values())
    assert sum(r.generated for r in report.tools) > sum(r.kept for r in report.tools)
    for r in recs:
        Record.from_json(r.to_json(), "x")


def test_bad_arguments():
    with pytest.raises(ValueError, match="method='x' is not one of"):
        synthesize([], 1, method="x")
    with pytest.raises(ValueError, match="pass base="):
        synthesize([], 1, method="model")
    with pytest.raises(ValueError, match="per_tool=0 must be positive"):
        synthesize([], 0)


def test_cli_help_and_run(pack_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0 and "--per-tool" in capsys.readouterr().out
    out = tmp_path / "s.jsonl"
    code = main(["synth", "--tools", str(pack_file), "--per-tool", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "EMPTY remote" in err and "1 tool(s) got no data: remote" in err
    assert len(load_jsonl(out, tools=["plus", "capital", "remote"])) == 10
    code = main(["synth", "--tools", str(pack_file), "--per-tool", "3", "--out", str(out),
                 "--only", "pl*,capital", "--seed", "4"])
    assert code == 0 and len(load_jsonl(out)) == 6
    assert main(["synth", "--tools", str(pack_file), "--per-tool", "3", "--out", str(out),
                 "--only", "nope"]) == 2
    assert "--only ['nope'] match no tool" in capsys.readouterr().err


def test_lead_and_demo_templates_with_strings_and_number_order(tmp_path):
    """--lead: every answer starts with it; a demo with quoted-string arguments is a question
    template too; sampled numbers keep the order of the demo's numbers (part < whole)."""
    path = tmp_path / "pack2.py"
    path.write_text('''
from toolken.tools import tool

@tool(demos=["Q: Out of 80 eggs, 6 are cracked. What percent are cracked?\\n"
             "A: 6 of 80 eggs is <percent>(6, 80)=7.5 percent."])
def percent(part: float, whole: float) -> float:
    """The percentage that part is of whole."""
    return 100 * part / whole

@tool(demos=['Q: Do "I am 12." and "I am twelve." match?\\nA: They match <same>("I am 12.", "I am twelve.")=0.',
             'Q: Are "A cat." and "A dog." the same?\\nA: <same>("A cat.", "A dog.")=0.'])
def same(a: str, b: str) -> int:
    """1 if the two texts are equal, else 0."""
    return int(a == b)

TOOLS = [percent, same]
''')
    pack = load_pack(path)
    (q, head, tail, written), = synth._demo_templates(pack["percent"])
    assert (q, head, written) == ("Out of {1} eggs, {0} are cracked. What percent are cracked?",
                                  "{0} of {1} eggs is ", ["6", "80"])
    q2 = [t[0] for t in synth._demo_templates(pack["same"])]
    assert q2 == ["Do {0} and {1} match?", "Are {0} and {1} the same?"]  # the "12" inside a string stays
    records, _ = synthesize(pack, per_tool=12, seed=3, settings=synth.SynthSettings(lead="The answer is"))
    assert records and all(re.search(r"\nA: The answer is \S", r.text) for r in records)
    eggs = [r for r in records if "eggs" in r.text]
    assert eggs and all(r.calls[0].args[0] <= r.calls[0].args[1] for r in eggs)
    assert any('Do "' in r.text for r in records if r.calls[0].tool == "same")
    for r in records:
        c = r.calls[0]
        assert r.text[c.start:c.end] == c.result
    assert synth._in_demo_order([9, 3], ["30", "12"]) == [9, 3]
    assert synth._in_demo_order([3, 9], ["30", "12"]) == [9, 3]
    assert synth._in_demo_order(["x", 3], ['"a"', "12"]) == ["x", 3]


def _api_tool(name, domain, description, dataset="N/A"):
    return Tool(name=name, description=description,
                meta={"api_call": f"load('{name}')",
                      "record": {"domain": domain, "functionality": "Image Classification",
                                 "api_name": name, "description": description,
                                 "performance": {"dataset": dataset, "accuracy": "N/A"}}})


def test_needs_write_domain_requests_with_the_api_own_words(tmp_path):
    """A catalogue API of a listed domain gets about half its requests from the domain's needs,
    each with a sentence of its own description or its dataset; an API of another domain gets
    exactly the records it gets without needs."""
    path = tmp_path / "needs.yaml"
    path.write_text("Computer Vision Image Classification:\n  - sort pictures into categories\n"
                    "  - tell what is shown in a photo.\n")
    needs = synth.load_needs(path)
    assert needs == {"computer vision image classification":
                     ("sort pictures into categories", "tell what is shown in a photo")}
    listed = [_api_tool(f"cls{i}", "Computer Vision Image Classification",
                        f"A vision transformer fine-tuned on birds number {i}. It labels photos.",
                        dataset=f"birds-{i}") for i in range(3)]
    other = _api_tool("seg", "Computer Vision Image Segmentation",
                      "A segmentation model for street scenes. It outlines cars.")
    # the other domain's API first: tools fill in order, and a later tool's texts are checked
    # against the earlier ones' (so the listed tools' new texts cannot change its records)
    with_needs, _ = synthesize([other] + listed, per_tool=8, seed=0,
                               settings=synth.SynthSettings(needs=needs))
    without, _ = synthesize([other] + listed, per_tool=8, seed=0)
    ctx = lambda rs, name: [synth.context(r) for r in rs if r.calls[0].tool == name]  # noqa: E731
    assert ctx(with_needs, "seg") == ctx(without, "seg")
    n_need = 0
    for i in range(3):
        texts = ctx(with_needs, f"cls{i}")
        assert len(texts) == 8
        need_texts = [t for t in texts if "sort pictures into categories" in t
                      or "tell what is shown in a photo" in t]
        assert len(need_texts) >= 2, texts
        n_need += len(need_texts)
        for t in need_texts:  # the need never stands alone: the API's own words come with it
            assert f"birds number {i}" in t or "It labels photos" in t or f"birds-{i}" in t, t
        assert not any(t in ctx(without, f"cls{i}") for t in need_texts)
    assert n_need < 24  # the other templates still write some (more once the needs' are taken)


@pytest.mark.parametrize("text, where", [
    ("- a\n- b\n", "expected a mapping"),
    ("Image classification: []\n", "'Image classification': expected a non-empty list"),
    ("Image classification:\n  - ok\n  - ''\n", "need 2: '' is not a non-empty string"),
    ("Image classification: [a]\nimage Classification: [b]\n", "listed twice"),
    ("Image classification: [a\n", "cannot read"),
])
def test_needs_file_errors_name_the_file_and_entry(tmp_path, text, where):
    path = tmp_path / "needs.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(where)) as e:
        synth.load_needs(path)
    assert str(path) in str(e.value)


def test_cli_synth_needs(tmp_path, capsys):
    pack = tmp_path / "api_pack.py"
    pack.write_text(
        "from toolken.tools import Tool\n"
        "TOOLS = [Tool(name='cls', description='Labels photos of birds.', meta={'api_call': "
        "\"load('cls')\", 'record': {'domain': 'Image classification', 'functionality': "
        "'Classify', 'api_name': 'cls', 'description': 'Labels photos of birds. Fast on CPU.'}})]\n")
    needs = tmp_path / "needs.yaml"
    needs.write_text("image classification: [sort pictures into categories]\n")
    out = tmp_path / "s.jsonl"
    assert main(["synth", "--tools", str(pack), "--per-tool", "6", "--needs", str(needs),
                 "--out", str(out)]) == 0
    texts = [synth.context(r) for r in load_jsonl(out)]
    assert any("sort pictures into categories" in t for t in texts)
