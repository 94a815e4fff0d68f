"""`toolken eval` end to end on the tiny model: every benchmark x method writes the contract."""

import json

import pytest

from toolken.evaluation.run import METHODS, EvalConfig, evaluate, summary
from toolken.generation.config import GenerationConfig
from toolken.model import ToolkenModel
from toolken.tools.registry import load_pack
from conftest import REPO, SHARED, shared_path

DATA = {"funcqa-oh": ("toolkengpt", "funcqa", "format_sample_oh.json"),
        "funcqa-mh": ("toolkengpt", "funcqa", "format_sample_mh.json"),
        "gsm8k-xl": ("toolkengpt", "gsm8k-xl", "format_sample_test.json"),
        "kamel": ("toolkengpt", "kamel", "dev_first_30.json"),
        "apibench-torchhub": ("apibench", "apibench", "torchhub_train.json"),
        "apibench-huggingface": ("apibench", "format_sample_huggingface_eval.json")}
PACKS = {"funcqa-oh": "funcqa", "funcqa-mh": "funcqa", "gsm8k-xl": "funcqa", "kamel": "kamel"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_base):
    shared_path("toolkengpt", "kamel", "api_desc.json")  # the packs read the papers' files
    out = {}
    for name in ("funcqa", "kamel"):
        pack = str(REPO / "tools" / f"{name}.py")
        m = ToolkenModel(tiny_base, [])
        m.add_tools(load_pack(pack).names)
        m.extra_config = {"training": {"config": {"tools": pack}}}
        path = tmp_path_factory.mktemp(name)
        m.save_pretrained(path)
        out[name] = str(path)
    return out


CASES = [(b, m) for b, ms in METHODS.items() for m in ms
         if b in DATA and not (b.startswith("apibench") and m == "toolken")]


@pytest.mark.parametrize("bench,method", CASES)
def test_every_benchmark_and_method_writes_the_contract(bench, method, checkpoints, tmp_path):
    data = shared_path(*DATA[bench])
    pack = PACKS.get(bench)
    cfg = EvalConfig(bench=bench, data=str(data), method=method, limit=2, generation={"max_new_tokens": 6},
                     base_model="tiny-random-llama", out=str(tmp_path / "r.json"), shared=str(SHARED),
                     toolkens=checkpoints[pack] if method == "toolken" else None,
                     tools=str(REPO / "tools" / f"{pack}.py") if pack and method in ("icl", "toolken") else None)
    report = evaluate(cfg)
    written = json.loads((tmp_path / "r.json").read_text())
    assert list(written)[:10] == ["benchmark", "method", "n", "metrics", "base_model", "toolkens",
                                  "config", "predictions", "skipped", "wall_seconds"]
    assert written["n"] == 2 == len(written["predictions"])
    assert set(written["metrics"]) == set(report["metrics"]) and written["metrics"]
    for p in written["predictions"]:
        assert {"id", "prediction", "gold", "correct", "calls"} <= set(p)
    assert (written["toolkens"] is not None) == (method == "toolken")


def test_method_that_does_not_apply_is_refused():
    with pytest.raises(ValueError, match="does not apply to kamel"):
        evaluate(EvalConfig(bench="kamel", data="x", method="cot"))
    with pytest.raises(ValueError, match="unknown benchmark"):
        evaluate(EvalConfig(bench="mmlu", data="x"))


