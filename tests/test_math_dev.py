"""The hand-written FuncQA / GSM8K-XL dev sets are what their sources compute, and the
question-style FuncQA training records carry calls whose results the tools give."""

import importlib.util
import json
import math
from fractions import Fraction

from toolken.core.data import load_jsonl
from toolken.evaluation import call_ops, exact_value
from toolken.tools import load_pack
from conftest import REPO

DEV = REPO / "data" / "dev"


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_written_dev_files_match_their_sources():
    mod = _module(DEV / "make_math_dev.py", "make_math_dev")
    for path, text in mod.build_all().items():
        assert path.read_text() == text, f"{path} is out of date: run make_math_dev.py"


def test_one_hop_gold_is_the_tool_result_and_every_tool_has_ten():
    tools = load_pack(REPO / "tools" / "funcqa.py")
    records = json.loads((DEV / "funcqa_oh_dev.json").read_text())
    counts = {}
    for r in records:
        (op,) = call_ops(r["func"])
        args = r["func"].split("(", 1)[1].rsplit(")", 1)[0]
        assert math.isclose(tools[op].call(args).value, r["answer"], rel_tol=1e-9)
        counts[op] = counts.get(op, 0) + 1
    assert set(counts) == set(tools.names) and min(counts.values()) >= 10


def test_gsm8k_results_recomputed_with_plain_fractions():
    for line in (DEV / "gsm8k_xl_dev.jsonl").read_text().splitlines():
        r = json.loads(line)
        values = [Fraction(v) if isinstance(v, str) else Fraction(str(v)) for v in r["enhanced_v"]]
        results = []
        for step in r["enhanced_process"]:
            results.append(exact_value(step.split(" = ")[0]))
        assert float(results[-1]) == r["enhanced_result"]
        assert all(f"{{v_{i}}}" in r["question"] for i in range(1, len(values) + 1))


def test_question_records_carry_the_tools_results(tmp_path):
    mod = _module(REPO / "data" / "make_funcqa_questions.py", "make_funcqa_questions")
    tools = load_pack(REPO / "tools" / "funcqa.py")
    out = tmp_path / "q.jsonl"
    mod.save_jsonl(mod.build(2, seed=1), out)
    records = load_jsonl(out, tools=tools.names)  # validates spans against results
    assert {r.calls[0].tool for r in records} == set(tools.names)
    for r in records:
        (c,) = r.calls
        assert r.text[c.start:c.end] == c.result == tools[c.tool].call(c.args).text
        assert r.text.startswith("Q: ") and f"So, the answer is {c.result}." in r.text


def test_the_recipes_question_file_is_what_the_script_writes(tmp_path):
    """configs/funcqa.yaml reads data/funcqa_questions.jsonl: the script writes it again byte
    for byte, half the answers spaced ("6 x 7 = 42"), each span still the tool's result."""
    mod = _module(REPO / "data" / "make_funcqa_questions.py", "make_funcqa_questions")
    out = tmp_path / "q.jsonl"
    mod.save_jsonl(mod.build(4, seed=0, spaced_fraction=0.5), out)
    assert out.read_bytes() == (REPO / "data" / "funcqa_questions.jsonl").read_bytes()
    records = load_jsonl(out)
    spaced = [r for r in records if " = " in r.text]
    assert 0.3 < len(spaced) / len(records) < 0.7
    assert mod.spaced("It has 6*7=", __import__("random").Random(0)) in ("It has 6 * 7 =", "It has 6 x 7 =")
    assert mod.spaced("It is -14+9=", __import__("random").Random(0)) == "It is -14 + 9 ="
    assert mod.direct("The jar holds 6331+6910=") == "The jar holds" and mod.direct("x is 5=") is None


def test_multi_step_records_chain_the_tools_results(tmp_path):
    """Each step of data/make_funcqa_mh_questions.py is its tool's result on its arguments,
    a later step reads an earlier result, and the answer is the last result."""
    mod = _module(REPO / "data" / "make_funcqa_mh_questions.py", "make_funcqa_mh_questions")
    tools = load_pack(REPO / "tools" / "funcqa.py")
    out = tmp_path / "mh.jsonl"
    mod.save_jsonl(mod.build(2, seed=1, spaced_fraction=0.5), out)
    records = load_jsonl(out, tools=tools.names)  # validates spans against results
    assert len(records) == 2 * len(mod.T) and {c.tool for r in records for c in r.calls} == set(tools.names)
    for r in records:
        assert 2 <= len(r.calls) <= 4 and r.text.startswith("Q: ") and "\n" in r.text
        for i, c in enumerate(r.calls):
            assert r.text[c.start:c.end] == c.result == tools[c.tool].call(c.args).text
            assert r.text[c.start - 1] in "= s"  # right after the expression ("= ", "=", "is ")
        assert any(float(r.calls[0].result) in c.args for c in r.calls[1:]) or len(r.calls) > 2
        assert r.text.endswith(f"So, the answer is {r.calls[-1].result}.")
        assert "\n" not in r.text.split("\nA: ", 1)[1]  # one line, as the one-hop prompt answers


def test_the_recipes_multi_step_file_is_what_the_script_writes(tmp_path):
    """configs/funcqa.yaml reads data/funcqa_mh_questions.jsonl: the script writes it again
    byte for byte; a factor made from a percentage is a step of its own."""
    mod = _module(REPO / "data" / "make_funcqa_mh_questions.py", "make_funcqa_mh_questions")
    out = tmp_path / "mh.jsonl"
    mod.save_jsonl(mod.build(4, seed=0, spaced_fraction=0.5), out)
    assert out.read_bytes() == (REPO / "data" / "funcqa_mh_questions.jsonl").read_bytes()
    texts = [r.text for r in load_jsonl(out)]
    assert any("It keeps 1-0." in t or "It keeps 1 - 0." in t for t in texts)
