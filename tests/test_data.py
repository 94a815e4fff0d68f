"""Tests for toolken.core.data: the canonical format, the ToolkenGPT converters, labelling."""

import json
import random
from pathlib import Path

import pytest

from toolken.core.base import build_tiny_tokenizer
from toolken.training.convert import convert, convert_funcqa, convert_kamel
from toolken.core.data import IGNORE, DataError, Record, ToolCall, label_records, load_jsonl, save_jsonl

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "toolkengpt"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason=f"benchmark data absent: {BENCH}")
TOOLS = ["add", "remainder", "P5353"]
V = 1000  # vocab size used for toolken ids in the tests


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                            for x in lines))
    return path


GOOD = {"text": "5572 mod 3241=2331.", "calls": [
    {"tool": "remainder", "args": [5572, 3241], "start": 14, "end": 18, "result": "2331"}]}


# ---------------------------------------------------------------- canonical format


def test_round_trip(tmp_path):
    recs = [Record.from_json(GOOD, "x"), Record("no call here", [], source="s")]
    save_jsonl(recs, tmp_path / "a.jsonl")
    assert load_jsonl(tmp_path / "a.jsonl", tools=TOOLS) == recs
    assert not (tmp_path / "a.jsonl.tmp").exists()


def test_blank_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ["", GOOD, "   ", GOOD])
    assert len(load_jsonl(path)) == 2


def bad_call(**change) -> dict:
    call = {**GOOD["calls"][0], **change}
    return {"text": GOOD["text"], "calls": [{k: v for k, v in call.items() if v != "DROP"}]}


@pytest.mark.parametrize("line, message", [
    ("{not json", "a.jsonl:2: invalid JSON"),
    ("[1, 2]", "a.jsonl:2: expected a JSON object"),
    ({"calls": []}, "a.jsonl:2: field 'text': missing"),
    ({"text": "x"}, "a.jsonl:2: field 'calls': missing"),
    ({"text": 3, "calls": []}, "field 'text': expected str, got int"),
    ({"text": "x", "calls": {}}, "field 'calls': expected list, got dict"),
    ({"text": "x", "calls": [], "extra": 1}, "field 'extra': unknown field; allowed:"),
    (bad_call(tool="DROP"), "field 'calls[0].tool': missing"),
    (bad_call(start="14"), "field 'calls[0].start': expected int, got str"),
    (bad_call(end=True), "field 'calls[0].end': expected int, got bool"),
    (bad_call(args="5572"), "field 'calls[0].args': expected list or dict, got str"),
    (bad_call(end=80), "field 'calls[0].end': span 14..80 is outside the text (length 19)"),
    (bad_call(start=18), "field 'calls[0].end': span 18..18 is empty"),
    (bad_call(start=-1), "span -1..18 is outside the text"),
    (bad_call(start=13), "field 'calls[0].result': text[13:18] is '=2331' but result is '2331'"),
    (bad_call(tool="modulo"), "a.jsonl:2: field 'calls[0].tool': unknown tool 'modulo'; "
                              "allowed (3): add, remainder, P5353"),
])
def test_load_errors(tmp_path, line, message):
    path = write_lines(tmp_path / "a.jsonl", [GOOD, line])
    with pytest.raises(DataError) as err:
        load_jsonl(path, tools=TOOLS)
    assert message in str(err.value)


def test_overlapping_spans(tmp_path):
    call = GOOD["calls"][0]
    rec = {"text": GOOD["text"], "calls": [call, {**call, "start": 15, "result": "331"}]}
    with pytest.raises(DataError, match=r"a.jsonl:1: field 'calls\[1\].start': span 15..18 "
                                        r"overlaps calls\[0\] span 14..18"):
        load_jsonl(write_lines(tmp_path / "a.jsonl", [rec]))


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="e.jsonl: no records"):
        load_jsonl(tmp_path / "e.jsonl")


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="valid formats: canonical, toolkengpt-funcqa"):
        convert(tmp_path / "x", "gsm8k")


# ---------------------------------------------------------------- converters, small files


