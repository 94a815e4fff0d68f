"""Batched generation with tools: many prompts decoded in lockstep on one KV cache.

Prompts are left-padded (explicit position ids, so padding changes nothing). Every step feeds
one token per row. When a row's toolken wins, that row's tool mode runs (on the shared
per-tool prefix caches of ``ToolMode``) and the result's tokens are queued: the row feeds
them over the next steps, one per step, while the other rows keep decoding. The tokens each
row sees are exactly those of the single-prompt ``generate``, so greedy outputs agree.
"""

from __future__ import annotations

import time

import torch

from ..core.data import result_join
from .decode import (CallTrace, Generation, _call_tool, _list, _new_cache, _pick,
                       _prompt_text, digit_tokens, make_reranker, stop_at)


def _forward(model, ids, mask, pos, cache) -> torch.Tensor:
    out = model.decode(ids, cache, attention_mask=mask, position_ids=pos)
    return model.logits_from_hidden(out.last_hidden_state[:, -1])  # (B, V + K)


@torch.no_grad()
def generate_batch(model, prompts: list, *, registry=None, questions: list[str] | None = None,
                   max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0,
                   top_p: float = 1.0, toolken_bias: float | None = None, max_tool_calls: int = 8,
                   tool_timeout: float = 5.0, stop: list[str] | None = None,
                   max_result_chars: int = 200, backend: str = "xgrammar",
                   seed: int | None = None, batch_size: int = 8, progress: bool = False,
                   rerank_top_k: int = 0, rerank_none_bias: float = 0.0, rerank_method: str = "pmi",
                   tool_options=None, close_results: bool | None = None) -> list[Generation]:
    """Generate for every prompt, ``batch_size`` rows at a time; same options as ``generate``."""
    from tqdm.auto import tqdm

    registry = registry if registry is not None else model.registry
    if registry is None:
        from .decode import GenerationError
        raise GenerationError("no tools attached: pass registry= or model.attach_tools(pack)")
    tool_mode = model.tool_mode(registry, backend, tool_options)
    reranker = make_reranker(model, registry, rerank_top_k, rerank_none_bias, rerank_method)
    digits = digit_tokens(model, close_results)
    questions = questions or [None] * len(prompts)
    out: list[Generation] = []
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
    for s in range(0, len(prompts), batch_size):
        out += _one_batch(model, registry, tool_mode, prompts[s:s + batch_size],
                          questions[s:s + batch_size], max_new_tokens, do_sample, temperature,
                          top_p, toolken_bias, max_tool_calls, tool_timeout, stop,
                          max_result_chars, seed, reranker, digits)
        bar.update(len(prompts[s:s + batch_size]))
    bar.close()
    return out


def _one_batch(model, registry, tool_mode, prompts, questions, max_new_tokens, do_sample,
               temperature, top_p, toolken_bias, max_tool_calls, tool_timeout, stop,
               max_result_chars, seed, reranker=None, digits=None) -> list[Generation]:
    t0 = time.perf_counter()
    tok, V, dev = model.tokenizer, model.vocab_size, model.base.device
    texts_q = [_prompt_text(tok, p, q) for p, q in zip(prompts, questions)]
    ids = [tok(t, add_special_tokens=True)["input_ids"] for t, _ in texts_q]
    B = len(ids)
    cache, P, computed = _shared_prefix(model, ids)  # [prefix][left padding][row's own tokens]
    W = max(len(r) - P for r in ids)
    pad = tok.pad_token_id or 0
    x = torch.tensor([[pad] * (W - len(r) + P) + r[P:] for r in ids], device=dev)
    mask = torch.tensor([[1] * P + [0] * (W - len(r) + P) + [1] * (len(r) - P) for r in ids], device=dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, P:]
    z = _forward(model, x, mask, pos, cache)
    bias = model.toolken_bias if toolken_bias is None else toolken_bias
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = {i for i in [tok.eos_token_id, *_list(model.base.model.generation_config.eos_token_id)] if i is not None}
    rows = [{"out": [], "text": "", "calls": [], "queue": [], "done": False, "reason": "max_new_tokens",
             "stats": {"prefilled": len(r) - P + (computed if b == 0 else 0), "decoded": 0},
             "steps": 0, "pending": None, "reranks": []} for b, r in enumerate(ids)]
    next_pos = pos[:, -1] + 1
    while not all(r["done"] for r in rows):
        feed = []
        for b, r in enumerate(rows):
            if r["done"]:
                feed.append(pad)
                continue
            if r["queue"]:  # result tokens still being fed
                feed.append(r["queue"].pop(0))
            else:
                feed.append(_choose(model, registry, tool_mode, r, z[b], texts_q[b][1], V, bias,
                                    max_tool_calls, do_sample, temperature, top_p, gen,
                                    tool_timeout, max_result_chars, reranker, digits))
                r["steps"] += 1
            r["out"].append(feed[-1])
            _update_text(tok, r, stop, eos, feed[-1])
            if r["steps"] >= max_new_tokens and not r["queue"]:
                r["done"] = True
        if all(r["done"] for r in rows):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
        z = _forward(model, torch.tensor([feed], device=dev).T, mask, next_pos[:, None], cache)
        next_pos = next_pos + 1
    wall = time.perf_counter() - t0
    return [Generation(text=r["text"], calls=r["calls"], prefilled_tokens=r["stats"]["prefilled"],
                       decoded_tokens=r["stats"]["decoded"], seconds=wall, stop_reason=r["reason"],
                       token_ids=ids[b] + r["out"], reranks=r["reranks"]) for b, r in enumerate(rows)]


