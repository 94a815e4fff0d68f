"""Training on the tiny model: files, falling loss, resume, NaN, new rows only, cache, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from toolken.training.config import ConfigError, load_config
from toolken.training.trainer import TrainingError, train
from conftest import REPO


def tiny_cfg(tmp_path, **over):
    base = {"output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
            "train_file": str(REPO / "data/tiny/train.jsonl")}
    base.update(over)
    return load_config(REPO / "configs" / "tiny.yaml", base)


def test_full_run_writes_checkpoint_and_loss_falls(tmp_path, capsys):
    res = train(tiny_cfg(tmp_path, epochs=6))
    out = tmp_path / "out"
    assert (out / "toolken_config.json").exists() and (out / "toolken_model.safetensors").exists()
    assert (out / "training" / "loss_curve.png").stat().st_size > 1000
    lines = [json.loads(x) for x in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    assert lines[-1]["dev_loss"] < lines[0]["dev_loss"]
    assert all(x["epoch_seconds"] > 0 for x in lines)
    assert res.history[-1]["curve"][-1][1] < res.history[0]["curve"][0][1]
    printed = capsys.readouterr().out
    assert "trainable params: 48 || all params:" in printed
    assert res.model.tools == ["add", "subtract", "multiply"]


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    full = train(tiny_cfg(tmp_path / "a", epochs=4))
    import toolken.training.trainer as T

    calls = {"n": 0}
    real = T._write_logs

    def crash_after_two(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "_write_logs", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path / "b", epochs=4))
    monkeypatch.setattr(T, "_write_logs", real)
    resumed = train(tiny_cfg(tmp_path / "b", epochs=4))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    torch.testing.assert_close(resumed.model.head.weight, full.model.head.weight, rtol=0, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import toolken.training.trainer as T

    train(tiny_cfg(tmp_path, epochs=1))
    before = (tmp_path / "out" / "toolken_model.safetensors").read_bytes()
    loss = T.toolken_loss
    monkeypatch.setattr(T, "toolken_loss", lambda *a: loss(*a) * float("nan"))
    with pytest.raises(TrainingError, match="NaN"):
        train(tiny_cfg(tmp_path, epochs=2, resume=False))
    assert (tmp_path / "out" / "toolken_model.safetensors").read_bytes() == before


def test_train_only_new_rows_leaves_old_rows_bit_identical(tmp_path):
    _two_tool_file(tmp_path)
    first = train(tiny_cfg(tmp_path, tools=["add", "subtract"], epochs=1,
                           train_file=str(tmp_path / "two.jsonl")))
    old = load_file(str(tmp_path / "out" / "toolken_model.safetensors"))["weight"]
    res = train(tiny_cfg(tmp_path, output_dir=str(tmp_path / "out2"), resume_from=str(tmp_path / "out"),
                         train_only="new", tools=["add", "subtract", "multiply"], epochs=2))
    new = load_file(str(tmp_path / "out2" / "toolken_model.safetensors"))["weight"]
    assert res.model.tools == ["add", "subtract", "multiply"]
    assert torch.equal(new[:2], old)  # bit-identical
    assert not torch.equal(new[2], res.model.head.weight.new_zeros(new.shape[1]))
    assert first.model.tools == ["add", "subtract"]


def test_resuming_keeps_the_demo_pool_and_the_calibrated_bias(tmp_path):
    """train_only=new from a calibrated checkpoint: the old tools' retrieved demos stay in the
    pool (the new texts join them, no text twice) and the fitted toolken_bias stays, while a
    key the recipe's generation section gives replaces its field."""
    from toolken.core.data import load_jsonl
    from toolken.generation.config import GenerationConfig
    from toolken.model import ToolkenModel

    _two_tool_file(tmp_path)
    train(tiny_cfg(tmp_path, tools=["add", "subtract"], epochs=1, train_file=str(tmp_path / "two.jsonl")))
    cfg = GenerationConfig.load(tmp_path / "out").replace(toolken_bias=-0.75)
    cfg.save(tmp_path / "out")  # what `toolken calibrate` writes
    old_pool = [r.text for r in load_jsonl(tmp_path / "out" / "toolken_demos.jsonl")]
    train(tiny_cfg(tmp_path, output_dir=str(tmp_path / "out2"), resume_from=str(tmp_path / "out"),
                   train_only="new", tools=["add", "subtract", "multiply"], epochs=1,
                   generation={"arg_demos": 2}))
    m = ToolkenModel.from_pretrained(tmp_path / "out2")
    pool = [r.text for r in m.demo_records]
    assert pool[:len(old_pool)] == old_pool and len(set(pool)) == len(pool)
    assert any(c.tool == "multiply" for r in m.demo_records for c in r.calls)
    assert m.generation_config.toolken_bias == -0.75 and m.generation_config.arg_demos == 2


