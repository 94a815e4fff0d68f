"""A checkpoint that travels: across dtypes (the base fingerprint is of the stored weights),
with --dtype/--device on every command, from a hub id (no network: a local huggingface_hub
cache built here), and, with its pack's copy and model card, to another directory after the
training files are gone."""

import pytest
import torch

from toolken.core.base import build_tiny, load_base, weight_fingerprint
from toolken.core.checkpoint import CheckpointError
from toolken.model import ToolkenModel
from toolken.training.config import load_config
from toolken.training.trainer import train
from conftest import REPO

PACK = (REPO / "tests" / "assets" / "tiny_pack.py").read_text()  # the tiny recipe's tools


def tiny_train(root, **over):
    """Train the tiny recipe into root/out (a pack of its three tools in root/pack.py)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.py").write_text(PACK)
    cfg = {"output_dir": str(root / "out"), "cache_dir": str(root / "cache"), "epochs": 2,
           "train_file": str(REPO / "data/tiny/train.jsonl"), "tools": str(root / "pack.py")}
    return train(load_config(REPO / "configs" / "tiny.yaml", {**cfg, **over}))


def plain_fingerprint(model) -> str:
    """The reference: the fingerprint of the weights as built, in fp32, no cast."""
    return weight_fingerprint(model)


def test_fingerprint_is_the_same_in_every_dtype(tmp_path):
    model, tok = build_tiny()
    want = plain_fingerprint(model)
    for dtype in ("float32", "bfloat16", "float16"):
        assert load_base("tiny-random-llama", dtype=dtype).fingerprint == want
    # a local HF folder (stored in fp32): loaded in any dtype, the same fingerprint
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    got = {d: load_base(str(tmp_path / "hf"), dtype=d) for d in ("float32", "bfloat16", "float16")}
    assert {b.fingerprint for b in got.values()} == {want}
    assert got["bfloat16"].model.dtype == torch.bfloat16
    # other weights, another fingerprint
    assert plain_fingerprint(build_tiny(seed=1)[0]) != want


def first_call_logits(model, text="3 plus 4 is"):
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    return model(ids)[0][0, -1]


@pytest.mark.parametrize("trained, loaded", [("float32", "bfloat16"), ("bfloat16", "float32")])
def test_checkpoint_loads_and_generates_in_another_dtype(tmp_path, trained, loaded):
    res = tiny_train(tmp_path, dtype=trained)
    assert res.model.base.model.dtype == getattr(torch, trained)
    m = ToolkenModel.from_pretrained(tmp_path / "out", dtype=loaded, tools=tmp_path / "pack.py")
    assert m.base.model.dtype == getattr(torch, loaded) and m.tools == ["add", "subtract", "multiply"]
    assert torch.equal(m.head.weight, res.model.head.weight)  # the head is fp32 either way
    # the same logits up to the base's rounding
    a, b = first_call_logits(res.model), first_call_logits(m)
    torch.testing.assert_close(a, b, rtol=0, atol=0.05 * a.abs().max().item())
    g = m.generate("3 plus 4 is", max_new_tokens=6, toolken_bias=1e4, max_tool_calls=1)
    assert [c.tool for c in g.calls] == [m.tools[int(first_call_logits(m)[m.vocab_size:].argmax())]]
    assert g.calls[0].error is None and g.calls[0].result is not None


def test_other_base_is_still_refused(tmp_path):
    make = ToolkenModel(load_base("tiny-random-llama"), [])
    make.add_tools(["add"])
    make.save_pretrained(tmp_path / "ckpt")
    other_model, tok = build_tiny(seed=1)
    other_model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    for dtype in ("float32", "bfloat16"):
        with pytest.raises(CheckpointError, match="made for base model 'tiny-random-llama'.*fingerprint"):
            ToolkenModel.from_pretrained(tmp_path / "ckpt", base=str(tmp_path / "other"), dtype=dtype)



# ---------------------------------------------------------------- --dtype / --device


def test_every_command_that_loads_a_model_takes_dtype_and_device():
    from toolken.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():
        flags = {o for a in p._actions for o in a.option_strings}
        # export writes weights on the CPU; its --dtype is theirs
        assert ({"--dtype"} if name == "export" else {"--dtype", "--device"}) <= flags, name


@pytest.fixture
def loads(monkeypatch):
    """The (name, dtype, device) of every base model load."""
    import toolken.core.base as B

    seen, real = [], B.load_base

    def spy(name=B.DEFAULT_BASE_MODEL, dtype=None, device=None, **kw):
        seen.append((name, dtype, device))
        return real(name, dtype=dtype, device=device, **kw)

    monkeypatch.setattr(B, "load_base", spy)
    monkeypatch.setattr("toolken.model.load_base", spy)
    return seen


def test_generate_in_bf16_with_flags(tmp_path, loads, capsys):
    import json

    from toolken.cli import main

    (tmp_path / "pack.py").write_text(PACK)
    m = ToolkenModel(load_base("tiny-random-llama"), [])
    m.add_tools(["add", "subtract", "multiply"])
    m.save_pretrained(tmp_path / "ckpt")
    assert main(["generate", "--toolkens", str(tmp_path / "ckpt"), "--tools", str(tmp_path / "pack.py"),
                 "--dtype", "bf16", "--device", "cpu", "--toolken-bias", "10000", "--max-new-tokens", "3",
                 "--max-tool-calls", "1", "--json", "2 and 3?"]) == 0
    assert loads == [("tiny-random-llama", "bf16", "cpu")]
    assert json.loads(capsys.readouterr().out)["calls"][0]["tool"] in m.tools


def test_train_calibrate_eval_synth_pass_dtype_and_device(tmp_path, monkeypatch, loads):
    import toolken.evaluation.run as R
    import toolken.training.calibrate as CAL
    import toolken.training.trainer as T
    from toolken.cli import main

    got = {}

    def record(key):
        def stop(cfg, *rest):
            got[key] = rest[0] if rest else cfg
            raise KeyError(key)  # stop here: not an error main() turns into an exit status
        return stop

    monkeypatch.setattr(T, "train", record("train"))
    monkeypatch.setattr(CAL, "calibrate", record("calibrate"))
    monkeypatch.setattr(R, "evaluate", record("eval"))
    with pytest.raises(KeyError):
        main(["train", str(REPO / "configs/tiny.yaml"), "dtype=fp32", "--dtype", "bf16", "--device", "cpu"])
    assert (got["train"].dtype, got["train"].device) == ("bf16", "cpu")  # the flag wins
    with pytest.raises(KeyError):
        main(["calibrate", "--toolkens", "x", "--dtype", "fp16"])
    assert got["calibrate"] == {"dtype": "fp16"}
    with pytest.raises(KeyError):
        main(["eval", "funcqa-oh", "--data", "x", "--dtype", "bf16", "--device", "cpu"])
    assert (got["eval"].dtype, got["eval"].device) == ("bf16", "cpu")
    (tmp_path / "pack.py").write_text(PACK)
    main(["synth", "--tools", str(tmp_path / "pack.py"), "--per-tool", "1", "--out",
          str(tmp_path / "s.jsonl"), "--method", "model", "--base-model", "tiny-random-llama",
          "--dtype", "bf16", "--device", "cpu"])
    assert loads[-1] == ("tiny-random-llama", "bf16", "cpu")


# ---------------------------------------------------------------- hub ids, no network

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline huggingface_hub cache; put(repo, model, tok) stores a snapshot of main."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def put(repo, model, tok, commit=COMMIT):
        folder = cache / ("models--" + repo.replace("/", "--"))
        model.save_pretrained(folder / "snapshots" / commit)
        tok.save_pretrained(folder / "snapshots" / commit)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit)

    return put


def test_hub_id_loads_from_the_cache_and_records_its_commit(hub_cache, tmp_path, monkeypatch):
    model, tok = build_tiny(seed=3)
    hub_cache("acme/tiny-llama", model, tok)
    base = load_base("acme/tiny-llama", dtype="bf16")
    assert (base.name, base.revision) == ("acme/tiny-llama", COMMIT)
    assert base.fingerprint == plain_fingerprint(model) and base.model.dtype == torch.bfloat16
    m = ToolkenModel(base, [])
    m.add_tools(["add"])
    m.save_pretrained(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path / "hub")  # any directory
    again = ToolkenModel.from_pretrained(tmp_path / "ckpt")  # by the recorded id and commit
    assert (again.base.name, again.base.revision, again.base.fingerprint) == (
        "acme/tiny-llama", COMMIT, base.fingerprint)
    with pytest.raises(OSError, match="'acme/absent'.*not a local folder.*huggingface_hub"):
        load_base("acme/absent")
    res = tiny_train(tmp_path / "t", base_model="acme/tiny-llama")  # a recipe's base_model: too
    assert (res.model.base.revision, res.model.base.fingerprint) == (COMMIT, base.fingerprint)


def test_the_smollm2_hub_id_means_the_hubs_weights(hub_cache):
    with pytest.raises(OSError, match="HuggingFaceTB/SmolLM2-135M-Instruct.*built-in default.*"
                                      "named 'SmolLM2-135M-Instruct'"):
        load_base("HuggingFaceTB/SmolLM2-135M-Instruct")  # not in the cache: not the GGUF either
    model, tok = build_tiny(seed=5)  # stand-in weights under that id
    hub_cache("HuggingFaceTB/SmolLM2-135M-Instruct", model, tok)
    base = load_base("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert base.fingerprint == plain_fingerprint(model) and base.hidden_size == 16


def test_local_folder_is_recorded_by_absolute_path(tmp_path, monkeypatch):
    model, tok = build_tiny(seed=2)
    model.save_pretrained(tmp_path / "mybase")
    tok.save_pretrained(tmp_path / "mybase")
    monkeypatch.chdir(tmp_path)
    m = ToolkenModel(load_base("mybase"), [])
    m.add_tools(["add"])
    m.save_pretrained(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path / "ckpt")
    assert ToolkenModel.from_pretrained(tmp_path / "ckpt").base.name == str(tmp_path / "mybase")


# ---------------------------------------------------------------- the folder: pack copy, card


def test_training_writes_the_pack_copy_and_a_model_card(tmp_path):
    import hashlib
    import json

    res = tiny_train(tmp_path, epochs=3)
    out = tmp_path / "out"
    assert (out / "toolken_tools.py").read_text() == PACK
    cfg = json.loads((out / "toolken_config.json").read_text())
    assert cfg["tool_pack"]["source"] == str((tmp_path / "pack.py").resolve())  # absolute
    assert cfg["tool_pack"]["sha256"] == hashlib.sha256(PACK.encode()).hexdigest()
    assert [e["name"] for e in cfg["manifest"]] == ["add", "subtract", "multiply"]  # the manifest
    assert cfg["manifest"][0]["description"] == "Add two integers."
    card = (out / "README.md").read_text()
    metrics = [json.loads(x) for x in (out / "training/metrics.jsonl").read_text().splitlines()]
    best = max(metrics, key=lambda r: (r["dev_f1"], -r["dev_loss"]))
    assert best == res.best and best["epoch"] == cfg["training"]["best"]["epoch"]
    for want in ("base_model: tiny-random-llama", cfg["base_fingerprint"], "| 0 | `add` | Add two integers. |",
                 "| 2 | `multiply` |", str(REPO / "data/tiny/train.jsonl"), cfg["training"]["data_digest"],
                 f"best epoch {best['epoch']}: dev loss {best['dev_loss']:.4f}",
                 f"F1 {best['dev_f1']:.3f}", "made by `", str(tmp_path / "pack.py"),
                 "--tools checkpoint"):
        assert want in card, want
    assert cfg["training"]["command"] and cfg["training"]["working_directory"]


def test_calibration_and_resave_keep_the_copy_and_update_the_card(tmp_path):
    tiny_train(tmp_path)
    from toolken.training.calibrate import calibrate

    report = calibrate(tmp_path / "out", verbose=False)
    (tmp_path / "pack.py").unlink()  # the copy no longer needs the original
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"calibrated toolken bias {report['bias']:+.4g}" in card
    assert f"differs from the defaults in: `toolken_bias` {report['bias']:+.4g}." in card
    assert (tmp_path / "out" / "toolken_tools.py").read_text() == PACK
    m = ToolkenModel.from_pretrained(tmp_path / "out", tools=tmp_path / "out" / "toolken_tools.py")
    m.save_pretrained(tmp_path / "moved")
    assert (tmp_path / "moved" / "toolken_tools.py").read_text() == PACK
    from toolken.core.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "moved")[0]["tool_pack"]["source"] == str(tmp_path / "pack.py")


def test_model_card_of_a_strange_config_does_not_fail():
    from toolken.core.card import model_card

    for cfg in ({}, {"training": "x", "calibration": [1], "tool_pack": 3, "manifest": [1, {"name": "a"}]},
                {"tools": [f"t{i}" for i in range(120)], "training": {"config": {"extra_train_files": "x"},
                                                                      "best": {"dev_f1": "high"}}}):
        assert model_card(cfg).startswith("---\nlibrary_name: toolken")
    assert "... and 70 more" in model_card({"tools": [f"t{i}" for i in range(120)]})


def test_tools_checkpoint_needs_a_copy(tmp_path, capsys):
    from toolken.cli import main

    m = ToolkenModel(load_base("tiny-random-llama"), [])
    m.add_tools(["add"])
    m.save_pretrained(tmp_path / "ckpt")  # no pack known: no copy
    assert main(["generate", "--toolkens", str(tmp_path / "ckpt"), "--tools", "checkpoint", "x"]) == 2
    assert "holds no copy of its tool pack (toolken_tools.py" in capsys.readouterr().err


def test_attached_pack_is_copied_and_eval_takes_it(tmp_path):
    from toolken.evaluation.run import EvalConfig, load_model

    (tmp_path / "pack.py").write_text(PACK)
    m = ToolkenModel(load_base("tiny-random-llama"), [])
    m.add_tools(["add", "subtract", "multiply"])
    m.attach_tools(str(tmp_path / "pack.py")).save_pretrained(tmp_path / "ckpt")
    (tmp_path / "pack.py").unlink()
    cfg = EvalConfig(bench="funcqa-oh", data="x", toolkens=str(tmp_path / "ckpt"), tools="checkpoint")
    model = load_model(cfg)
    assert model.registry.names == ["add", "subtract", "multiply"]
    assert model.registry["add"].call("2, 3").text == "5"


def test_which_packs_are_copied(tmp_path, monkeypatch):
    from toolken.model import _pack_file

    (tmp_path / "mypack.py").write_text(PACK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert _pack_file("mypack.py") == _pack_file("mypack") == tmp_path / "mypack.py"
    assert _pack_file("toolken.tools.hf_tools") is None  # inside a package: relative imports
    assert _pack_file("toolken") is None and _pack_file("no_such_pack_module") is None


def test_without_tools_the_error_names_the_copy_and_the_source(tmp_path, capsys):
    from toolken.cli import main

    (tmp_path / "pack.py").write_text(PACK)
    m = ToolkenModel(load_base("tiny-random-llama"), [])
    m.add_tools(["add", "subtract", "multiply"])
    m.attach_tools(str(tmp_path / "pack.py")).save_pretrained(tmp_path / "ckpt")
    assert main(["generate", "--toolkens", str(tmp_path / "ckpt"), "x"]) == 2  # never imported
    err = capsys.readouterr().err
    assert f"trained with the pack '{tmp_path / 'pack.py'}'" in err
    assert "--tools checkpoint runs the copy of it saved in" in err


# ---------------------------------------------------------------- another directory, files gone


def test_a_tool_worker_survives_its_directory_being_deleted(tmp_path, monkeypatch):
    import shutil

    from toolken.tools.registry import load_pack
    from toolken.tools.workers import ToolRunner

    (tmp_path / "pack.py").write_text(PACK)
    add = load_pack(tmp_path / "pack.py")["add"]
    runner = ToolRunner("process", workers=1)
    try:
        (tmp_path / "gone").mkdir()
        monkeypatch.chdir(tmp_path / "gone")
        first = runner.run(add.fn, (2, 3), {}, 30.0, name="add", origin=add.origin)
        monkeypatch.chdir(tmp_path)
        shutil.rmtree(tmp_path / "gone")  # the worker's working directory
        again = runner.run(add.fn, (4, 5), {}, 30.0, name="add", origin=add.origin)
        assert (first.status, first.value, again.status, again.value) == ("ok", 5, "ok", 9), again
    finally:
        runner.close()

PROMPTS = ["Q: 12 apples and 30 apples. A: 12*30=", "Q: 7 coins and 5 coins. A: 7+5=", "Q: 9 and 4. A:"]


def generations(model):
    """Greedy, with the checkpoint's generation_config.json (its bias, retrieved argument demos)."""
    out = []
    for p in PROMPTS:
        g = model.generate(p, max_new_tokens=12)
        out.append((g.text, [(c.tool, c.arguments, c.argument_text, c.result, c.error) for c in g.calls],
                    list(g.token_ids)))
    return out


