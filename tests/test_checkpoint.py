"""Checkpoints: save -> load gives identical logits; other bases are refused; saves are atomic."""

import json

import pytest
import torch

from toolken.core.base import build_tiny
from toolken.core.checkpoint import CheckpointError, load_checkpoint
from toolken.model import ToolkenModel


def make_model(base, tools=("add", "multiply", "sqrt"), bias=True):
    torch.manual_seed(0)
    m = ToolkenModel(base, [], bias=bias)
    m.add_tools(list(tools))
    with torch.no_grad():
        m.head.bias.normal_()
    return m


def test_round_trip_identical_logits(tiny_base, tmp_path):
    m = make_model(tiny_base)
    m.toolken_bias = 1.5
    m.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["README.md", "generation_config.json", "toolken_config.json",
                     "toolken_model.safetensors"]  # + the model card
    cfg = json.loads((tmp_path / "ckpt" / "toolken_config.json").read_text())
    assert cfg["tools"] == ["add", "multiply", "sqrt"] and cfg["base_model"] == "tiny-random-llama"
    assert cfg["base_fingerprint"] == tiny_base.fingerprint and cfg["hidden_size"] == 16
    loaded = ToolkenModel.from_pretrained(tmp_path / "ckpt", base=tiny_base)
    x = torch.randint(3, 90, (2, 9))
    a, _ = m(x)
    b, _ = loaded(x)
    assert a.shape == (2, 9, tiny_base.vocab_size + 3)
    assert torch.equal(a, b)
    assert loaded.toolken_bias == 1.5
    # loading by name builds the same base
    again = ToolkenModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(again(x)[0], a)


def test_logits_equal_base_model_on_vocab(tiny_base):
    m = make_model(tiny_base)
    x = torch.randint(3, 90, (1, 7))
    ours, _ = m(x)
    assert torch.allclose(ours[..., :tiny_base.vocab_size], tiny_base.model(x).logits.float(), atol=1e-6)


def test_other_base_is_refused(tiny_base, tmp_path):
    make_model(tiny_base).save_pretrained(tmp_path / "ckpt")
    other_model, tok = build_tiny(seed=1)
    from toolken.core.base import Base, weight_fingerprint
    other = Base(other_model.eval(), tok, "my-other-llama", weight_fingerprint(other_model))
    with pytest.raises(CheckpointError, match="made for base model 'tiny-random-llama'.*my-other-llama"):
        ToolkenModel.from_pretrained(tmp_path / "ckpt", base=other)


def test_crash_mid_save_keeps_previous_checkpoint(tiny_base, tmp_path, monkeypatch):
    m = make_model(tiny_base)
    m.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "toolken_model.safetensors").read_bytes()
    import toolken.core.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with torch.no_grad():
        m.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        m.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "toolken_model.safetensors").read_bytes() == before
    load_checkpoint(tmp_path / "ckpt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "x")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_add_tools_keeps_old_rows(tiny_base):
    m = make_model(tiny_base)
    old = m.head.weight.detach().clone()
    rows = m.add_tools(["power"], init="embedding", texts=["power: a to the power b"])
    assert list(rows) == [3] and m.tools[-1] == "power"
    assert torch.equal(m.head.weight[:3], old)
    # the direction of the text's mean input embedding, at the norm random rows have
    from toolken.core.head import RANDOM_ROW_NORM

    ids = tiny_base.tokenizer("power: a to the power b", add_special_tokens=False)["input_ids"]
    mean = tiny_base.model.get_input_embeddings().weight[ids].mean(0)
    assert torch.isclose(m.head.weight[3].norm(), torch.tensor(RANDOM_ROW_NORM), rtol=1e-5)
    assert torch.nn.functional.cosine_similarity(m.head.weight[3], mean, dim=0) > 1 - 1e-5
    big = make_model(tiny_base).head.__class__(4000, 64).weight.norm(dim=-1).mean()
    assert torch.isclose(big, torch.tensor(RANDOM_ROW_NORM), rtol=0.01)
    with pytest.raises(ValueError, match="already"):
        m.add_tools(["add"])
