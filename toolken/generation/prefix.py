"""Prompt-prefix reuse: recent prompts' KV caches, so a new prompt that shares a prefix with
one of them (the same few-shot template, the same system prompt, or a prompt that extends an
earlier one) only encodes what is new — automatic prefix caching, as in vLLM.

The base model is frozen, so a cache computed once for a token prefix stays valid for the
life of the base; the store is keyed by token ids, never by text.
"""

from __future__ import annotations

from collections import OrderedDict

from .steps import new_cache


def _lcp(a: tuple, b: list) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def copy_cache(model, cache, n: int):
    """A new cache holding the first ``n`` positions of ``cache`` (its own tensors)."""
    out = new_cache(model)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys[..., :n, :].clone(), layer.values[..., :n, :].clone(), i)
    return out


class PrefixStore:
    """Least-recently-used prompt caches (batch size 1), bounded by a total token count."""

    def __init__(self, max_tokens: int = 16384, min_reuse: int = 8):
        self.max_tokens, self.min_reuse = max_tokens, min_reuse
        self.entries: OrderedDict[tuple, object] = OrderedDict()
        self.hits = self.reused_tokens = 0

    def clear(self) -> None:
        self.entries.clear()

    def start(self, model, ids: list[int], limit: int | None = None):
        """(cache, n): a cache already holding ``ids[:n]``, the longest stored prefix of
        ``ids`` (at most ``limit`` tokens, and never all of them: the last prompt token is
        always fed so that its logits come out). A fresh cache and 0 when none is long enough."""
        cap = len(ids) - 1 if limit is None else min(limit, len(ids) - 1)
        best, n = None, 0
        for key in self.entries:
            m = min(_lcp(key, ids), cap)
            if m > n:
                best, n = key, m
        if best is None or n < self.min_reuse:
            return new_cache(model), 0
        self.entries.move_to_end(best)
        self.hits += 1
        self.reused_tokens += n
        return copy_cache(model, self.entries[best], n), n

    def remember(self, model, ids: list[int], cache) -> None:
        """Keep a copy of ``cache``, which holds exactly ``ids``."""
        if len(ids) > self.max_tokens:
            return
        key = tuple(ids)
        for k in list(self.entries):  # a stored prompt that this one extends is redundant
            if len(k) <= len(key) and key[:len(k)] == k:
                del self.entries[k]
        self.entries[key] = copy_cache(model, cache, len(ids))
        while sum(map(len, self.entries)) > self.max_tokens:
            self.entries.popitem(last=False)
