"""Tests for toolken.evaluation.loaders: the published formats and malformed records."""

import json
import re
from pathlib import Path

import pytest

from toolken.core.data import DataError
from toolken.evaluation import BENCHMARKS, Example, load_benchmark, load_warnings
from conftest import shared_path



def write_list(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def by_index(skipped):
    return {p.index: p for p in skipped}


# ---------------------------------------------------------------- the published samples


def test_funcqa_oh_sample():
    ops = set(json.loads(shared_path("toolkengpt", "funcqa", "func_dict.json").read_text()))
    examples, skipped = load_benchmark("funcqa-oh", shared_path("toolkengpt", "funcqa",
                                                           "format_sample_oh.json"))
    assert skipped == [] and len(examples) == 8
    first = examples[0]
    assert isinstance(first, Example) and first.id == "0"
    assert first.gold == 1.5126 and isinstance(first.gold, float)
    assert first.meta["tool"] == "power" and first.question.startswith("A savings account")
    assert {e.meta["tool"] for e in examples} <= {o.strip("<>") for o in ops}


def test_funcqa_mh_sample():
    examples, skipped = load_benchmark("funcqa-mh", shared_path("toolkengpt", "funcqa",
                                                           "format_sample_mh.json"))
    assert skipped == [] and len(examples) == 3
    assert examples[0].gold == 36.4167  # given as the string "36.4167"
    assert examples[0].meta["tools"] == ["multiply", "divide"]
    assert examples[2].meta["tools"] == ["subtract", "choose", "multiply"]


def test_kamel_dev():
    examples, skipped = load_benchmark("kamel", shared_path("toolkengpt", "kamel",
                                                       "dev_first_30.json"))
    assert skipped == [] and len(examples) == 449
    assert all(re.fullmatch(r"P\d+", e.gold) for e in examples)
    assert len({e.gold for e in examples}) == 30
    assert examples[1].gold == "P937" and examples[1].meta["answers"][0] == "Paris"
    assert "Paris, France" in examples[1].meta["answers"]


def test_gsm8k_xl_sample():
    examples, skipped = load_benchmark("gsm8k-xl", shared_path("toolkengpt", "gsm8k-xl",
                                                          "format_sample_test.json"))
    assert skipped == [] and [e.id for e in examples] == ["1", "2"]  # line numbers
    assert examples[0].question == ("A farm packs 98304 apples into crates of 48. "
                                    "How many crates does it fill?")
    assert examples[0].gold == 2048.0 and examples[1].gold == 866275.0
    assert not any("{v_" in e.question for e in examples)


def test_apibench_torchhub_train_layout():
    examples, skipped = load_benchmark("apibench-torchhub", shared_path(
        "apibench", "apibench", "torchhub_train.json"))
    assert skipped == [] and len(examples) == 837
    first = examples[0]
    assert first.question.startswith("I need an API that can estimate the relative depth")
    assert first.question.endswith("inverse depth map.")
    assert first.gold == {"api_call": "torch.hub.load(repo_or_dir='intel-isl/MiDaS', "
                                      "model='DPT_Hybrid', pretrained=True)",
                          "api_name": "MiDaS", "domain": "Classification"}
    assert first.meta["api_data"]["framework"] == "PyTorch"
    for e in examples:  # no layout residue, quoted instructions unquoted
        assert "'Output'" not in e.question and e.question[0] not in "'\""


def test_apibench_huggingface_layout():
    examples, skipped = load_benchmark("apibench-huggingface", shared_path(
        "apibench", "format_sample_huggingface_eval.json"))
    assert skipped == [] and len(examples) == 3
    assert examples[0].question == ("Our research group needs numeric vectors for short "
                                    "scientific texts so that we can cluster them by topic.")
    assert examples[0].gold["api_name"] == "YituTech/conv-bert-base"
    assert examples[0].gold["domain"] == "Natural Language Processing Feature Extraction"


def test_unknown_benchmark_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="funcqa-oh.*apibench-tensorflowhub"):
        load_benchmark("funcqa", tmp_path / "x.json")
    assert len(BENCHMARKS) == 7


# ---------------------------------------------------------------- malformed records


def test_funcqa_oh_malformed_records_are_reported(tmp_path):
    good = {"question": "What is 2+3?", "answer": 5, "func": "<add>(2, 3)=5"}
    path = write_list(tmp_path / "oh.json", [
        good,
        {"question": "no answer", "func": "<add>(1, 1)=2"},
        {**good, "answer": "five"},
        {**good, "func": "2+3=5"},
        17,
        {**good, "answer": "1,234"},
    ])
    examples, skipped = load_benchmark("funcqa-oh", path)
    # a func that does not parse loses only the tool metadata, never the record
    assert [e.id for e in examples] == ["0", "3", "5"] and examples[2].gold == 1234.0
    assert examples[1].meta["tool"] is None and "'func'" in examples[1].meta["warning"]
    assert load_warnings(examples) == [f"record 3: {examples[1].meta['warning']}"]
    bad = by_index(skipped)
    assert sorted(bad) == [1, 2, 4]  # list positions
    assert bad[1].reason == "field 'answer' missing"
    assert bad[2].reason == "field 'answer' is not a number" and "five" in bad[2].detail
    assert bad[4].reason == "record is not a JSON object"
    assert all(p.detail.startswith(f"record {p.index}: ") for p in skipped)


