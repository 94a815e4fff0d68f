"""The frozen model's forward steps on a KV cache, and token choice: what reasoning mode,
tool mode and the rerank share. A step feeds token ids onto a transformers ``Cache`` (extended
in place) and returns ``[vocab ; toolkens]`` logits, fp32."""

from __future__ import annotations

import torch


class GenerationError(ValueError):
    """A generation cannot start or a tool-mode step failed; the message says why."""


def new_cache(model):
    """An empty KV cache of full layers, even for a model with sliding-window layers (Mistral,
    Gemma2): those cannot be cropped back, and generation rolls the cache back after tool
    mode. The attention mask still applies the window, so the logits are the same."""
    from transformers import DynamicCache

    return DynamicCache()


def step(model, ids: list[int], cache) -> torch.Tensor:
    """Feed ids (batch of one) onto the cache; return the last position's (V + K) logits."""
    return step_all(model, ids, cache, 1)[0]


def step_all(model, ids: list[int], cache, n: int) -> torch.Tensor:
    """Feed ids (batch of one) onto the cache; return the (n, V + K) logits of the last n."""
    x = torch.tensor([ids], device=model.base.device)
    out = model.decode(x, cache)
    return model.logits_from_hidden(out.last_hidden_state[0, -n:])


def pick(z: torch.Tensor, do_sample: bool, temperature: float, top_p: float, gen) -> int:
    """Greedy argmax, or a sample at ``temperature`` from the top-p nucleus."""
    if not do_sample:
        return int(z.argmax())
    p = torch.softmax(z / max(temperature, 1e-6), dim=-1)
    if top_p < 1.0:
        sp, si = p.sort(descending=True)
        keep = sp.cumsum(0) - sp < top_p
        p = torch.zeros_like(p).scatter(0, si[keep], sp[keep])
    return int(torch.multinomial(p / p.sum(), 1, generator=gen))


def lookup_draft(ids: list[int], k: int, max_ngram: int = 3, min_ngram: int = 2) -> list[int]:
    """Prompt-lookup drafting: the k tokens that followed the latest earlier occurrence of the
    context's last n-gram (longest n first), or [] when the context has no such repeat."""
    for n in range(max_ngram, min_ngram - 1, -1):
        if len(ids) <= n:
            continue
        tail = ids[-n:]
        for start in range(len(ids) - n - 1, -1, -1):
            if ids[start:start + n] == tail:
                return ids[start + n:start + n + k]
    return []


def stop_at(before: str, text: str, stop) -> int | None:
    """Where the first stop string that the newest text completed begins, or None."""
    hits = [text.index(s, max(0, len(before) - len(s))) for s in stop or ()
            if s in text[max(0, len(before) - len(s)):]]
    return min(hits) if hits else None


def held(text: str, stop) -> int:
    """Length of the longest end of text that is a proper beginning of a stop string."""
    return max((n for s in stop or () for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])),
               default=0)
