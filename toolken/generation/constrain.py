"""Constrained decoding of tool arguments ("tool mode" in ToolkenGPT, Hao et al. 2023).

When a toolken wins, the prompt ends with ``<op>(`` and the model writes the positional
arguments and the closing parenthesis, e.g. ``311, 112)``. The argument language (grammar,
parser, formatter) lives in ``toolken.tools.arguments``; this module holds it to the decoder: a
per-call token mask (``make_constraint`` -> ``ArgumentConstraint``) backed by xgrammar (default)
or llguidance, compiled grammars cached per tokenizer, toolken columns always masked.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import torch

from ..tools.arguments import call_grammar
from .config import BACKENDS

# ---------------------------------------------------------------- masking


class _Vocab:
    """Per-(tokenizer, vocab_size) state: banned ids, backend tokenizers, compiled grammars."""

    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        self.tokenizer = weakref.ref(tokenizer)  # the cache must not keep it alive
        self.words = (vocab_size + 31) // 32
        keep = np.zeros(self.words * 32, dtype=bool)
        keep[: min(len(tokenizer), vocab_size)] = True  # rows past the tokenizer: padding
        special = set(getattr(tokenizer, "all_special_ids", []))
        special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                    if getattr(t, "special", False)}
        keep[[i for i in special if i < vocab_size]] = False  # EOS, <|im_start|>, ... never
        self.keep = keep  # (32 * words,) bool
        self.keep_bits = np.packbits(keep, bitorder="little").view(np.int32)  # (words,)
        self.backend: dict[str, Any] = {}  # backend name -> tokenizer info / compiler
        self.compiled: dict[tuple[str, str], Any] = {}  # (backend, grammar) -> compiled


_NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)
_CACHE: dict[tuple[int, int], _Vocab] = {}
_LOCK = threading.Lock()


def _vocab_for(tokenizer, vocab_size: int) -> _Vocab:
    key = (id(tokenizer), vocab_size)
    with _LOCK:
        v = _CACHE.get(key)
        if v is None or v.tokenizer() is not tokenizer:
            v = _Vocab(tokenizer, vocab_size)
            _CACHE[key] = v
            weakref.finalize(tokenizer, _CACHE.pop, key, None)
        return v


def _compile(v: _Vocab, tokenizer, backend: str, grammar: str) -> Any:
    """Compiled grammar (xgrammar) or template matcher (llguidance), cached in ``v``."""
    with _LOCK:
        if (backend, grammar) not in v.compiled:
            if len(v.compiled) >= 512:  # per-question grammars (numbers=...): keep it bounded
                v.compiled.clear()
            if backend not in v.backend:  # the tokenizer's side, once per tokenizer
                v.backend[backend] = _backend_tokenizer(tokenizer, backend, v.vocab_size)
            if backend == "xgrammar":
                compiled = v.backend[backend].compile_grammar(grammar)
            else:
                import llguidance

                lark = llguidance.grammar_from("ebnf", grammar)
                compiled = llguidance.LLMatcher(v.backend[backend], lark, log_level=0)
                if compiled.is_error():
                    raise ValueError(f"llguidance rejected the grammar: {compiled.get_error()}")
            v.compiled[backend, grammar] = compiled
        return v.compiled[backend, grammar]


def _backend_tokenizer(tokenizer, backend: str, vocab_size: int) -> Any:
    if backend == "xgrammar":
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        return xgr.GrammarCompiler(info)
    import llguidance.hf

    try:
        return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
    except ValueError as e:
        raise ValueError(f"llguidance cannot use this tokenizer ({e}); "
                         "try backend='xgrammar'") from e


class ArgumentConstraint:
    """Token mask for one tool call being written; ``advance`` it with each chosen token.

    Columns at or past the tokenizer's vocabulary (toolkens, padding rows) and special tokens
    (EOS included) are never allowed; ``is_done()`` turns True once the ``)`` is written.
    """

    def __init__(self, vocab: _Vocab, backend: str, matcher: Any):
        self.vocab, self.backend, self.matcher = vocab, backend, matcher
        self.tokens: list[int] = []  # accepted so far
        self._bits = torch.zeros(1, vocab.words, dtype=torch.int32)  # (1, ceil(V/32))
        self._ban: np.ndarray | None = None  # (V,) bool, True = banned in the current state

    def _banned(self) -> np.ndarray:
        """(V,) bool, True = not allowed in the current state (computed once per state)."""
        if self._ban is None:
            if self.backend == "xgrammar":
                self.matcher.fill_next_token_bitmask(self._bits)
            else:
                self.matcher.unsafe_compute_mask_ptr(self._bits.data_ptr(), self.vocab.words * 4)
            words = ~(self._bits.numpy() & self.vocab.keep_bits)  # set bit = banned
            bits = np.unpackbits(words.view(np.uint8), bitorder="little")  # little-endian words
            self._ban = bits[: self.vocab.vocab_size].view(np.bool_)
        return self._ban

    def allowed_mask(self, total_vocab: int) -> torch.Tensor:
        """(total_vocab,) bool, True = allowed now."""
        n = self.vocab.vocab_size
        if total_vocab < n:
            raise ValueError(f"total_vocab {total_vocab} < vocab_size {n}")
        out = torch.zeros(total_vocab, dtype=torch.bool)
        np.logical_not(self._banned(), out=out.numpy()[:n])
        return out

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Set disallowed logits to -inf in place and return them; (V_total,) or (1, V_total)."""
        n = self.vocab.vocab_size
        if logits.dim() not in (1, 2) or (logits.dim() == 2 and logits.shape[0] != 1) \
                or logits.shape[-1] < n:
            raise ValueError(f"logits must be (V_total,) or (1, V_total) with V_total >= {n}, "
                             f"got {tuple(logits.shape)}")
        logits[..., n:] = float("-inf")  # toolkens and padding rows
        if logits.device.type == "cpu" and logits.dtype in _NUMPY_FLOATS \
                and logits.is_contiguous() and not logits.requires_grad:
            # numpy: no intra-op thread pool, which costs milliseconds on a busy CPU
            np.putmask(logits.numpy().reshape(-1)[:n], self._banned(), -np.inf)
        else:
            ban = torch.from_numpy(self._banned()).to(logits.device, non_blocking=True)
            logits[..., :n].masked_fill_(ban, float("-inf"))
        return logits

    def advance(self, token_id: int) -> None:
        """Accept one token; ValueError (state unchanged) if it is not allowed here."""
        ok = 0 <= token_id < self.vocab.vocab_size and not self.is_done()
        ok = ok and bool(self.vocab.keep[token_id])
        if ok and self.backend == "xgrammar":
            ok = self.matcher.accept_token(token_id)
        elif ok:  # llguidance enters a permanent error state on a bad token: check first
            m = self.matcher
            ok = m.validate_tokens([token_id]) == 1 and m.consume_token(token_id)
        if not ok:
            raise ValueError(f"token {token_id} ({self._piece(token_id)!r}) is not allowed after "
                             f"{self._piece(*self.tokens)!r}")
        self.tokens.append(token_id)
        self._ban = None

    def is_done(self) -> bool:
        if self.backend == "xgrammar":
            return self.matcher.is_terminated()
        return self.matcher.is_stopped() or self.matcher.is_accepting()

    def rollback(self, n: int) -> None:
        """Undo the last n accepted tokens."""
        if not 0 <= n <= len(self.tokens):
            raise ValueError(f"cannot roll back {n} tokens, {len(self.tokens)} accepted")
        if n:
            self.matcher.rollback(n)
            del self.tokens[-n:]
            self._ban = None

    def _piece(self, *ids: int) -> str:
        tok = self.vocab.tokenizer()
        ok = tok is not None and all(0 <= i < self.vocab.vocab_size for i in ids)
        return tok.decode(list(ids)) if ok else " ".join(map(str, ids))


def make_constraint(schema: dict, tokenizer, *, vocab_size: int, backend: str = "xgrammar",
                    max_string: int = 200, numbers: tuple[str, ...] | None = None,
                    strings: tuple[str, ...] | None = None, names: bool = False) -> ArgumentConstraint:
    """A fresh constraint for one call; grammars compile once per (tokenizer, backend);
    ``numbers`` / ``strings``: the literals numeric / string arguments may take; ``names``:
    each argument after its parameter's name (see ``call_grammar``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown constraint backend {backend!r}; valid: {list(BACKENDS)}")
    grammar = call_grammar(schema, max_string, numbers, strings, names)
    vocab = _vocab_for(tokenizer, vocab_size)
    compiled = _compile(vocab, tokenizer, backend, grammar)
    if backend == "xgrammar":
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    else:
        matcher = compiled.deep_copy()
    return ArgumentConstraint(vocab, backend, matcher)