def test_funcqa_mh_malformed(tmp_path):
    path = write_list(tmp_path / "mh.json", [
        {"question": "q", "answer": "3", "calculation": "<add>(1,2)=3"},
        {"question": "", "answer": "3", "calculation": []},
        {"question": "q", "answer": "3", "calculation": ["<add>(1,2)=3"]},
    ])
    examples, skipped = load_benchmark("funcqa-mh", path)
    assert [e.id for e in examples] == ["0", "2"]
    assert examples[0].meta["tools"] is None and "'calculation'" in examples[0].meta["warning"]
    assert examples[1].meta["tools"] == ["add"] and "warning" not in examples[1].meta
    assert [(p.index, p.reason) for p in skipped] == [
        (1, "field 'question' is not a non-empty string")]


def test_kamel_malformed(tmp_path):
    ans = [{"chosen": "Paris", "alternative": ["City of Light"], "rdf": "Paris"}]
    path = write_list(tmp_path / "kamel.json", [
        {"question": "Where?", "answer": ans, "api": "P937"},
        {"question": "Where?", "answer": [], "api": "P937"},
        {"question": "Where?", "answer": ans, "api": "P 937"},
        {"question": "Where?", "answer": [{"alternative": []}], "api": "P937"},
    ])
    examples, skipped = load_benchmark("kamel", path)
    assert len(examples) == 1 and examples[0].meta["answers"] == ["Paris", "City of Light"]
    assert [p.index for p in skipped] == [1, 2, 3]


def test_gsm8k_xl_malformed_lines_are_reported_with_line_numbers(tmp_path):
    good = {"question": "Add {v_1} and {v_2}.", "enhanced_v": [2.5, 3.0],
            "enhanced_result": 5.5}
    path = write_lines(tmp_path / "gsm.jsonl", [
        good,
        "",
        "{not json",
        {**good, "question": "Add {v_1} and {v_3}."},
        {**good, "enhanced_v": ["2 apples", 3]},
        {**good, "enhanced_result": None},
        good,
    ])
    examples, skipped = load_benchmark("gsm8k-xl", path)
    assert [e.id for e in examples] == ["1", "7"]
    assert examples[0].question == "Add 2.5 and 3."  # integral values without ".0"
    bad = by_index(skipped)
    assert sorted(bad) == [3, 4, 5, 6]  # line numbers (line 2 is blank, not a record)
    assert bad[3].reason == "invalid JSON" and bad[3].detail.startswith("line 3: ")
    assert bad[4].reason.startswith("placeholder") and "{v_3}" in bad[4].detail
    assert bad[5].reason.startswith("field 'enhanced_v' is not a list of numbers")
    assert bad[6].reason == "field 'enhanced_result' is not a number"


def test_apibench_malformed(tmp_path):
    data = {"domain": "Classification", "api_name": "x"}
    good = {"code": "###Instruction: Find a model.\n###Output: <<<domain>>>: x",
            "api_call": "f('a/b')", "provider": "Hugging Face", "api_data": data}
    path = write_lines(tmp_path / "hf.jsonl", [
        good,
        {**good, "code": "Find a model."},
        {**good, "api_data": {"api_name": "x"}},
        {**good, "code": "{'Instruction': 'Quoted one.', 'Output': {'domain': 'x'}}"},
        ["a", "list"],
    ])
    examples, skipped = load_benchmark("apibench-huggingface", path)
    assert [(e.id, e.question) for e in examples] == [("1", "Find a model."),
                                                      ("4", "Quoted one.")]
    assert [(p.index, p.reason) for p in skipped] == [
        (2, "field 'code' has no instruction"),
        (3, "field 'api_data' is not an object with a 'domain'"),
        (5, "record is not a JSON object")]


def test_either_container_is_accepted(tmp_path):
    rec = {"question": "q?", "answer": 2, "func": "<add>(1, 1)=2"}
    a, _ = load_benchmark("funcqa-oh", write_list(tmp_path / "a.json", [rec]))
    b, _ = load_benchmark("funcqa-oh", write_lines(tmp_path / "b.jsonl", [rec]))
    assert (a[0].gold, a[0].id) == (2.0, "0") and (b[0].gold, b[0].id) == (2.0, "1")


def test_unreadable_files_are_errors(tmp_path):
    (tmp_path / "empty.json").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_benchmark("kamel", tmp_path / "empty.json")
    (tmp_path / "broken.json").write_text('[{"question": "q",\n')
    with pytest.raises(DataError, match="invalid JSON list"):
        load_benchmark("kamel", tmp_path / "broken.json")
