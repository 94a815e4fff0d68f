"""``toolken export``: a plain transformers folder whose greedy ``generate`` gives toolken's
reasoning-mode tokens up to and including the first toolken; its grammars compile."""

import json
import random

import pytest
import torch

from toolken.core.base import Base, build_tiny, weight_fingerprint
from toolken.export import ExportError, export
from toolken.generation.decode import Generation
from toolken.model import ToolkenModel
from toolken.tools import ToolRegistry, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def shout(text: str, times: int = 1) -> str:
    """Repeat a text in capitals."""
    return text.upper() * times


REG = ToolRegistry([add, shout])


def toolken_model(base, bias: bool, toolken_bias: float, seed: int) -> ToolkenModel:
    torch.manual_seed(seed)
    m = ToolkenModel(base, REG.names, bias=bias, manifest=REG.manifest())
    m.toolken_bias = toolken_bias
    if bias:
        with torch.no_grad():
            m.head.bias.uniform_(-1, 1)
    return m.attach_tools(REG)


def tied_tiny_base() -> Base:
    """The tiny Llama with its LM head tied to the input embeddings (as SmolLM2's is)."""
    from transformers import LlamaForCausalLM

    model, tok = build_tiny()
    model.config.tie_word_embeddings = True
    tied = LlamaForCausalLM(model.config)
    tied.load_state_dict(model.state_dict(), strict=False)
    tied.tie_weights()
    tied.eval().requires_grad_(False)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    return Base(model=tied, tokenizer=tok, name="tiny-tied", fingerprint=weight_fingerprint(tied))


def load_exported(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def reasoning_until_toolken(m: ToolkenModel, prompt: str, n: int) -> tuple[str, str | None, list[int]]:
    """toolken's reasoning mode: (text before the first toolken, its tool or None, token ids)."""
    text = ""
    for item in m.stream(prompt, max_new_tokens=n, max_tool_calls=1):
        if isinstance(item, Generation):
            return text, None, item.token_ids
        if item.kind == "tool_call":
            return text, item.call.tool, []
        text += item.text
    raise AssertionError("no Generation")


@pytest.mark.parametrize("tied", [False, True])
def test_exported_logits_equal_toolken_logits(tiny_base, tmp_path, tied):
    base = tied_tiny_base() if tied else tiny_base
    m = toolken_model(base, bias=True, toolken_bias=random.uniform(-2, 2), seed=random.randrange(10**6))
    export(m, tmp_path / "x")
    lm, tok = load_exported(tmp_path / "x")
    assert lm.config.tie_word_embeddings is False and lm.config.vocab_size == m.vocab_size + 2
    assert tok.convert_tokens_to_ids(["<tool:add>", "<tool:shout>"]) == [m.vocab_size, m.vocab_size + 1]
    seq_bias = {ids[0]: b for ids, b in lm.generation_config.sequence_bias}
    ids = torch.randint(3, m.vocab_size, (2, 17))
    ref, _ = m(ids)
    ref[..., m.vocab_size:] += m.toolken_bias
    got = lm(ids).logits
    for i, b in seq_bias.items():
        got[..., i] += b
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lm.model.embed_tokens.weight[:m.vocab_size],
                               base.model.get_input_embeddings().weight)
    cfg = json.loads((tmp_path / "x" / "toolken_tools.json").read_text())
    assert cfg["toolken_ids"] == [m.vocab_size, m.vocab_size + 1]
    assert {int(k): v for k, v in cfg["logit_bias"].items()} == pytest.approx(seq_bias)


@torch.no_grad()
def _bias_firing_late(m: ToolkenModel, prompt: str, steps: int = 12, rows=slice(None),
                      first: int = 2) -> float:
    """Set a toolken bias under which reasoning mode writes at least ``first`` tokens before a
    toolken wins: a plain greedy loop over the vocabulary (toolkens off) gives, per step, the
    margin of the best word over the best toolken; a bias between a new running minimum of the
    margins (step >= 2) and the minimum before it fires the toolken exactly there."""
    V = m.vocab_size
    for attempt in range(8):
        ids = m.tokenizer(prompt, return_tensors="pt")["input_ids"]
        margins = []
        for _ in range(steps):
            z = m(ids)[0][0, -1]
            margins.append(float(z[:V].max() - z[V:][rows].max()))  # rows: the toolkens that may win
            ids = torch.cat([ids, z[:V].argmax().view(1, 1)], dim=1)
        for s in range(first, steps):
            lowest = min(margins[:s])
            if margins[s] < lowest - 1e-3:
                m.toolken_bias = (margins[s] + lowest) / 2
                return m.toolken_bias
        torch.manual_seed(attempt)
        m.head.reset_parameters()
    pytest.skip(f"no random head made a toolken win after {first} token(s)")