def test_eval_rerank_flag_records_decisions(tiny_base, tmp_path):
    from toolken.cli import main

    data = shared_path(*DATA["funcqa-oh"])
    pack = str(REPO / "tools" / "funcqa.py")
    m = ToolkenModel(tiny_base, [], generation_config=GenerationConfig(toolken_bias=1e4))  # a toolken wins at every step
    m.add_tools(load_pack(pack).names)
    m.save_pretrained(tmp_path / "ckpt")
    calls = {}
    for none_bias in ("10000", "-10000"):
        out = tmp_path / f"r{none_bias}.json"
        assert main(["eval", "funcqa-oh", "--data", str(data), "--toolkens", str(tmp_path / "ckpt"),
                     "--tools", pack, "--limit", "2", "--max-new-tokens", "3", "--shared", str(SHARED),
                     "--base-model", "tiny-random-llama", "--rerank-top-k", "2",
                     "--rerank-none-bias", none_bias, "--out", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["config"]["generation"]["rerank_top_k"] == 2
        for p in report["predictions"]:
            assert p["reranks"] and all(len(r["candidates"]) == 2 for r in p["reranks"])
        calls[none_bias] = sum(len(p["calls"]) for p in report["predictions"])
    assert calls["10000"] == 0 and calls["-10000"] > 0


@pytest.mark.parametrize("bench", ["funcqa-mh", "gsm8k-xl"])
def test_stored_prompt_demos_that_do_not_fit_the_template_are_skipped(bench, tiny_base, tmp_path,
                                                                      capsys):
    pack = str(REPO / "tools" / "funcqa.py")
    m = ToolkenModel(tiny_base, [])
    m.add_tools(load_pack(pack).names)
    m.generation_config = GenerationConfig(prompt_demos=4)  # the recipe's stored default
    m.save_pretrained(tmp_path / "ckpt")
    bare = tmp_path / "bare.txt"  # a template with no demo block (the papers' have 4 now read)
    bare.write_text("Answer step by step.\n\nQuestion: [QUESTION]\nAnswer:")
    cfg = EvalConfig(bench=bench, data=str(shared_path(*DATA[bench])), limit=1, tools=pack,
                     generation={"max_new_tokens": 3}, base_model="tiny-random-llama",
                     shared=str(SHARED), toolkens=str(tmp_path / "ckpt"), template=str(bare))
    with pytest.warns(UserWarning, match="prompt_demos=4 skipped"):
        report = evaluate(cfg)
    assert report["n"] == 1 and len(report["config"]["notes"]) == 1
    assert "prompt_demos=4 skipped" in report["config"]["notes"][0]
    assert "prompt_demos=4 skipped" in capsys.readouterr().out


def test_vote_majority_then_greedy_then_earliest():
    from toolken.evaluation.methods import vote

    assert vote([3.0, 4.0, 4.0]) == 1  # the majority, at its first path
    assert vote([3.0, 4.0, 3.0000001, 4.0]) == 0  # 2 vs 2 (6 significant digits): greedy's
    assert vote([None, 5.0, None, 7.0, 7.0]) == 3  # None never wins against a number
    assert vote([None, None]) == 0
    assert vote([1.0, 2.0, 3.0]) == 0  # all different: the greedy one


def test_eval_paths_votes_over_greedy_and_sampled(checkpoints, tmp_path):
    """--paths 3: every record keeps 3 paths, the first one the plain greedy run's text, and
    the record's answer is the voted path's."""
    from toolken.cli import main
    from toolken.evaluation.methods import vote
    from toolken.evaluation.metrics import final_number

    data = str(shared_path(*DATA["funcqa-oh"]))
    common = ["eval", "funcqa-oh", "--data", data, "--toolkens", checkpoints["funcqa"], "--tools",
              str(REPO / "tools" / "funcqa.py"), "--limit", "3", "--max-new-tokens", "8",
              "--shared", str(SHARED), "--base-model", "tiny-random-llama"]
    assert main(common + ["--out", str(tmp_path / "g.json")]) == 0
    assert main(common + ["--paths", "3", "--path-temperature", "1.5", "--out", str(tmp_path / "p.json")]) == 0
    greedy = json.loads((tmp_path / "g.json").read_text())["predictions"]
    voted = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert len(voted) == 3
    for g, v in zip(greedy, voted):
        assert len(v["paths"]) == 3 and v["paths"][0]["text"] == g["text"]
        win = v["paths"][vote([final_number(p["text"]) for p in v["paths"]])]
        assert v["text"] == win["text"] and v["number"] == final_number(win["text"])
    sampled = [p["text"] for v in voted for p in v["paths"][1:]]
    assert any(t not in {g["text"] for g in greedy} for t in sampled)  # sampling did sample


def test_paths_is_checked():
    with pytest.raises(ValueError, match="--paths 0"):
        evaluate(EvalConfig(bench="funcqa-oh", data="x", toolkens="y", generation={"paths": 0}))
    with pytest.raises(ValueError, match="applies to funcqa-oh, funcqa-mh, gsm8k-xl"):
        evaluate(EvalConfig(bench="kamel", data="x", toolkens="y", generation={"paths": 3}))
    with pytest.raises(ValueError, match="--path-temperature 0"):
        evaluate(EvalConfig(bench="funcqa-oh", data="x", toolkens="y", generation={"path_temperature": 0}))


def test_stored_paths_are_the_default_and_skipped_where_they_do_not_apply(checkpoints, tmp_path, capsys):
    """A checkpoint whose generation_config.json stores paths: 2 is evaluated with 2 paths on
    funcqa-oh without --paths (the same records as --paths 2 on the plain checkpoint); on
    kamel the stored default does not apply: a note, and the greedy run."""
    import shutil

    from toolken.cli import main

    def with_paths(name):
        stored = tmp_path / name
        shutil.copytree(checkpoints[name], stored)
        gen = json.loads((stored / "generation_config.json").read_text())
        (stored / "generation_config.json").write_text(json.dumps({**gen, "paths": 2}))
        return stored

    stored = with_paths("funcqa")
    data = str(shared_path(*DATA["funcqa-oh"]))
    common = ["eval", "funcqa-oh", "--data", data, "--tools", str(REPO / "tools" / "funcqa.py"),
              "--limit", "2", "--max-new-tokens", "6", "--shared", str(SHARED)]
    assert main(common + ["--toolkens", str(stored), "--out", str(tmp_path / "s.json")]) == 0
    assert "the checkpoint's stored paths" in capsys.readouterr().out
    assert main(common + ["--toolkens", checkpoints["funcqa"], "--paths", "2",
                          "--out", str(tmp_path / "f.json")]) == 0
    by_default = json.loads((tmp_path / "s.json").read_text())["predictions"]
    by_flag = json.loads((tmp_path / "f.json").read_text())["predictions"]
    assert all(len(p["paths"]) == 2 for p in by_default)
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["paths"] == 2 and "[paths 2]" in summary(written)
    assert [p["paths"] for p in by_default] == [p["paths"] for p in by_flag]
    report = evaluate(EvalConfig(bench="kamel", data=str(shared_path(*DATA["kamel"])), limit=1,
                                 toolkens=str(with_paths("kamel")), tools=str(REPO / "tools" / "kamel.py"),
                                 shared=str(SHARED), generation={"max_new_tokens": 4}))
    assert any(n.startswith("paths=2 skipped") for n in report["config"]["notes"])
    assert report["paths"] == 1 and "[paths" not in summary(report)
    assert "paths" not in report["predictions"][0]


def test_eval_only_options_are_not_generate_flags(capsys):
    from toolken.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--paths" not in capsys.readouterr().out
