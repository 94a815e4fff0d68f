"""Hostile configs and concurrent runs: every bad value is refused before any model is loaded,
naming the key and what it must be; two runs never write one folder or one cache at once."""

import os
import threading
import time

import pytest
import torch

import toolken.training.trainer as T
from toolken.cli import main
from toolken.training.config import ConfigError, load_config
from toolken.core.locks import LockedError, folder_lock
from conftest import REPO

TINY = REPO / "configs" / "tiny.yaml"


def cfg_of(tmp_path, *overrides, **values):
    base = {"output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
            "train_file": str(REPO / "data/tiny/train.jsonl"), **values}
    return load_config(TINY, [f"{k}={v}" for k, v in base.items()] + list(overrides))


@pytest.fixture
def no_model(monkeypatch):
    """Loading a base model fails the test: the error must come before."""
    def refuse(*a, **k):
        raise AssertionError("a base model was loaded before the config was checked")
    monkeypatch.setattr(T, "load_base", refuse)


def test_yaml_1_1_number_strings_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text(f"train_file: {REPO / 'data/tiny/train.jsonl'}\n"
                                     "lr: 1e-3\nweight_decay: 5E-2\ndev_fraction: .5\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.dev_fraction) == (0.001, 0.05, 0.5)
    assert isinstance(cfg_of(tmp_path, "lr=2").lr, float)


@pytest.mark.parametrize("override,match", [
    ("lr=abc", r"lr='abc' must be a number \(got str\)"),
    ("lr=-1", r"lr=-1.0 must be positive"),
    ("lr=.inf", r"lr=inf must be a finite number"),
    ("epochs=abc", r"epochs='abc' must be an integer \(got str\)"),
    ("epochs=2.5", r"epochs=2.5 must be an integer \(got float\)"),
    ("epochs=true", r"epochs=True must be an integer \(got bool\)"),
    ("batch_size=0", r"batch_size=0 must be positive"),
    ("max_length=1", r"max_length=1 must be at least 2 tokens"),
    ("warmup_ratio=1.5", r"warmup_ratio=1.5 must be in \[0, 1\)"),
    ("progress=maybe", r"progress='maybe' must be true or false"),
    ("dev_file=3", r"dev_file=3 must be a string or null"),
    ("generation=3", r"generation=3 must be a mapping"),
    ("generation.arg_demos=abc", r"generation: arg_demos='abc' must be"),
    ("generation.bogus=1", r"option\(s\) \['bogus'\]; valid: \[.*'arg_demos'"),
    ("lr.x=1", r"only generation, tool_options take dotted keys"),
    ("lr=[1", r"the value is not valid YAML"),
])
def test_bad_values_name_the_key_and_the_type(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        cfg_of(tmp_path, override)


def test_dotted_override_sets_one_key_inside_the_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text(TINY.read_text() + "generation: {arg_candidates: 5}\n")
    cfg = load_config(tmp_path / "c.yaml", ["generation.arg_demos=3", "tool_options.k=v"])
    assert cfg.generation == {"arg_candidates": 5, "arg_demos": 3}
    assert cfg.tool_options == {"k": "v"}


def test_cli_prints_the_config_error(tmp_path, capsys):
    assert main(["train", str(TINY), "epochs=2.5", f"output_dir={tmp_path}/o"]) == 2
    assert "epochs=2.5 must be an integer" in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_refused_before_compute(tmp_path, no_model):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir='.*/file' is a file, not a folder"):
        T.train(cfg_of(tmp_path, output_dir=tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"output_dir='.*/file/sub' is not a writable folder"):
        T.train(cfg_of(tmp_path, output_dir=tmp_path / "file" / "sub"))


def test_unwritable_output_dir_is_refused_before_compute(tmp_path, no_model):
    with pytest.raises(ConfigError, match="output_dir='/proc/toolken-out' is not a writable folder"):
        T.train(cfg_of(tmp_path, output_dir="/proc/toolken-out"))  # even root cannot write there
    if os.geteuid() != 0:  # permissions bind everyone but root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="is not a writable folder"):
            T.train(cfg_of(tmp_path, output_dir=ro / "out"))


def test_missing_input_file_is_refused_before_compute(tmp_path, no_model):
    with pytest.raises(ConfigError, match=r"extra_train_files\[0\]='nope.jsonl': no such file"):
        T.train(cfg_of(tmp_path, extra_train_files="[nope.jsonl]"))


def test_max_length_too_small_to_label_anything_is_a_clear_error(tmp_path):
    with pytest.raises(T.TrainingError, match=r"no record could be labelled \(max_length=4 "
                       r"tokens(.|\n)*120 x a result ends after max_length tokens"):
        T.train(cfg_of(tmp_path, max_length=4))
    (tmp_path / "negatives.jsonl").write_text('{"text": "no call here", "calls": []}\n' * 3)
    with pytest.raises(T.TrainingError, match=r"only_toolken_positions=True(.|\n)*labels: 0 toolken, 0 vocab"):
        T.train(cfg_of(tmp_path, train_file=tmp_path / "negatives.jsonl", only_toolken_positions=True))


def test_second_run_into_a_busy_output_dir_is_refused_naming_the_holder(tmp_path, no_model):
    cfg = cfg_of(tmp_path)
    with folder_lock(cfg.output_dir, "output_dir", wait=False):
        with pytest.raises(LockedError, match=rf"output_dir .*/out is in use by pid {os.getpid()} "
                           rf"on {os.uname().nodename} since 20\d\d-"):
            T.train(cfg)
    assert not any(tmp_path.glob("out/*"))  # nothing written by the refused run


def test_feature_cache_build_waits_for_the_other_builder(tiny_base, tmp_path, capsys):
    """Two builders of one cache: the second waits for the first's lock, then reuses its
    cache; neither deletes the other's parts."""
    from toolken.core.data import label_records, load_jsonl
    from toolken.training.features import build_or_load

    records = load_jsonl(REPO / "data/tiny/train.jsonl")[:20]
    labelled = label_records(records, tiny_base.tokenizer, ["add", "subtract", "multiply"],
                             tiny_base.vocab_size, 128)
    folder = tmp_path / "cache" / "key1"
    cfg = cfg_of(tmp_path, progress=False)
    results, errors = [None, None], []

    def build(i):
        try:
            results[i] = build_or_load(folder, "key1", tiny_base, labelled, cfg)
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    with folder_lock(folder, "feature cache", wait=False):  # a first builder holds it
        threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert not folder.exists() and all(t.is_alive() for t in threads)  # both wait
    for t in threads:
        t.join(60)
    assert not errors, errors
    out = capsys.readouterr()
    assert "waiting for feature cache" in out.err and "in use by pid" in out.err
    assert out.out.count("reusing feature cache") == 1  # one built, the other reused it
    assert torch.equal(results[0].load().h, results[1].load().h) and len(results[0]) > 0