def test_plain_generate_gives_reasoning_mode_tokens(tiny_base, tmp_path):
    rng = random.Random()
    m = toolken_model(tiny_base, bias=False, toolken_bias=0.0, seed=rng.randrange(10**6))
    chars = "abcdefghij 0123456789+="
    prompts = ["".join(rng.choice(chars) for _ in range(rng.randint(4, 20))) for _ in range(4)]
    _bias_firing_late(m, prompts[0])
    export(m, tmp_path / "x")
    lm, tok = load_exported(tmp_path / "x")
    fired = 0
    for prompt in prompts:
        text, tool_name, token_ids = reasoning_until_toolken(m, prompt, 12)
        x = tok(prompt, return_tensors="pt")
        out = lm.generate(**x, max_new_tokens=12, do_sample=False)[0, x["input_ids"].shape[1]:].tolist()
        if tool_name is None:  # no toolken within the budget: the same tokens throughout
            assert out == token_ids[x["input_ids"].shape[1]:]
            continue
        fired += 1
        assert out[-1] == tok.convert_tokens_to_ids(f"<tool:{tool_name}>")
        assert tok.decode(out[:-1], skip_special_tokens=True) == text
        if len(out) > 1:
            before = m.generate(prompt, max_new_tokens=len(out) - 1)  # stops just before the toolken
            assert before.calls == [] and before.token_ids[x["input_ids"].shape[1]:] == out[:-1]
            z = before.next_logits.clone()
        else:
            z = m(x["input_ids"])[0][0, -1].detach()
        z[m.vocab_size:] += m.toolken_bias
        assert int(z.argmax()) == out[-1]
    assert fired


def test_grammars_compile_with_xgrammar_on_the_exported_tokenizer(tiny_base, tmp_path):
    import numpy as np
    import xgrammar as xgr

    m = toolken_model(tiny_base, bias=False, toolken_bias=0.0, seed=0)
    export(m, tmp_path / "x")
    _, tok = load_exported(tmp_path / "x")
    cfg = json.loads((tmp_path / "x" / "toolken_tools.json").read_text())
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiler = xgr.GrammarCompiler(info)
    for entry in cfg["tools"]:
        assert entry["schema"] == REG[entry["name"]].to_openai()
        assert entry["tool_prompt"]["call"] == f"<{entry['name']}>("
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(entry["grammar"]))
        mask = xgr.allocate_token_bitmask(1, info.vocab_size)
        matcher.fill_next_token_bitmask(mask)
        allowed = np.unpackbits(mask.numpy().view(np.uint8), bitorder="little")[:info.vocab_size]
        assert allowed.sum() > 0 and not allowed[cfg["toolken_ids"]].any()  # never a toolken
        written = "7, 35)" if entry["name"] == "add" else '"hi", 2)'
        for t in tok(written, add_special_tokens=False)["input_ids"]:
            assert matcher.accept_token(t), (entry["name"], written)
        assert matcher.is_terminated() or matcher.accept_token(tok.eos_token_id)


def test_export_refuses_a_used_folder_and_needs_tools(tiny_base, tmp_path):
    m = toolken_model(tiny_base, bias=False, toolken_bias=0.0, seed=0)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export(m, tmp_path / "used")
    bare = ToolkenModel(tiny_base, ["x"])
    with pytest.raises(ExportError, match="manifest"):
        export(bare, tmp_path / "new")


def test_cli_export(tiny_base, tmp_path, capsys):
    from toolken.cli import main

    m = toolken_model(tiny_base, bias=False, toolken_bias=0.3, seed=1)
    m.registry = None
    m.save_pretrained(tmp_path / "ck")
    assert main(["export", "--toolkens", str(tmp_path / "ck"), "--out", str(tmp_path / "x")]) == 0
    assert "<tool:NAME> tokens 99..100" in capsys.readouterr().out
    lm, tok = load_exported(tmp_path / "x")
    assert lm.generation_config.eos_token_id == [2, 99, 100]
    assert main(["export", "--toolkens", str(tmp_path / "ck"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.real_model
def test_smollm2_export_matches_reasoning_mode(smol_base, tmp_path):
    """The tied default base: the exported folder's greedy tokens are reasoning mode's."""
    m = toolken_model(smol_base, bias=False, toolken_bias=0.0, seed=random.randrange(10**6))
    prompt = "Q: A shop sells 12 boxes of 18 pens. How many pens?\nA:"
    _bias_firing_late(m, prompt, steps=20, first=1)
    export(m, tmp_path / "x")
    lm, tok = load_exported(tmp_path / "x")
    text, tool_name, _ = reasoning_until_toolken(m, prompt, 20)
    x = tok(prompt, return_tensors="pt")
    out = lm.generate(**x, max_new_tokens=20, do_sample=False)[0, x["input_ids"].shape[1]:].tolist()
    assert out[-1] == tok.convert_tokens_to_ids(f"<tool:{tool_name}>")
    assert tok.decode(out[:-1], skip_special_tokens=True) == text
    before = m.generate(prompt, max_new_tokens=len(out) - 1)
    assert before.token_ids[x["input_ids"].shape[1]:] == out[:-1]


def test_export_writes_named_arguments_when_the_checkpoint_does(tiny_base, tmp_path):
    """A checkpoint whose generation config has arg_names exports grammars and tool prompts
    that write ``a=7, b=35)``, as its own tool mode does."""
    m = toolken_model(tiny_base, bias=False, toolken_bias=0.0, seed=0)
    m.generation_config = m.generation_config.replace(arg_names=True)
    export(m, tmp_path / "x")
    cfg = json.loads((tmp_path / "x" / "toolken_tools.json").read_text())
    grammar = next(e["grammar"] for e in cfg["tools"] if e["name"] == "add")
    assert grammar.startswith('root ::= ("a=" integer) sep ("b=" integer)'), grammar
