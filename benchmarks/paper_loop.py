"""The paper's generation strategy (ToolkenGPT's released code), kept for comparison only:
after every tool call the whole context is encoded again, and every tool-mode prompt is
encoded in full (no prefix cache). Greedy; same choices as ``toolken.generation`` otherwise,
so the text equals toolken's and only the work differs (``benchmarks/generate_speed.py``,
``tests/test_generate.py``)."""

from __future__ import annotations

import time

import torch

from toolken.core.data import result_join
from toolken.generation.decode import CallTrace, Generation
from toolken.generation.steps import new_cache, step, stop_at
from toolken.generation.tool_mode import ToolMode


@torch.no_grad()
def paper_generate(model, prompt: str, question: str, cfg) -> Generation:
    """Greedy generation with tools, re-encoding as the paper does (``cfg``: a GenerationConfig;
    its bias, stops, max_new_tokens, max_tool_calls, tool timeout and result size apply)."""
    t0 = time.perf_counter()
    tok, V = model.tokenizer, model.vocab_size
    tool_mode = ToolMode(model, model.registry, cfg, reuse_prefix=False)
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    cache = new_cache(model)
    z = step(model, ids, cache)
    stats = {"prefilled": len(ids), "decoded": 0}
    out, text, calls, reason = [], "", [], "max_new_tokens"
    eos = tok.eos_token_id
    for _ in range(cfg.max_new_tokens):
        zz = z.clone()
        zz[V:] += cfg.toolken_bias
        if len(calls) >= cfg.max_tool_calls:
            zz[V:] = float("-inf")
        choice = int(zz.argmax())
        new_ids = [choice]
        if choice >= V:
            trace = CallTrace(tool=model.registry[choice - V].name)
            calls.append(trace)
            try:
                res = tool_mode.call(model.registry[choice - V], question, text,
                                     lambda v: int(v.argmax()), stats, trace, cfg)
                trace.result, trace.error = (res.text, None) if res.ok else (None, res.error)
            except Exception as e:  # noqa: BLE001 — the fallback, as in toolken
                trace.error = f"arguments: {e}"
            if trace.result is None:
                new_ids = [int(zz[:V].argmax())]
            else:
                new_ids = tok(result_join(text, trace.result), add_special_tokens=False)["input_ids"]
                stats["prefilled"] += len(new_ids)
        else:
            stats["decoded"] += 1
        out += new_ids
        new_text = tok.decode(out, skip_special_tokens=True)
        hit = stop_at(text, new_text, cfg.stop)
        text = new_text if hit is None else new_text[:hit]
        if hit is not None:
            reason = "stop"
            break
        if new_ids[-1] == eos and not cfg.ignore_eos:
            reason = "eos"
            break
        if choice >= V:  # the paper: encode everything again after a call
            cache = new_cache(model)
            z = step(model, ids + out, cache)
            stats["prefilled"] += len(ids) + len(out) - len(new_ids)
        else:
            z = step(model, new_ids, cache)
    return Generation(text=text, calls=calls, prefilled_tokens=stats["prefilled"],
                      decoded_tokens=stats["decoded"], seconds=time.perf_counter() - t0,
                      stop_reason=reason, token_ids=ids + out)