def _shared_prefix(model, ids: list[list[int]]):
    """(cache, P, computed): a cache holding the rows' common first P tokens for every row,
    taken from ``model.prefix_store`` where it has them; ``computed`` of them were encoded now."""
    P = min(len(r) for r in ids) - 1
    for r in ids[1:]:
        P = next((i for i in range(P) if r[i] != ids[0][i]), P)
    store = model.prefix_store
    if P < store.min_reuse:
        return _new_cache(model), 0, 0
    cache, n = store.start(model, ids[0][:P + 1], limit=P)
    if n < P:
        model.decode(torch.tensor([ids[0][n:P]], device=model.base.device), cache)
        store.remember(model, ids[0][:P], cache)
    cache.batch_repeat_interleave(len(ids))
    return cache, P, P - n


def _choose(model, registry, tool_mode, r, z, question, V, bias, max_tool_calls, do_sample,
            temperature, top_p, gen, timeout, max_chars, reranker=None, digits=None) -> int:
    """The row's next token: a vocabulary token, or the first token of a tool's result."""
    zz = z.clone()
    zz[V:] += bias
    if len(r["calls"]) >= max_tool_calls:
        zz[V:] = float("-inf")
    if digits is not None and r["calls"] and r["calls"][-1].end == len(r["text"]):
        zz[digits] = float("-inf")  # a result is a whole number

    def sample(v):
        return _pick(v, do_sample, temperature, top_p, gen)

    choice = sample(zz)
    if choice >= V and reranker is not None:
        choice = reranker.choose(zz, question, r["text"], sample, r["reranks"], r["stats"])
    if choice < V:
        r["stats"]["decoded"] += 1
        return choice
    tool = registry[choice - V]
    trace = CallTrace(tool=tool.name)
    result = _call_tool(tool_mode, tool, question, r["text"], sample, r["stats"], trace, timeout, max_chars)
    r["calls"].append(trace)
    if result is None:
        r["stats"]["decoded"] += 1
        return sample(zz[:V])
    new = model.tokenizer(result_join(r["text"], result), add_special_tokens=False)["input_ids"]
    r["stats"]["prefilled"] += len(new)
    r["queue"] = new[1:]
    r["pending"] = (trace, len(new))
    return new[0]


def _update_text(tok, r, stop, eos, last) -> None:
    before = r["text"]
    new_text = tok.decode(r["out"], skip_special_tokens=True)
    if r["pending"] and not r["queue"]:  # the whole result is in: record its offsets
        trace, _ = r["pending"]
        trace.start, trace.end = len(new_text) - len(trace.result), len(new_text)
        r["pending"] = None
    hit = stop_at(before, new_text, stop)
    if hit is not None:
        new_text, r["reason"], r["done"] = new_text[:hit], "stop", True
    elif last in eos and not r["queue"]:
        r["reason"], r["done"] = "eos", True
    r["text"] = new_text