def test_funcqa_small(tmp_path):
    data = [
        {"text": "Q: 7 mod 5?\nA: 7 mod 5=2.", "tar_eq": ["<remainder>(7,5)=2<eoe>"],
         "tar_number": ["2"]},
        {"text": "A: no tool", "tar_eq": [], "tar_number": []},
        {"text": "A: 12+30 is 42.", "tar_eq": ["<add>(12, 30)=43<eoe>"],
         "tar_number": ["43"]},  # not in the text
        {"text": "Q: 2 and 8? A: 2^3 = 8, and 10-3 = 7", "tar_eq":
            ["<power>(2, 3) = 8<eoe>", "<subtract>(10,3)=7<eoe>"], "tar_number": [" 8", "7"]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(data))
    conv = convert(tmp_path / "train.json", "toolkengpt-funcqa")
    assert conv.total == 4 and len(conv.records) == 3
    assert [(p.index, p.detail) for p in conv.problems] == [(2, "43")]
    first, empty, two = conv.records
    assert first.calls == [ToolCall("remainder", 23, 24, "2", [7, 5])]
    assert empty.calls == []
    assert [(c.tool, c.result, c.args) for c in two.calls] == [("power", "8", [2, 3]),
                                                               ("subtract", "7", [10, 3])]
    assert two.calls[0].start == two.text.index("= 8") + 2
    summary = conv.summary()
    assert "converted 3/4 records, 3 calls (1 records without a call" in summary
    assert "1 x result not found as a whole number in the text (records 2)" in summary


def test_kamel_small(tmp_path):
    data = [
        {"text": "Is Nike owned by Nike Inc? No, Nike is owned by Phil Knight.",
         "call": ['<f>P127("Nike")="Phil Knight"</f>']},
        {"text": "Toys \"R\" Us closed in 2018; it opened in 1948.",
         "call": ['<f>P576("Toys \\"R\\" Us")="2018"</f>',
                  '<f>P571("Toys \\"R\\" Us")="1948"</f>']},
        {"text": "In 2019 the Bucks played at FISERV FORUM, and Boston at TD Garden.",
         "call": ['<f>P115(2019, "Bucks")="Fiserv Forum"</f>'
                  '<f>P115(2019, "Celtics")="TD Garden"</f>']},  # two calls in one string
        {"text": "A blender's role as a kitchen aid.",
         "call": ['<f>P2868("blender")="P2868 as a kitchen aid"</f>']},
        {"text": "Unparsable call", "call": ["P1(x)=y"]},
    ]
    (tmp_path / "k.json").write_text(json.dumps(data))
    conv = convert_kamel(tmp_path / "k.json")
    assert len(conv.records) + len(conv.problems) == conv.total == 5
    assert [p.index for p in conv.problems] == [3, 4]
    assert "relation id" in conv.problems[0].reason
    nike, toys, bucks = conv.records
    assert nike.calls == [ToolCall("P127", 48, 59, "Phil Knight", ["Nike"])]
    assert [(c.tool, c.result, c.args) for c in toys.calls] == [
        ("P576", "2018", ['Toys "R" Us']), ("P571", "1948", ['Toys "R" Us'])]
    assert [(c.result, c.args) for c in bucks.calls] == [("FISERV FORUM", [2019, "Bucks"]),
                                                         ("TD Garden", [2019, "Celtics"])]
    for r in conv.records:
        assert all(r.text[c.start:c.end] == c.result for c in r.calls)


def test_wrong_source_format(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps([{"text": "x", "call": []}]))
    with pytest.raises(DataError, match="record 0: field 'tar_eq': missing"):
        convert(tmp_path / "k.json", "toolkengpt-funcqa")


# ---------------------------------------------------------------- converters, released data


@needs_bench
def test_funcqa_released():
    conv = convert_funcqa(BENCH / "funcqa" / "train.json")
    assert conv.total == 650 and len(conv.records) + len(conv.problems) == 650
    assert len(conv.records) == 649 and [p.index for p in conv.problems] == [618]
    assert sum(not r.calls for r in conv.records) == 3
    assert sum(len(r.calls) for r in conv.records) == 646
    for r in conv.records:
        assert all(r.text[c.start:c.end] == c.result for c in r.calls)
    first = conv.records[0].calls
    assert [(c.tool, c.args, c.result) for c in first] == [("remainder", [5572, 3241], "2331")]
    assert "without a call" in conv.summary()


@needs_bench
def test_kamel_released():
    conv = convert_kamel(BENCH / "kamel" / "train_clean.json")
    assert conv.total == 9096 and len(conv.records) + len(conv.problems) == 9096
    assert len(conv.problems) < 30 and all(p.reason for p in conv.problems)
    for r in conv.records:
        assert r.calls and all(r.text[c.start:c.end] == c.result for c in r.calls)
    assert conv.records[0].calls[0].result == "District 1011"


# ---------------------------------------------------------------- labelling


def reference_labels(rec: Record, vocab: dict, only: bool, max_length: int):
    """Plain reference for a character tokenizer (one token per character, no BOS);
    None where the record must be skipped."""
    ids = [vocab[ch] for ch in rec.text]
    labels = [IGNORE] * len(ids) if only else ids[1:] + [IGNORE]
    prev_end = 0
    for c in sorted(rec.calls, key=lambda c: c.start):
        first = c.start
        if c.start - 1 >= prev_end and rec.text[c.start - 1] == " ":
            first = c.start - 1  # the space before a result is the result's first token
        if first == 0 or c.end > max_length:
            return None
        labels[first - 1] = V + TOOLS.index(c.tool)
        for t in range(first, c.end - 1):
            labels[t] = IGNORE
        prev_end = c.end
    if len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length - 1] + [IGNORE]
    return ids, labels


