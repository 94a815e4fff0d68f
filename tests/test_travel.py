"""A checkpoint that travels: across dtypes, from a hub id, and (test_travel_cwd.py) from
another directory after the training files are gone. No network: hub ids resolve in a local
cache built here."""

import pytest
import torch

from toolken.core.base import build_tiny, load_base, weight_fingerprint
from toolken.core.checkpoint import CheckpointError
from toolken.model import ToolkenModel
from toolken.training.config import load_config
from toolken.training.trainer import train
from conftest import REPO

PACK = '''
from toolken import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@tool
def subtract(a: int, b: int) -> int:
    """Subtract b from a."""
    return a - b

@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b

TOOLS = [add, subtract, multiply]
'''


def tiny_train(root, **over):
    """Train the tiny recipe into root/out (a pack of its three tools in root/pack.py)."""
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

