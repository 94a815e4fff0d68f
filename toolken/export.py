"""Export a toolken checkpoint as a plain transformers model folder that serving engines load.

The folder holds the base weights with the vocabulary grown by K added special tokens
``<tool:NAME>`` whose LM-head rows are the toolken rows, so ``AutoModelForCausalLM`` alone
computes ``[vocab ; toolkens]`` logits (ToolkenGPT's reasoning mode, Hao et al. 2023):

* ``model.safetensors`` + ``config.json``: vocab_size V + K, ``tie_word_embeddings: false``
  (a base that ties its embeddings gets its own LM head; the K new input-embedding rows are
  the mean input embedding and are never fed, since a toolken is never input);
* the tokenizer with the K tokens (ids V .. V+K-1, in row order);
* ``generation_config.json``: the toolken ids are end-of-sequence ids (reasoning mode stops
  when a toolken wins) and ``sequence_bias`` holds each toolken's bias (the head's bias plus the
  calibrated toolken bias: LLaMA-family LM heads have no bias term, so it cannot be folded into
  the weights; transformers' ``generate`` applies ``sequence_bias``, engines take it as the
  request's ``logit_bias``);
* ``toolken_tools.json``: the ids, the bias per id, and per tool its OpenAI schema, its
  tool-mode prompt and its argument grammar (xgrammar's EBNF, ``tools.arguments.call_grammar``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from .core.checkpoint import library_version
from .tools.arguments import call_grammar
from .generation.tool_mode import ToolMode
from .tools.registry import ToolRegistry

TOOLS_FILE = "toolken_tools.json"
FORMAT_VERSION = 1


class ExportError(ValueError):
    pass


def toolken_token(name: str) -> str:
    return f"<tool:{name}>"


def export(model, out: str | Path, registry: ToolRegistry | None = None) -> Path:
    """Write the engine-ready folder for ``model`` (a ToolkenModel) to ``out``; ``registry``
    (default: the attached pack, else the stored manifest) gives the tool-mode prompts."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    registry = registry if registry is not None else model.registry
    if registry is None:
        if not model.manifest:
            raise ExportError("the checkpoint stores no tool manifest: give the pack (--tools)")
        registry = ToolRegistry.from_manifest(model.manifest)
    registry.check_same(model.tools, what="the checkpoint")
    bias = toolken_biases(model)
    tok, ids = _tokenizer_with_toolkens(model)
    lm = _grown_model(model)
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    gen = copy.deepcopy(model.base.model.generation_config)
    eos = [i for i in _as_list(gen.eos_token_id) + [model.tokenizer.eos_token_id] if i is not None]
    gen.eos_token_id = list(dict.fromkeys(eos)) + ids
    nonzero = [[[i], b] for i, b in zip(ids, bias) if b != 0.0]
    gen.sequence_bias = nonzero or None
    gen.save_pretrained(out)
    manifest = tools_file(model, registry, ids, bias, eos)
    (out / TOOLS_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def toolken_biases(model) -> list[float]:
    """Per toolken, what is added to ``W_t h`` at generation: the head's bias (if any) plus
    the calibrated toolken bias."""
    k = len(model.tools)
    head = model.head.bias.detach().float().tolist() if model.head.bias is not None else [0.0] * k
    if model.head.softcap and any(head):
        raise ExportError("this base soft-caps its logits and the head has a bias: the bias sits "
                          "inside the cap and cannot be exported as a logit bias")
    return [float(b) + model.toolken_bias for b in head]


def _tokenizer_with_toolkens(model):
    """A copy of the tokenizer with ``<tool:NAME>`` special tokens at ids V .. V+K-1."""
    from tokenizers import AddedToken

    tok = copy.deepcopy(model.tokenizer)
    V = model.vocab_size
    if len(tok) > V:
        raise ExportError(f"the tokenizer has {len(tok)} tokens, more than the LM head's {V} rows")
    filler = [f"<|toolken_unused_{i}|>" for i in range(V - len(tok))]  # head rows with no token
    names = [toolken_token(t) for t in model.tools]
    taken = [n for n in names if n in tok.get_vocab()]
    if taken:
        raise ExportError(f"the tokenizer already has the token(s) {taken}")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in filler + names],
                   special_tokens=True)
    ids = tok.convert_tokens_to_ids(names)
    if ids != list(range(V, V + len(names))):
        raise ExportError(f"the toolken tokens got ids {ids[:4]}..., not {V}.. as the head's rows")
    return tok, ids


@torch.no_grad()
def _grown_model(model):
    """The base model class with V + K output rows: the LM head's rows, then the toolken
    rows (in the base's dtype), untied from the input embeddings."""
    base = model.base.model
    V, K = model.vocab_size, len(model.tools)
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    modules = {id(m): n for n, m in base.named_modules()}
    emb_key, head_key = modules[id(emb)] + ".weight", modules[id(head)] + ".weight"
    emb_w = emb.weight
    state = {k: v.detach().cpu() for k, v in base.state_dict().items()}
    fill = emb_w.detach().cpu().mean(0, keepdim=True).expand(K, -1)
    state[emb_key] = torch.cat([emb_w.detach().cpu(), fill])  # (V + K, d); rows never fed
    rows = model.head.weight.detach().cpu().to(head.weight.dtype)
    state[head_key] = torch.cat([head.weight.detach().cpu(), rows])  # (V + K, d)
    if getattr(head, "bias", None) is not None:
        state[head_key.rsplit(".", 1)[0] + ".bias"] = torch.cat([head.bias.detach().cpu(),
                                                                 head.bias.new_zeros(K).cpu()])
    config = copy.deepcopy(base.config)
    config.vocab_size = V + K
    config.tie_word_embeddings = False
    with torch.device("meta"):
        grown = type(base)(config)
    grown.load_state_dict(state, strict=True, assign=True)
    return grown


def tools_file(model, registry: ToolRegistry, ids: list[int], bias: list[float], eos: list[int]) -> dict:
    """The contents of ``toolken_tools.json``."""
    mode = ToolMode(model, registry, model.generation_config)
    tools = []
    for tool, i in zip(registry, ids):
        prefix, suffix = mode.split_prompt(tool)
        tools.append({"name": tool.name, "token": toolken_token(tool.name), "token_id": i,
                      "schema": tool.to_openai(),
                      "tool_prompt": {"prefix": prefix, "suffix": suffix,
                                      "call": f"<{tool.name}>("},
                      "grammar": call_grammar(tool.parameters,
                                              names=model.generation_config.arg_names)})
    return {"format_version": FORMAT_VERSION, "toolken_version": library_version(),
            "base_model": model.base.name, "base_fingerprint": model.base.fingerprint,
            "base_vocab_size": model.vocab_size, "eos_token_ids": eos,
            "toolken_ids": ids, "logit_bias": {str(i): b for i, b in zip(ids, bias) if b != 0.0},
            "grammar_format": "xgrammar EBNF (GBNF-like; root ::= ...)",
            "tool_prompt_layout": "prefix (tokenized with the BOS token) + question + suffix + "
                                  "answer so far (a space put in front unless it starts with a "
                                  "space or newline) + call; then decode under the grammar",
            "tools": tools}


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]
