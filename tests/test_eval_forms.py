"""Signed, nested and fraction forms in the benchmark files: FuncQA calls that parse (or
lose only their tool metadata) and GSM8K-XL values read exactly, without eval."""

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest

from toolken.evaluation import call_ops, exact_value, load_benchmark, load_warnings
from conftest import shared_path


def test_signed_funcs_parse():
    examples, skipped = load_benchmark("funcqa-oh", shared_path(
        "toolkengpt", "funcqa", "format_sample_oh_signed.json"))
    assert skipped == [] and examples[0].meta["tool"] == "ln" and examples[0].gold == 1.3863
    assert call_ops("-<log>(0.00008342)=4.0787") == ["log"]
    assert call_ops("+ <ln>(0.5)=-0.6931") == ["ln"]


def test_nested_calls_run_inner_first():
    assert call_ops("<add>(<multiply>(2, 3), <divide>(8, 4))=8") == ["multiply", "divide", "add"]
    assert call_ops("-<sqrt>((2+2))=-2") == ["sqrt"]  # plain parentheses are not calls


@pytest.mark.parametrize("bad", ["<add>(1, 2", "<add>(1, 2)", "<add>(1, 2)=", "2+<add>(1,2)=3",
                                 "x<add>(1,2)=3", "<add>(1, 2))=3", "", None, 5, "add(1, 2)=3"])
def test_calls_that_do_not_parse(bad):
    assert call_ops(bad) is None


def test_unparsable_calls_keep_the_record(tmp_path):
    path = tmp_path / "mh.json"
    path.write_text(json.dumps([
        {"question": "q1", "answer": "3", "calculation": ["<add>(1,2)=3", "oops"]},
        {"question": "q2", "answer": 4, "calculation": ["-<ln>(0.5)=0.69", "<add>(<sqrt>(4),2)=4"]},
        {"question": "q3", "answer": 5},
    ]))
    examples, skipped = load_benchmark("funcqa-mh", path)
    assert skipped == [] and [e.gold for e in examples] == [3.0, 4.0, 5.0]
    assert examples[1].meta["tools"] == ["ln", "sqrt", "add"]
    assert [w.split(":")[0] for w in load_warnings(examples)] == ["record 0", "record 2"]


def test_fraction_values_sample():
    examples, skipped = load_benchmark("gsm8k-xl", shared_path(
        "toolkengpt", "gsm8k-xl", "format_sample_test_fractions.json"))
    assert skipped == [] and len(examples) == 1
    assert "8/125" in examples[0].question and "{v_" not in examples[0].question
    assert examples[0].gold == 60383.232


def test_exact_value_matches_fraction_arithmetic_on_random_inputs():
    rng = random.Random()
    for _ in range(300):
        a, b, c = (Fraction(rng.randint(-10**6, 10**6), rng.randint(1, 999)) for _ in range(3))
        if c == 0:
            continue
        text = f"({a.numerator}/{a.denominator} + {b.numerator}/{b.denominator}) * 3 - 1/{c.numerator}"
        if c.numerator == 0:
            continue
        assert exact_value(text) == (a + b) * 3 - Fraction(1, c.numerator)
        assert exact_value(f"{a.numerator}/{a.denominator}") == a
    assert exact_value("27/64") == Fraction(27, 64)
    assert exact_value(0.1) == Fraction(1, 10) and exact_value("-2.5") == Fraction(-5, 2)
    assert exact_value(3375) == 3375 and exact_value("1e3") == 1000


@pytest.mark.parametrize("bad", ["__import__('os')", "2**10", "1/0", "x", "nan", "inf", True,
                                 float("nan"), "", "3 apples", "[1]", "1 if 1 else 2", None])
def test_exact_value_refuses_anything_but_arithmetic(bad):
    with pytest.raises(ValueError):
        exact_value(bad)


def test_gsm8k_string_values_are_written_as_given(tmp_path):
    rec = {"question": "Take {v_2} of {v_1}.", "enhanced_v": [3375, "27/64"],
           "enhanced_result": "91125/64"}
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    (ex,), skipped = load_benchmark("gsm8k-xl", path)
    assert skipped == [] and ex.question == "Take 27/64 of 3375." and ex.gold == 91125 / 64


def test_dev_sets_load_whole():
    root = Path(__file__).resolve().parents[1] / "data" / "dev"
    for bench, name, n in [("funcqa-oh", "funcqa_oh_dev.json", 143),
                           ("funcqa-mh", "funcqa_mh_dev.json", 42),
                           ("gsm8k-xl", "gsm8k_xl_dev.jsonl", 42)]:
        examples, skipped = load_benchmark(bench, root / name)
        assert skipped == [] and len(examples) == n and load_warnings(examples) == []
