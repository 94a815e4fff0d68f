"""APIBench's torchhub_train.json against the real Torch Hub catalogue (toolken.training.convert),
and the config-driven path (configs/apibench.yaml -> pipeline.load_records)."""

import json
import warnings
from collections import Counter

import pytest

from conftest import REPO, shared_path
from toolken.tools.catalog import load_catalog
from toolken.training.config import load_config
from toolken.training.convert import convert, convert_apibench
from toolken.core.data import DataError, Record


@pytest.fixture(scope="module")
def train_file():
    return shared_path("apibench", "apibench", "torchhub_train.json")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(shared_path("apibench", "api", "torchhub_api.jsonl"), on_duplicate="suffix")


def test_real_file_converts_with_valid_spans(train_file, catalog):
    conv = convert(train_file, "apibench", catalog)
    assert (conv.total, len(conv.records), conv.problems, conv.notes) == (837, 837, [], [])
    assert len({r.calls[0].tool for r in conv.records}) == 94  # every Torch Hub API has data
    raw = [json.loads(line) for line in train_file.read_text().splitlines() if line.strip()]
    for i, (r, ex) in enumerate(zip(conv.records, raw)):
        Record.from_json(r.to_json(), f"record {i}")  # span inside the text, equal to result
        (c,) = r.calls
        assert r.source == f"apibench#{i}"
        assert r.text.startswith("###Instruction: ")
        assert r.text[:c.start].endswith("\n###Output: <<<api_call>>>: ")  # one space, then it
        assert r.text[c.start:c.end] == c.result == ex["api_call"].strip() == r.text[c.start:]
        assert " ".join(catalog[c.tool].meta["api_call"].split()) == " ".join(c.result.split())
    assert Counter(r.calls[0].tool for r in conv.records).most_common(1)[0][1] < 60


def test_problems_are_reported_with_indices(train_file, catalog, tmp_path):
    lines = [line for line in train_file.read_text().splitlines() if line.strip()][:10]
    bad = json.loads(lines[3])
    bad["api_call"] = "torch.hub.load('nobody/nothing', 'none')"
    lines[3] = json.dumps(bad)
    lines[5] = "{not json"
    no_instr = json.loads(lines[7])
    no_instr["code"] = "###Output: nothing"
    lines[7] = json.dumps(no_instr)
    path = tmp_path / "train.json"
    path.write_text("\n".join(lines) + "\n")
    conv = convert_apibench(path, catalog)
    assert (conv.total, len(conv.records)) == (10, 7)
    assert [(p.index, p.reason) for p in conv.problems] == [
        (3, "api_call matches no catalogue tool"), (5, "not a JSON object"),
        (7, "no instruction in 'code' or no 'api_call'")]
    assert "torch.hub.load('nobody/nothing', 'none')" == conv.problems[0].detail
    assert "line 6" in conv.problems[1].detail
    assert "1 x api_call matches no catalogue tool (records 3)" in conv.summary()


def test_shared_api_call_uses_the_first_tool_and_counts(train_file, tmp_path):
    api = shared_path("apibench", "api", "torchhub_api.jsonl")
    first = json.loads(api.read_text().splitlines()[0])
    copy = tmp_path / "torchhub_api.jsonl"
    copy.write_text(api.read_text() + json.dumps({**first, "api_name": "copy"}) + "\n")
    cat = load_catalog(copy, on_duplicate="suffix")
    conv = convert_apibench(train_file, cat)
    same = " ".join(first["api_call"].split())
    n = sum(" ".join(r.calls[0].result.split()) == same for r in conv.records)
    assert n > 0 and conv.notes == [f"{n} records' api_call belongs to several catalogue tools; "
                                    f"the first was used"]
    assert "torchhub.copy" not in {r.calls[0].tool for r in conv.records}


def test_needs_a_catalogue(train_file):
    with pytest.raises(DataError, match="needs a catalogue of tools with meta\\['api_call'\\]"):
        convert(train_file, "apibench")


def test_config_path_loads_the_catalogue(train_file, monkeypatch):
    monkeypatch.chdir(REPO)
    for name in ("huggingface_api.jsonl", "tensorflowhub_api.jsonl"):
        shared_path("apibench", "api", name)
    from toolken.training.pipeline import load_records

    cfg = load_config(REPO / "configs" / "apibench.yaml", {"extra_train_files": []})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the catalogue's repeated api_names
        train, dev, digest = load_records(cfg, verbose=False)
    assert len(train) == 837 and dev is None and len(digest) == 16
    assert {r.calls[0].tool.split(".")[0] for r in train} == {"torchhub"}


def test_make_apibench_dev_writes_the_held_out_torchhub_records(train_file, tmp_path, monkeypatch):
    """The script's split is the training run's: the same files, order, fraction and seed."""
    import sys

    from toolken.training.pipeline import dev_indices

    lines = [x for x in train_file.read_text().splitlines() if x.strip()][:12]
    (tmp_path / "th.json").write_text("\n".join(lines) + "\n")
    th = shared_path("apibench", "api", "torchhub_api.jsonl")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "torchhub_api.jsonl").write_text(th.read_text())
    for name in ("huggingface_api.jsonl", "tensorflowhub_api.jsonl"):
        (tmp_path / "api" / name).write_text("")
    cfg = {"train_file": str(tmp_path / "th.json"), "data_format": "apibench", "seed": 3,
           "dev_fraction": 0.5, "tools": str(REPO / "tools" / "apibench.py"),
           "tool_options": {"api_dir": str(tmp_path / "api"), "local_models": {}}}
    synth = Record("Q: x?\nA: y", [], "synth:template:x")
    (tmp_path / "synth.jsonl").write_text("".join(json.dumps(synth.to_json()) + "\n" for _ in range(8)))
    cfg["extra_train_files"] = [str(tmp_path / "synth.jsonl")]
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    out = tmp_path / "dev.json"
    monkeypatch.setattr(sys, "argv", ["x", "--config", str(tmp_path / "c.yaml"), "--out", str(out)])
    monkeypatch.syspath_prepend(str(REPO / "data"))
    import make_apibench_dev

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_apibench_dev.main()
    held = sorted(i for i in dev_indices(20, 0.5, 3).tolist() if i < 12)
    assert [json.loads(x) for x in out.read_text().splitlines()] == [json.loads(lines[i]) for i in held]