def _two_tool_file(tmp_path) -> None:
    lines = (REPO / "data/tiny/train.jsonl").read_text().splitlines()
    keep = [x for x in lines if '"multiply"' not in x]
    (tmp_path / "two.jsonl").write_text("\n".join(keep) + "\n")


def test_feature_cache_reused_rebuilt_and_repaired(tmp_path, capsys):
    train(tiny_cfg(tmp_path, epochs=1))
    caches = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]  # not locks
    assert len(caches) == 1
    capsys.readouterr()
    train(tiny_cfg(tmp_path, epochs=1, resume=False))
    assert "reusing feature cache" in capsys.readouterr().out
    (caches[0] / "meta.json").write_text("{corrupt")  # a crash while writing the cache
    train(tiny_cfg(tmp_path, epochs=1, resume=False))
    assert "corrupt" in capsys.readouterr().out
    train(tiny_cfg(tmp_path, epochs=1, resume=False, max_length=100))  # labelling changed
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


def test_unknown_config_key_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'epoch'.*valid keys: base_model"):
        tiny_cfg(tmp_path, epoch=3)
    with pytest.raises(ConfigError, match="schedule='cosin' is not one of"):
        tiny_cfg(tmp_path, schedule="cosin")


def test_cli_train_and_help(tmp_path):
    env = {**os.environ, "TOOLKEN_HOME": os.environ.get("TOOLKEN_HOME", str(tmp_path / "home"))}
    cmd = [sys.executable, "-m", "toolken.cli", "train", str(REPO / "configs/tiny.yaml"),
           f"output_dir={tmp_path / 'cli'}", f"cache_dir={tmp_path / 'c'}", "epochs=1",
           f"train_file={REPO / 'data/tiny/train.jsonl'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "best epoch 1" in r.stdout and (tmp_path / "cli" / "toolken_config.json").exists()
    bad = subprocess.run(cmd + ["nonsense=1"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown key(s) ['nonsense']" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("memory_mb", [4096, 0.05])  # the split in memory; streamed (~570 rows)
def test_two_processes_give_the_same_toolkens_as_one(tmp_path, memory_mb):
    one = train(tiny_cfg(tmp_path / "one", epochs=2, batch_size=64, feature_memory_mb=memory_mb))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "train/train_toolkens.py"), str(REPO / "configs/tiny.yaml"),
           f"output_dir={tmp_path / 'two' / 'out'}", f"cache_dir={tmp_path / 'two' / 'cache'}",
           "epochs=2", "batch_size=64", f"train_file={REPO / 'data/tiny/train.jsonl'}",
           f"feature_memory_mb={memory_mb}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    parts = list((tmp_path / "two" / "cache").glob("*/part-*"))
    assert len(parts) == 2  # the feature pass was split across the two processes
    two = load_file(str(tmp_path / "two" / "out" / "toolken_model.safetensors"))["weight"]
    torch.testing.assert_close(two, one.model.head.weight, rtol=1e-5, atol=1e-6)


def test_extra_train_files_are_read_after_train_file(tmp_path, capsys):
    _two_tool_file(tmp_path)
    lines = (REPO / "data/tiny/train.jsonl").read_text().splitlines()
    (tmp_path / "mult.jsonl").write_text("\n".join(x for x in lines if '"multiply"' in x) + "\n")
    extra = [{"file": str(tmp_path / "mult.jsonl"), "data_format": "canonical"}]
    cfg = tiny_cfg(tmp_path, tools=None, epochs=1, train_file=str(tmp_path / "two.jsonl"),
                   extra_train_files=extra)
    from toolken.training.pipeline import load_records

    train_r, dev_r, digest = load_records(cfg, verbose=False)
    assert len(train_r) == len(lines) and dev_r is None
    assert {c.tool for r in train_r[-3:] for c in r.calls} == {"multiply"}
    bare = load_records(tiny_cfg(tmp_path, train_file=str(tmp_path / "two.jsonl")), verbose=False)
    assert digest != bare[2]  # the extra file is part of the feature cache key
    res = train(cfg)  # tools from data: multiply exists only in the extra file
    assert res.model.tools == ["add", "subtract", "multiply"]
    assert "mult.jsonl: converted" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    ("data.jsonl", "must be a list"),
    ([{"path": "x.jsonl"}], r"extra_train_files\[0\].*give a path or"),
    ([{"file": "x.json", "data_format": "jsonl"}], r"extra_train_files\[0\]: data_format='jsonl' is not one of"),
])
def test_bad_extra_train_files_are_clear_errors(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        tiny_cfg(tmp_path, extra_train_files=extra)


def test_train_prompt_reads_texts_in_the_prompt_layout(tmp_path, capsys):
    from toolken.training.pipeline import load_records, prepare_data

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Use the tools.\n\nQ: [QUESTION]\nA:")
    cfg = tiny_cfg(tmp_path, epochs=1, train_prompt=str(prompt))
    res = train(cfg)
    assert res.history[0]["dev_f1"] >= 0

    base = res.model.base
    train_r, dev_r, digest = load_records(cfg, verbose=False)
    data = prepare_data(cfg, base, res.model.tools, train_r, dev_r, digest, verbose=False)
    assert all(r.context == "Use the tools.\n\n" for r in data.records)
    bare = prepare_data(tiny_cfg(tmp_path), base, res.model.tools, train_r, dev_r, digest, verbose=False)
    n = len(base.tokenizer("Use the tools.\n\n", add_special_tokens=False)["input_ids"])
    for a, b in zip(data.labelled.input_ids, bare.labelled.input_ids):
        assert len(a) == len(b) + n
    capsys.readouterr()
    train(tiny_cfg(tmp_path, epochs=1, resume=False))  # the bare layout: another feature cache
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


@pytest.mark.parametrize("over, match", [
    ({"train_prompt_demos": 2}, "train_prompt_demos needs train_prompt"),
    ({"train_prompt": "p.txt", "train_prompt_demos": -1}, "must be an int >= 0"),
    ({"train_prompt_demo_pick": "bm25"}, "train_prompt_demo_pick=.bm25. is not one of")])
def test_bad_train_prompt_settings(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        tiny_cfg(tmp_path, **over)


def test_replay_reads_the_checkpoints_texts_with_the_new_ones(tmp_path, capsys):
    """replay=N: N texts per old tool from the resumed checkpoint's demo pool are trained on
    with the new data (old rows still bit-identical under train_only=new); refused without
    resume_from or with a bad value."""
    from toolken.core.data import load_jsonl
    from toolken.training.pipeline import replay_records

    _two_tool_file(tmp_path)
    train(tiny_cfg(tmp_path, tools=["add", "subtract"], epochs=1, train_file=str(tmp_path / "two.jsonl")))
    pool = load_jsonl(tmp_path / "out" / "toolken_demos.jsonl")
    picked = replay_records(pool, ["add", "subtract"], 2, seed=0)
    per_tool = {t: sum(any(c.tool == t for c in r.calls) for r in picked) for t in ("add", "subtract")}
    assert all(1 <= n <= 3 for n in per_tool.values()) and len({r.text for r in picked}) == len(picked)
    assert replay_records(pool, ["add"], 0, 0) == [] and replay_records(None, ["add"], 2, 0) == []
    old = load_file(str(tmp_path / "out" / "toolken_model.safetensors"))["weight"]
    capsys.readouterr()
    res = train(tiny_cfg(tmp_path, output_dir=str(tmp_path / "out2"), resume_from=str(tmp_path / "out"),
                         train_only="new", tools=["add", "subtract", "multiply"], epochs=1, replay=2))
    assert "toolken: replay:" in capsys.readouterr().out
    assert torch.equal(load_file(str(tmp_path / "out2" / "toolken_model.safetensors"))["weight"][:2], old)
    assert res.model.tools == ["add", "subtract", "multiply"]
    for bad, msg in (({"replay": 2}, "needs resume_from"), ({"replay": -1}, "must be an int >= 0")):
        with pytest.raises(ConfigError, match=msg):
            tiny_cfg(tmp_path, **bad)
