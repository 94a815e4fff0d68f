"""data/make_apibench_testdev.py: the hand-written APIBench dev sets as `toolken eval` files."""

import subprocess
import sys

import pytest

from toolken.evaluation.api_match import ApiIndex
from toolken.evaluation.loaders import load_benchmark

from conftest import REPO, shared_path

SCRIPT = REPO / "data" / "make_apibench_testdev.py"
CATALOGUES = ("huggingface", "torchhub", "tensorflowhub")


def _run(tmp_path, *extra):
    api_dir = shared_path("apibench", "api", "torchhub_api.jsonl").parent
    return subprocess.run([sys.executable, str(SCRIPT), "--api-dir", str(api_dir), "--out-dir",
                           str(tmp_path / "out"), *extra], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _tsv(path):
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def test_dev_sets_load_as_benchmarks_with_their_documented_gold(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 0, run.stderr
    for catalogue in CATALOGUES:
        source = _tsv(REPO / "data" / "dev" / f"apibench_{catalogue}.tsv")
        examples, skipped = load_benchmark(f"apibench-{catalogue}",
                                           tmp_path / "out" / f"{catalogue}.json")
        assert not skipped and len(examples) == len(source) >= 100
        apis = ApiIndex.from_file(shared_path("apibench", "api", f"{catalogue}_api.jsonl"))
        for ex, (identity, text) in zip(examples, source):
            assert ex.question == text  # the instruction comes back whole
            key = apis.identity(ex.gold["api_call"], ex.gold["api_name"])
            assert key in (identity, "https://tfhub.dev/" + identity)
            assert ex.meta["api_data"] == apis.records[apis.by_key[key][0]]
            assert ex.gold["domain"] == ex.meta["api_data"]["domain"]
        domains = {ex.gold["domain"] for ex in examples}
        assert len(domains) >= {"huggingface": 30, "torchhub": 6, "tensorflowhub": 10}[catalogue]
        assert len({ex.question for ex in examples}) == len(examples)


def test_bad_lines_stop_the_script_naming_file_and_line(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    cases = {"pytorch/vision/resnet5\tClassify photos.": "apibench_torchhub.tsv:2: no torchhub "
             "API has identity 'pytorch/vision/resnet5'; close: pytorch/vision/resnet50",
             "pytorch/vision/resnet50 Classify photos.": "apibench_torchhub.tsv:2: expected",
             "pytorch/vision/resnet18\tLabel my photos.": "apibench_torchhub.tsv:2: instruction "
             "repeats line 1"}
    for line, message in cases.items():
        (dev / "apibench_torchhub.tsv").write_text(
            f"pytorch/vision/resnet50\tLabel my photos.\n{line}\n")
        run = _run(tmp_path, "--dev-dir", str(dev), "--catalogues", "torchhub")
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert not (tmp_path / "out" / "torchhub.json").exists()  # nothing half-written


@pytest.mark.parametrize("suffix, before", [("_b", [""]), ("_c", ["", "_b"])])
def test_later_huggingface_sets_load_with_their_gold(tmp_path, suffix, before):
    """Sets B and C (`--suffix _b`, `_c`): their own files, no API of an earlier set, every
    line resolved."""
    run = _run(tmp_path, "--suffix", suffix, "--catalogues", "huggingface")
    assert run.returncode == 0, run.stderr
    source = _tsv(REPO / "data" / "dev" / f"apibench_huggingface{suffix}.tsv")
    examples, skipped = load_benchmark("apibench-huggingface", tmp_path / "out" / f"huggingface{suffix}.json")
    assert not skipped and len(examples) == len(source) >= 60
    assert [ex.question for ex in examples] == [text for _, text in source]
    for earlier in before:
        used = {identity for identity, _ in _tsv(REPO / "data" / "dev" / f"apibench_huggingface{earlier}.tsv")}
        assert not used & {identity for identity, _ in source}
    assert len({ex.gold["domain"] for ex in examples}) >= 30
