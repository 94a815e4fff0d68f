"""`toolken generate` and `toolken chat` on a tiny checkpoint with a forced toolken."""

import io
import json

import pytest
import torch

from toolken.cli import main
from toolken.model import ToolkenModel
from toolken.tools.registry import load_pack

PACK = '''
from toolken import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

TOOLS = [add]
'''


@pytest.fixture(scope="module")
def checkpoint(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "pack.py").write_text(PACK)
    torch.manual_seed(0)
    m = ToolkenModel(tiny_base, [])
    m.add_tools(["add"])
    m.attach_tools(load_pack(root / "pack.py"))
    m.save_pretrained(root / "ckpt")
    return root


def args(root, *extra):
    return ["--toolkens", str(root / "ckpt"), "--tools", str(root / "pack.py"), "--bias", "10000",
            "--max-new-tokens", "4", "--max-tool-calls", "1", *extra]


def test_generate_marks_calls_and_prints_json(checkpoint, capsys):
    assert main(["generate", *args(checkpoint), "2 and 3?"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Q: 2 and 3?\nA:") and "\u27e8add(" in out and "1 tool call(s)" in out
    assert main(["generate", *args(checkpoint, "--json"), "2 and 3?", "4 and 4?"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["question"] for d in lines] == ["2 and 3?", "4 and 4?"]
    c = lines[0]["calls"][0]
    assert c["tool"] == "add" and c["result"] == str(sum(c["arguments"]))


def test_chat_reads_questions_until_quit(checkpoint, capsys, monkeypatch, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("Q: [QUESTION]\nA:")
    monkeypatch.setattr("sys.stdin", io.StringIO("2 and 3?\n\n/reset\n7 and 1?\n/quit\nnever read\n"))
    assert main(["chat", *args(checkpoint, "--template", str(template))]) == 0
    out = capsys.readouterr().out
    assert out.count("\u27e8add(") == 2 and "(conversation forgotten)" in out


def test_chat_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["chat", "--help"])
    assert e.value.code == 0 and "/reset" in capsys.readouterr().out


def test_generate_rerank_none_means_no_call(checkpoint, capsys):
    assert main(["generate", *args(checkpoint, "--json", "--rerank-top-k", "1",
                                   "--rerank-none-bias", "10000"), "2 and 3?"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["calls"] == [] and d["reranks"][0]["candidates"] == ["add"]
    assert d["reranks"][0]["choice"] is None


def test_generate_with_tool_mode_levers(checkpoint, capsys):
    opts = ["--json", "--arg-candidates", "3", "--arg-numbers", "context", "--close-results"]
    assert main(["generate", *args(checkpoint, *opts), "2 and 3?"]) == 0
    c = json.loads(capsys.readouterr().out)["calls"][0]
    assert len(c["candidates"]) == 3 and all(x in (2, 3) for x in c["arguments"])
    with pytest.raises(SystemExit):
        main(["generate", *args(checkpoint, "--arg-numbers", "all"), "2 and 3?"])


def test_generate_stops_where_the_templates_answers_stop(checkpoint, monkeypatch, tmp_path, capsys):
    """--stop defaults from the template: a newline for one-line answers, else \\nQ: and a
    blank line; a --stop given replaces it."""
    seen = []
    real = ToolkenModel.generate

    def spy(self, prompt, config=None, **kw):
        seen.append(config.stop)
        return real(self, prompt, config, **kw)

    monkeypatch.setattr(ToolkenModel, "generate", spy)
    one, steps = tmp_path / "one.txt", tmp_path / "steps.txt"
    one.write_text("Q: [QUESTION]\nA: The answer is")
    steps.write_text("Q: 1 and 2?\nA: First 1.\nThen 2.\n\nQ: [QUESTION]\nA:")
    for template in (one, steps):
        assert main(["generate", *args(checkpoint, "--json", "--template", str(template)), "2 and 3?"]) == 0
    assert main(["generate", *args(checkpoint, "--json", "--template", str(one), "--stop", "."), "2 and 3?"]) == 0
    capsys.readouterr()
    assert seen == [("\n",), ("\nQ:", "\n\n"), (".",)]
