"""Beyond Llama: tiny random Qwen2 (tied embeddings), Mistral, Gemma2 (logit soft-capping,
scaled embeddings, sliding window), Phi3 (fused projections) and an untied Llama train, save,
load from their folder and generate with tools; after a tool call the logits equal a fresh
forward over the whole text, and the vocabulary logits equal the base model's own."""

import pytest
import torch

from toolken.core.base import build_tiny_tokenizer
from toolken.training.config import load_config
from toolken.model import ToolkenModel
from toolken.training.trainer import train
from conftest import REPO

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
             pad_token_id=2)
ARCHS = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(tie_word_embeddings=False, sliding_window=8)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(head_dim=8, final_logit_softcapping=3.0, attn_logit_softcapping=5.0,
                    sliding_window=16, query_pre_attn_scalar=8, tie_word_embeddings=True)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(tie_word_embeddings=False)),
    "llama-untied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
}


def make_base_folder(arch: str, folder) -> None:
    import transformers

    config_name, model_name, extra = ARCHS[arch]
    tok = build_tiny_tokenizer()
    config = getattr(transformers, config_name)(vocab_size=len(tok), **SMALL, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture_trains_saves_loads_and_generates_with_tools(arch, tmp_path):
    make_base_folder(arch, tmp_path / "base")
    lines = (REPO / "data/tiny/train.jsonl").read_text().splitlines()[:40]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load_config(REPO / "configs" / "tiny.yaml", {
        "base_model": str(tmp_path / "base"), "train_file": str(tmp_path / "train.jsonl"),
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "epochs": 2})
    res = train(cfg)
    assert len(res.history) == 2 and all(h["train_loss"] == h["train_loss"] for h in res.history)

    m = ToolkenModel.from_pretrained(tmp_path / "out")  # the base from its folder, by name
    assert m.tools == ["add", "subtract", "multiply"]
    assert torch.equal(m.head.weight, res.model.head.weight)
    tied = m.base.model.get_output_embeddings().weight is m.base.model.get_input_embeddings().weight
    assert tied == ARCHS[arch][2]["tie_word_embeddings"]
    if arch == "gemma2":
        assert m.head.softcap == 3.0
    m.attach_tools(REPO / "tests" / "assets" / "tiny_pack.py")

    g = m.generate("Q: 7 and 8? A: 7+8=", max_new_tokens=6, toolken_bias=1e4, max_tool_calls=2)
    assert any(c.result and c.error is None for c in g.calls), g.calls
    ids = torch.tensor([g.token_ids])
    fresh, _ = m(ids)
    torch.testing.assert_close(g.next_logits, fresh[0, -1], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        own = m.base.model(ids).logits[0].float()  # the base's own head (soft-capped in Gemma2)
    torch.testing.assert_close(fresh[0, :, :m.vocab_size], own, rtol=1e-4, atol=1e-4)
