"""Fuzzing the readers of untrusted text (hypothesis): the training-record reader and the
converters, the tool argument parsers and the benchmark loaders raise nothing but their own
error types."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken.tools.arguments import parse_arguments
from toolken.core.data import DataError, Record, load_jsonl
from toolken.evaluation.loaders import BENCHMARKS, load_benchmark
from toolken.training.convert import convert
from toolken.tools.syntax import arith, read_value, split_args, strip_parens

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON values, with the keys and shapes the readers look for, so that deep branches are hit
KEYS = st.sampled_from(["text", "calls", "tool", "start", "end", "result", "args", "source",
                        "context", "question", "answer", "func", "calculation", "api", "chosen",
                        "alternative", "enhanced_v", "enhanced_result", "code", "api_call",
                        "api_data", "domain", "x"])
SCALARS = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False)
           | st.text(max_size=20) | st.sampled_from(["<add>(1, 2)=3", "{v_1}", "P241", "3",
                                                     "###Instruction: x\n###Output: y"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(KEYS, inner, max_size=6), max_leaves=20)
RECORDISH = st.fixed_dictionaries(
    {"text": st.text(max_size=30)},
    optional={"calls": st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=3),
              "source": JSON, "context": JSON, "x": JSON})
RAW = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@FAST
@given(data=RAW | st.lists(JSON | RECORDISH, max_size=4).map(
    lambda rs: "\n".join(json.dumps(r) for r in rs).encode()))
def test_training_reader_raises_only_data_errors(tmp_path, data):
    path = _write(tmp_path, "t.jsonl", data)
    try:
        records = load_jsonl(path, tools=["add", "x"])
    except DataError as e:
        assert str(path) in str(e)
        return
    assert records and all(isinstance(r, Record) for r in records)


EQS = st.sampled_from(["<add>(1, 2)=3<eoe>", "3", "<f>P1(a)=\"b\"</f>", "<f>P1(", "a"]) | st.text(max_size=12)
CONVERTIBLE = st.fixed_dictionaries(
    {"text": st.text(max_size=30) | st.sampled_from(["1+2=3 b", "a is b"]) | JSON,
     "tar_eq": st.lists(EQS, max_size=3) | JSON, "tar_number": st.lists(EQS, max_size=3) | JSON,
     "call": EQS | st.lists(EQS, max_size=2) | JSON})


@FAST
@given(data=st.lists(CONVERTIBLE, max_size=3).map(lambda rs: json.dumps(rs).encode()) | RAW,
       fmt=st.sampled_from(["toolkengpt-funcqa", "toolkengpt-kamel", "canonical"]))
def test_converters_raise_only_data_errors(tmp_path, data, fmt):
    path = _write(tmp_path, "c.json", data)
    try:
        conv = convert(path, fmt)
    except DataError as e:
        assert str(path) in str(e)
        return
    assert conv.total == len(conv.records) + len(conv.problems)


@FAST
@given(obj=JSON | RECORDISH)
def test_record_validation_raises_only_data_errors(obj):
    try:
        rec = Record.from_json(obj, "f:1")
    except DataError as e:
        assert str(e).startswith("f:1: ")
        return
    assert all(rec.text[c.start:c.end] == c.result for c in rec.calls)


SCHEMAS = [
    {"properties": {"a": {"type": "integer"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    {"properties": {"s": {"type": "string"}, "f": {"type": "boolean"}}, "required": ["s"]},
    {"properties": {"xs": {"type": "array", "items": {"type": "number"}, "x-variadic": True,
                           "minItems": 1}}, "required": ["xs"]},
    {"properties": {"xs": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                    "e": {"type": "string", "enum": ["a", "b"]}}, "required": ["xs"]},
    {"properties": {}},
]
ARGTEXT = st.text(alphabet=st.sampled_from(list('0123456789-.,%"[]() \\eEtrufalsx\n')), max_size=40) \
    | st.text(max_size=40)


@FAST
@given(text=ARGTEXT, schema=st.sampled_from(SCHEMAS))
def test_argument_parser_raises_only_value_errors(text, schema):
    try:
        values = parse_arguments(text, schema)
    except ValueError as e:
        assert "cannot parse arguments" in str(e)
        return
    assert isinstance(values, list)


@FAST
@given(text=ARGTEXT | st.text(alphabet=st.sampled_from(list("0123456789+-*/^%().e ")), max_size=60),
       kind=st.sampled_from([None, "integer", "number", "string", "boolean"]))
def test_tool_syntax_raises_only_value_errors(text, kind):
    for f in (lambda: arith(text), lambda: read_value(text, kind),
              lambda: split_args(strip_parens(text))):
        try:
            f()
        except ValueError:
            pass


TEXTS = st.sampled_from(["<add>(1, 2)=3", "q {v_1} {v_9}", "P241", "1,234", "###Instruction: x",
                         "{'Instruction': 'x', 'Output': {}}", "{'Instruction': \"'a", ""]) | st.text(max_size=12)
BENCH_RECORD = st.fixed_dictionaries({k: TEXTS | JSON | st.lists(TEXTS | JSON, max_size=3) for k in (
    "question", "answer", "func", "calculation", "api", "enhanced_v", "enhanced_result", "code",
    "api_call")}, optional={"api_data": st.dictionaries(st.sampled_from(["domain", "api_name"]),
                                                         TEXTS | JSON, max_size=2) | JSON})


@FAST
@given(bench=st.sampled_from(BENCHMARKS),
       data=RAW | st.lists(JSON | BENCH_RECORD, max_size=4).map(lambda rs: json.dumps(rs).encode())
       | st.lists(JSON | BENCH_RECORD, max_size=4).map(lambda rs: "\n".join(map(json.dumps, rs)).encode()))
def test_eval_loaders_raise_only_data_errors(tmp_path, bench, data):
    path = _write(tmp_path, "b.json", data)
    try:
        examples, skipped = load_benchmark(bench, path)
    except DataError as e:
        assert str(path) in str(e)
        return
    assert all(p.detail for p in skipped)


@pytest.mark.parametrize("text", ["(" * 5000 + "1" + ")" * 5000, "2^2^2^2^2^2^2^2", "9" * 5000,
                                  "-" * 5000 + "1", "1/0", "10**10**10"])
def test_arith_extremes_raise_value_errors(text):
    try:
        arith(text)
    except ValueError:
        pass