def random_record(rng: random.Random) -> Record:
    text = "".join(rng.choice("ab c1 2=.") for _ in range(rng.randint(2, 60)))
    cuts = sorted(rng.sample(range(1, len(text) + 1), k=min(len(text), 2 * rng.randint(0, 3))))
    calls = [ToolCall(rng.choice(TOOLS), s, e, text[s:e])
             for s, e in zip(cuts[::2], cuts[1::2])]
    return Record(text, calls)


@pytest.mark.parametrize("only, max_length", [(False, 100), (True, 100), (False, 30)])
def test_labels_match_reference(tok, only, max_length):
    rng = random.Random(max_length)
    records = [random_record(rng) for _ in range(300)]
    out = label_records(records, tok, TOOLS, V, max_length, only_toolken_positions=only)
    want = {i: ref for i, r in enumerate(records)
            if (ref := reference_labels(r, tok.get_vocab(), only, max_length))}
    assert out.record_index == sorted(want)
    assert [p.index for p in out.report.skipped] == sorted(set(range(300)) - set(want))
    for i, ids, labels in zip(out.record_index, out.input_ids, out.labels):
        assert (ids, labels) == want[i]
    assert out.report.toolken_labels == out.report.calls
    assert out.report.truncated == sum(len(records[i].text) > max_length for i in want)


def test_toolken_position_and_whitespace(tok):
    rec = Record("7 mod 5 is 2.", [ToolCall("remainder", 11, 12, "2")])
    out = label_records([rec], tok, TOOLS, V, max_length=64)
    labels = out.labels[0]
    assert labels[9] == V + 1  # position of "s": the next token is the space before "2"
    assert labels[10] == IGNORE and labels[11] == tok.convert_tokens_to_ids(".")
    assert labels[-1] == IGNORE and len(labels) == len(out.input_ids[0]) == len(rec.text)
    assert "1 toolken" in out.report.summary()


def test_bos_is_kept():
    from tokenizers.processors import TemplateProcessing

    tok = build_tiny_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    rec = Record("2+2=4", [ToolCall("add", 4, 5, "4")])
    out = label_records([rec], tok, TOOLS, V, max_length=64)
    assert out.input_ids[0][0] == 1 and len(out.input_ids[0]) == 6
    assert out.labels[0][4] == V  # position of "=" predicts the toolken for "4"
    assert out.labels[0][5] == IGNORE


