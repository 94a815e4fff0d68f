"""Hostile checkpoints and run folders: they are data. Bad files are refused naming the file and
the field; nothing in them runs code or chooses code to import; an interrupted save loses nothing."""

import json
import os
import pickle

import pytest
import torch

import toolken.training.trainer as T
from toolken.core.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, recover
from toolken.cli import main
from toolken.training.config import load_config
from toolken.model import ToolkenModel
from conftest import REPO


@pytest.fixture
def ckpt(tiny_base, tmp_path):
    m = ToolkenModel(tiny_base, ["add", "multiply"])
    m.save_pretrained(tmp_path / "ck")
    return tmp_path / "ck"


def _load(path, base):
    return ToolkenModel.from_pretrained(path, base=base)


@pytest.mark.parametrize("content", [b"", b"garbage, not safetensors", "truncated"])
def test_unreadable_weights_name_the_file(ckpt, tiny_base, content):
    w = ckpt / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:-40] if content == "truncated" else content)
    with pytest.raises(CheckpointError, match=rf"{w}: not a readable safetensors file"):
        _load(ckpt, tiny_base)


def test_nan_or_inf_weights_are_refused_naming_the_tensor(tiny_base, tmp_path):
    for bad in (float("nan"), float("inf")):
        m = ToolkenModel(tiny_base, ["add"])
        with torch.no_grad():
            m.head.weight[0, 3] = bad
        m.save_pretrained(tmp_path / "ck")
        with pytest.raises(CheckpointError, match=r"tensor 'weight' holds NaN/inf values "
                           r"\(first at index \[0, 3\]\)"):
            _load(tmp_path / "ck", tiny_base)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.pop("base_model"), r"field 'base_model' is missing; it must be a non-empty string"),
    (lambda c: c.update(softcap="x"), r"field 'softcap' is 'x'; it must be null or a positive number"),
    (lambda c: c.update(tools="add"), r"field 'tools' is 'add'; it must be a list of tool names"),
    (lambda c: c.update(hidden_size="16"), r"field 'hidden_size' is '16'; it must be a positive integer"),
    (lambda c: c.update(bias="yes"), r"field 'bias' is 'yes'; it must be true or false"),
    (lambda c: c.update(tools=["add", "add"]), r"field 'tools' repeats a name"),
    (lambda c: c.update(tools=["add"]), r"weight has shape \(2, 16\); the 1 tools"),
])
def test_bad_config_fields_are_named(ckpt, tiny_base, edit, match):
    path = ckpt / CONFIG_NAME
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match) as e:
        _load(ckpt, tiny_base)
    assert str(path) in str(e.value) or str(ckpt / WEIGHTS_NAME) in str(e.value)


def test_config_that_is_not_an_object_is_refused(ckpt, tiny_base):
    (ckpt / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"toolken_config.json: must be a JSON object, got a list"):
        _load(ckpt, tiny_base)
    (ckpt / CONFIG_NAME).write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match=r"toolken_config.json: not valid JSON"):
        _load(ckpt, tiny_base)


def test_checkpoint_never_chooses_the_pack_to_import(tiny_base, tmp_path, capsys):
    marker = tmp_path / "imported"
    pack = tmp_path / "evil_pack.py"
    pack.write_text(f"open({str(marker)!r}, 'w').write('ran')\nTOOLS = []\n")
    m = ToolkenModel(tiny_base, ["add"])
    m.extra_config = {"training": {"config": {"tools": str(pack)}}}
    m.save_pretrained(tmp_path / "ck")
    assert main(["generate", "--toolkens", str(tmp_path / "ck"), "hi"]) == 2
    err = capsys.readouterr().err
    assert "give the tool pack with --tools PACK.py" in err and "never chooses which code runs" in err
    assert f"pass --tools {pack} if you trust that file" in err
    assert not marker.exists()
    from toolken.evaluation.run import EvalConfig, load_model

    with pytest.raises(ValueError, match="never chooses which code runs"):
        load_model(EvalConfig(bench="funcqa-oh", data="x", toolkens=str(tmp_path / "ck"),
                              base_model="tiny-random-llama"))
    assert not marker.exists()


class _RunsCode:
    """A pickle that runs code when unpickled (what a crafted state.pt does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_crafted_resume_state_cannot_run_code(tmp_path):
    marker, state = tmp_path / "ran", tmp_path / "state.pt"
    torch.save({"rows": _RunsCode(marker), "epoch": 0}, state)
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the payload does run under plain pickle
    assert marker.exists()
    marker.unlink()
    with pytest.raises(T.TrainingError, match=rf"{state}: not a resume state this toolken can "
                       r"read safely \(UnpicklingError"):
        T.load_state(state)
    assert not marker.exists()


def tiny(tmp_path, **over):
    values = {"output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
              "train_file": str(REPO / "data/tiny/train.jsonl"), "dev_fraction": 0.0,
              "epochs": 2, **over}
    return load_config(REPO / "configs" / "tiny.yaml", values)


def test_crafted_state_in_output_dir_stops_training_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "out" / "training").mkdir(parents=True)
    torch.save({"rows": _RunsCode(marker)}, tmp_path / "out" / "training" / "state.pt")
    with pytest.raises(T.TrainingError, match="state.pt: not a resume state"):
        T.train(tiny(tmp_path))
    assert not marker.exists()


def test_crash_between_the_renames_of_a_save_resumes_from_the_last_epoch(tmp_path, monkeypatch, capsys):
    """Killed after epoch 1's state was written and between the two renames of epoch 2's save:
    the folder is gone, its previous version whole in .out.old-*, a half-built .out.tmp-*."""
    save = T._save_state

    class Killed(BaseException):
        pass

    def save_then_die(path, rows, opt, sched, cfg, history, best, epoch):
        save(path, rows, opt, sched, cfg, history, best, epoch)
        if epoch == 0:
            raise Killed

    monkeypatch.setattr(T, "_save_state", save_then_die)
    with pytest.raises(Killed):
        T.train(tiny(tmp_path))
    monkeypatch.setattr(T, "_save_state", save)
    out = tmp_path / "out"
    os.replace(out, tmp_path / ".out.old-1234abcd")  # the first rename of the next save ...
    (tmp_path / ".out.tmp-5678abcd").mkdir()  # ... and the new folder, never renamed in
    (tmp_path / ".out.old-00000000").mkdir()  # and an older leftover
    os.utime(tmp_path / ".out.old-00000000", (0, 0))
    capsys.readouterr()
    res = T.train(tiny(tmp_path))
    printed = capsys.readouterr().out
    assert "restored" in printed and "resuming" in printed and "after epoch 1" in printed
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert not list(tmp_path.glob(".out.old-*")) and not list(tmp_path.glob(".out.tmp-*"))


def test_recover_cleans_leftovers_beside_a_whole_folder(tmp_path):
    (tmp_path / "ck").mkdir()
    for name in (".ck.old-1", ".ck.tmp-2", ".other.tmp-3"):
        (tmp_path / name).mkdir()
    done = recover(tmp_path / "ck")
    assert len(done) == 2 and sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-3", "ck"]