def test_checkpoint_generates_identically_elsewhere_after_the_training_files_are_gone(
        tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from toolken.cli import main

    work = tmp_path / "work"  # the training directory: recipe paths relative to it
    work.mkdir()
    shutil.copy(REPO / "data/tiny/train.jsonl", work / "train.jsonl")
    (work / "pack.py").write_text(PACK)
    monkeypatch.chdir(work)
    gen = {"toolken_bias": 2.0, "max_tool_calls": 2, "arg_demos": 2}  # demos from the pool
    train(load_config(REPO / "configs/tiny.yaml", {"output_dir": "out", "cache_dir": "cache",
                                                     "train_file": "train.jsonl", "tools": "pack.py",
                                                     "epochs": 4, "generation": gen}))
    before = ToolkenModel.from_pretrained("out", tools="pack.py")
    assert before.demo_records and before.generation_config.arg_demos == 2
    want = generations(before)
    assert any(calls for _, calls, _ in want)  # the test covers tool calls
    cli = ["generate", "--json", "--max-new-tokens", "12"]
    assert main([*cli, "--toolkens", "out", "--tools", "pack.py", "12 apples and 30 apples?"]) == 0
    want_cli = json.loads(capsys.readouterr().out.splitlines()[-1])

    shutil.move(work / "out", tmp_path / "moved")  # the checkpoint moves; the rest is deleted
    shutil.rmtree(work)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    after = ToolkenModel.from_pretrained(tmp_path / "moved", tools=tmp_path / "moved" / "toolken_tools.py")
    assert after.generation_config == before.generation_config
    assert generations(after) == want
    assert main([*cli, "--toolkens", str(tmp_path / "moved"), "--tools", "checkpoint",
                 "12 apples and 30 apples?"]) == 0
    got_cli = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert untimed(got_cli) == untimed(want_cli) and want_cli["calls"]


def untimed(d: dict) -> dict:
    """A --json generation without its timings."""
    return {k: [untimed(c) for c in v] if k == "calls" else v for k, v in d.items()
            if not k.startswith("seconds")}