def test_truncate_and_skip(tok):
    early = Record("x=1" + "." * 50, [ToolCall("add", 2, 3, "1")])
    late = Record("." * 50 + "x=1", [ToolCall("add", 52, 53, "1")])
    at_start = Record("1 is the answer", [ToolCall("add", 0, 1, "1")])
    out = label_records([early, late, at_start], tok, TOOLS, V, max_length=20)
    assert out.record_index == [0] and len(out.input_ids[0]) == len(out.labels[0]) == 20
    assert out.labels[0][1] == V and out.labels[0][-1] == IGNORE
    rep = out.report
    assert rep.truncated == 1 and [p.index for p in rep.skipped] == [1, 2]
    assert "ends after max_length" in rep.skipped[0].reason
    assert "first token" in rep.skipped[1].reason
    assert "1/3 records (1 truncated, 2 skipped)" in rep.summary()


def test_unknown_tool_in_labelling(tok):
    rec = Record("1+1=2", [ToolCall("plus", 4, 5, "2")])
    with pytest.raises(DataError, match=r"record 1: field 'calls\[0\].tool': unknown tool 'plus'; allowed"):
        label_records([Record("ab", []), rec], tok, TOOLS, V, max_length=8)


def test_duplicate_tools(tok):
    with pytest.raises(DataError, match="tools must be distinct; repeated: add"):
        label_records([Record("ab", [])], tok, ["add", "sub", "add"], V, max_length=8)


@pytest.mark.real_model
def test_whitespace_rule_real_tokenizer():
    from toolken.core.base import load_base

    tokenizer = load_base("SmolLM2-135M-Instruct").tokenizer
    text = "For example, the school district for FGH Elementary School is District 1011."
    start = text.index("District 1011")
    rec = Record(text, [ToolCall("P5353", start, start + 13, "District 1011", ["FGH"])])
    out = label_records([rec], tokenizer, TOOLS, len(tokenizer), max_length=64)
    ids, labels = out.input_ids[0], out.labels[0]
    t = labels.index(len(tokenizer) + 2)
    assert tokenizer.convert_ids_to_tokens(ids[t + 1]) == "ĠDistrict"
    assert tokenizer.decode(ids[:t + 1]).endswith(" is")
    dot = len(ids) - 1  # positions t+1 .. dot-2 predict the rest of " District 1011"
    assert labels[t + 1:dot - 1] == [IGNORE] * (dot - t - 2) and dot - t - 2 >= 4
    assert labels[dot - 1] == ids[dot] == tokenizer.convert_tokens_to_ids(".")




# ---------------------------------------------------------------- context (prompt layout)


def test_context_round_trip_and_bad_type(tmp_path):
    rec = Record.from_json(GOOD | {"context": "Q: 1 mod 1?\nA: 0.\n\n"}, "x")
    assert rec.context == "Q: 1 mod 1?\nA: 0.\n\n"
    save_jsonl([rec], tmp_path / "c.jsonl")
    assert load_jsonl(tmp_path / "c.jsonl") == [rec]
    with pytest.raises(DataError, match=r"x: field 'context': expected str, got int"):
        Record.from_json(GOOD | {"context": 3}, "x")


@pytest.mark.parametrize("only", [False, True])
def test_context_is_read_but_not_labelled(tok, only):
    """Against the plain reference on context + text: the same ids, and the same labels from
    the last context position on (it predicts the text's first token); none before it."""
    rng = random.Random(7)
    records = [random_record(rng) for _ in range(200)]
    for r in records:
        r.context = "".join(rng.choice("ab c1=") for _ in range(rng.randint(1, 20))) + "."
    out = label_records(records, tok, TOOLS, V, 200, only_toolken_positions=only)
    plain = [Record(r.context + r.text, [ToolCall(c.tool, c.start + len(r.context),
                                                  c.end + len(r.context), c.result)
                                         for c in r.calls]) for r in records]
    assert out.record_index == list(range(200))  # with a context, no result is at position 0
    for i, ids, labels in zip(out.record_index, out.input_ids, out.labels):
        ref_ids, ref_labels = reference_labels(plain[i], tok.get_vocab(), only, 200)
        c = len(records[i].context)
        assert ids == ref_ids
        assert labels[:c - 1] == [IGNORE] * (c - 1) and labels[c - 1:] == ref_labels[c - 1:]
    assert out.report.toolken_labels == out.report.calls == sum(len(r.calls) for r in records)
