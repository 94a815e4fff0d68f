"""A short FuncQA run on the real default base model (SmolLM2-135M-Instruct)."""

import json

import pytest

from toolken.training.config import load_config
from toolken.training.trainer import train
from conftest import REPO, shared_path

pytestmark = pytest.mark.real_model


def test_short_funcqa_run_beats_chance(tmp_path, smol_base):
    records = json.loads(shared_path("toolkengpt", "funcqa", "train.json").read_text())
    small = tmp_path / "train.json"
    small.write_text(json.dumps(records[::4]))  # 163 records, every tool represented
    cfg = load_config(REPO / "configs/funcqa.yaml", {
        "train_file": str(small), "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"), "epochs": 4, "lr": 0.01, "progress": False,
        "dev_fraction": 0.25, "train_prompt": None, "train_prompt_demos": 0, "max_length": 512,
        "tools": ["add", "subtract", "multiply", "divide", "power", "sqrt", "log", "ln", "lcm",
                  "gcd", "remainder", "choose", "permutate"]})
    res = train(cfg)
    dev = res.best
    # chance: a toolken at random positions at the base rate scores F1 ~ that rate (~0.02)
    assert dev["dev_toolken_labels"] >= 30
    assert dev["dev_f1"] > 0.3, dev
    assert res.model.base.name == "SmolLM2-135M-Instruct"


def test_generate_calls_a_tool_with_valid_arguments(tmp_path, smol_base):
    """Tool mode on the real model: the paper's per-tool prompt, schema-constrained arguments."""
    from toolken.model import ToolkenModel
    from toolken.tools.registry import ToolRegistry, load_pack

    add = load_pack(REPO / "tools" / "funcqa.py")["add"]
    model = ToolkenModel(smol_base, [])
    model.add_tools(["add"])
    model.attach_tools(ToolRegistry([add]))  # with a huge bias, "add" fires at once
    q = "A store sells 311 apples and 112 oranges. How many fruits are sold in total?"
    g = model.generate(f"Q: {q}\nA: The store sells 311+112=", question=q, max_new_tokens=3,
                       toolken_bias=1e3, max_tool_calls=1)
    call = g.calls[0]
    assert call.tool == "add" and call.error is None, call
    assert all(isinstance(a, (int, float)) for a in call.arguments)
    assert float(call.result) == sum(call.arguments)
    assert g.text[call.start:call.end] == call.result
