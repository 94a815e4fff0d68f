"""Hostile data files: every error names the file and line (or record) and what was expected."""

import json

import pytest

from toolken.cli import main
from toolken.training.config import load_config
from toolken.core.data import DataError, load_jsonl
from toolken.evaluation.loaders import load_benchmark
from toolken.evaluation.run import EvalConfig, evaluate
from toolken.training.trainer import train
from conftest import REPO

GOOD = {"text": "1+2=3", "calls": [{"tool": "add", "args": [1, 2], "start": 4, "end": 5,
                                    "result": "3"}]}


def test_unknown_tool_in_an_extra_train_file_names_that_file_and_line(tmp_path):
    extra = tmp_path / "extra.jsonl"
    bad = dict(GOOD, calls=[dict(GOOD["calls"][0], tool="divide")])
    extra.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(bad) + "\n")
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "train_file": str(REPO / "data/tiny/train.jsonl"), "extra_train_files": [str(extra)],
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "c")})
    with pytest.raises(DataError, match=rf"{extra}:3: field 'calls\[0\].tool': unknown tool "
                       r"'divide'; allowed \(3\): add, subtract, multiply"):
        train(cfg)


def test_line_separators_inside_strings_stay_text(tmp_path):
    from toolken.core.data import Record, save_jsonl

    rec = Record("a\u2028b\x0c 1+2=3", [])
    save_jsonl([rec, rec], tmp_path / "t.jsonl")  # written with ensure_ascii=False
    assert [r.text for r in load_jsonl(tmp_path / "t.jsonl")] == [rec.text, rec.text]


def test_non_utf8_training_data_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"text": "caf\xe9", "calls": []}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 \(byte 0xe9 at column 14\)"):
        load_jsonl(path)
    from toolken.training.convert import convert

    (tmp_path / "f.json").write_bytes(b'[{"text": "\xff"}]')
    with pytest.raises(DataError, match=r"f.json:1: not UTF-8 \(byte 0xff"):
        convert(tmp_path / "f.json", "toolkengpt-funcqa")


def test_non_utf8_eval_data_names_file_and_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"question": "q", "answer": 1, "func": "<add>(1,0)=1"}\n\x80\n')
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 \(byte 0x80 at column 1\)"):
        load_benchmark("funcqa-oh", path)


@pytest.mark.parametrize("line,why", [
    ('{"text": "a", "text": "b", "calls": []}', "duplicate key 'text'"),
    ('{"text": "1+2=3", "calls": [{"tool": "add", "args": [NaN, 2], "start": 4, "end": 5, '
     '"result": "3"}]}', "NaN is not a JSON number"),
    ('{"text": "1+2=3", "calls": [{"tool": "add", "args": {"a": Infinity}, "start": 4, '
     '"end": 5, "result": "3"}]}', "Infinity is not a JSON number"),
    ('{"text": "1+2=3", "calls": [{"tool": "add", "args": [-Infinity], "start": 4, "end": 5, '
     '"result": "3"}]}', "-Infinity is not a JSON number"),
])
def test_duplicate_keys_and_non_finite_numbers_name_file_and_line(tmp_path, line, why):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: invalid JSON \({why}"):
        load_jsonl(path)


@pytest.mark.parametrize("content,reason", [
    ("this is not JSON\nnor this\n", r"2 x invalid JSON \(records 1, 2\)"),
    ('[{"q": 1}, {"q": 2}]', r"2 x field 'question' missing \(records 0, 1\)"),
    ('{"question": "q", "answer": "many"}\n', r"1 x field 'answer' is not a number \(records 1\)"),
])
def test_unusable_eval_file_says_which_file_and_what_was_expected(tmp_path, content, reason):
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path}: no usable funcqa-oh examples") as e:
        evaluate(EvalConfig(bench="funcqa-oh", data=str(path), method="cot"))
    assert __import__("re").search(reason, str(e.value)), str(e.value)
    assert 'a funcqa-oh record is {"question": str, "answer": number' in str(e.value)


def test_eval_limit_must_be_positive(tmp_path, capsys):
    for bad in ("-1", "0"):
        assert main(["eval", "funcqa-oh", "--data", "x.json", "--method", "cot", "--limit", bad]) == 2
        assert f"--limit {bad}: give a positive number of examples" in capsys.readouterr().err
