"""Constrained decoding of tool arguments ("tool mode" in ToolkenGPT, Hao et al. 2023).

When a toolken wins, the prompt ends with ``<op>(`` and the model writes the positional
arguments and the closing parenthesis, e.g. ``311, 112)`` or ``"FGH Elementary School")``.
This module turns a tool's JSON-schema parameters into

* a grammar (``call_grammar``, xgrammar's EBNF dialect) that the decoder is held to,
* a parser (``parse_arguments``) that reads the written text back into typed values without
  ``eval``, and its inverse ``format_arguments`` (for writing training targets),
* a per-call token mask (``make_constraint`` -> ``ArgumentConstraint``) backed by xgrammar
  (default) or llguidance. Compiled grammars are cached per tokenizer.

Argument syntax: arguments separated by ``,`` plus an optional single space, then ``)``.
integer ``-?[0-9]{1,20}``; number ``-?[0-9]{1,15}(\\.[0-9]{1,8})?%?`` (``4%`` means 0.04);
string: double-quoted, no raw newline, escapes ``\\"`` and ``\\\\``, at most ``max_string``
characters; boolean ``true|false``; a variadic array (``"x-variadic": true``) is one or more
items (``minItems``/``maxItems`` respected) and must be the last parameter. Parameters follow
``x-order`` (else the order of ``properties``); optional ones may be left off the end.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import numpy as np
import torch

BACKENDS = ("xgrammar", "llguidance")
SCALAR_TYPES = ("integer", "number", "string", "boolean")
INT_DIGITS = 20  # integer: at most 20 digits
NUM_DIGITS, FRAC_DIGITS = 15, 8  # number: at most 15 digits, '.', 8 digits, '%' (~25 chars)

_RULES = {
    "integer": f'"-"? [0-9]{{1,{INT_DIGITS}}}',
    "number": f'"-"? [0-9]{{1,{NUM_DIGITS}}} ("." [0-9]{{1,{FRAC_DIGITS}}})? "%"?',
    "boolean": '"true" | "false"',
}
_INT_RE = re.compile(r"-?[0-9]+")
_NUM_RE = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)(%?)")
_BARE_RE = re.compile(r"[^,\s\"]+")


# ---------------------------------------------------------------- schema -> positional params


@dataclass(frozen=True)
class Param:
    """One positional parameter as the argument syntax sees it."""

    name: str
    type: str  # one of SCALAR_TYPES (for a variadic: the type of its items)
    variadic: bool = False
    min_items: int = 1  # variadic only
    max_items: int | None = None  # variadic only
    enum: tuple | None = None  # allowed values, if the schema lists them


def positional_params(schema: dict) -> tuple[list[Param], int]:
    """The positional parameters of a tool schema and how many must be written (min arity)."""
    props = schema.get("properties", {})
    order = list(schema.get("x-order") or props)
    if sorted(order) != sorted(props):
        raise ValueError(f"x-order {order} must list each of the properties {list(props)} once")
    required = set(schema.get("required", []))
    params, min_args = [], 0
    for i, name in enumerate(order):
        p = _param(name, props[name])
        if p.variadic and i != len(order) - 1:
            raise ValueError(f"variadic parameter {name!r} must be the last one in {order}")
        if name in required and not (p.variadic and p.min_items == 0):
            min_args = i + 1  # an optional param before a required one cannot be left out
        params.append(p)
    return params, min_args


def _param(name: str, spec: dict) -> Param:
    kind = spec.get("type")
    if kind == "array" and spec.get("x-variadic"):
        item = _param(name, spec.get("items", {"type": "number"}))
        return Param(name, item.type, True, int(spec.get("minItems", 1)), spec.get("maxItems"),
                     item.enum)
    if kind not in SCALAR_TYPES:
        raise ValueError(f"parameter {name!r} has type {kind!r}; supported: {list(SCALAR_TYPES)}"
                         " or an array with 'x-variadic': true")
    enum = spec.get("enum")
    return Param(name, kind, enum=tuple(enum) if enum is not None else None)


# ---------------------------------------------------------------- grammar


def call_grammar(schema: dict, max_string: int = 200) -> str:
    """EBNF grammar (xgrammar dialect, ``root ::= ...``) for ``arg, arg, ...)``."""
    return _grammar(json.dumps(schema), max_string)  # key order kept: properties order matters


@lru_cache(maxsize=1024)
def _grammar(schema_json: str, max_string: int) -> str:
    params, min_args = positional_params(json.loads(schema_json))
    rules: dict[str, str] = {}  # rule name -> body, for the types in use
    items = [_item_expr(p, i, rules, max_string) for i, p in enumerate(params)]
    body = " sep ".join(items[:min_args])
    tail = ""
    for k in range(len(items) - 1, min_args - 1, -1):  # optional ones nest from the end
        sep = "sep " if k > 0 else ""
        tail = f"({sep}{items[k]}{' ' + tail if tail else ''})?"
    lines = ["root ::= " + " ".join(x for x in (body, tail, '")"') if x)]
    if len(params) > 1 or any(p.variadic for p in params):
        rules["sep"] = '"," " "?'
    lines += [f"{name} ::= {rules[name]}" for name in sorted(rules)]
    return "\n".join(lines) + "\n"


def _item_expr(p: Param, i: int, rules: dict[str, str], max_string: int) -> str:
    """The grammar expression for parameter i (a rule name, or a repetition for a variadic)."""
    if p.enum is not None:
        name = f"enum{i}"
        rules[name] = " | ".join(_ebnf_literal(_format_value(v, p.type)) for v in p.enum)
    elif p.type == "string":  # "...", no raw newline, escapes \" and \\ count as one char
        name = "string"
        rules[name] = f'"\\"" ([^"\\\\\\n\\r] | "\\\\" ["\\\\]){{0,{max_string}}} "\\""'
    else:
        name = p.type
        rules[name] = _RULES[name]
    if not p.variadic:
        return name
    lo, hi = max(p.min_items, 1) - 1, None if p.max_items is None else p.max_items - 1
    if hi is not None and hi < lo:
        raise ValueError(f"parameter {p.name!r}: maxItems {p.max_items} < minItems {p.min_items}")
    reps = ("*" if lo == 0 else f"{{{lo},}}") if hi is None else f"{{{lo},{hi}}}"
    return f"({name} (sep {name}){reps})"


def _ebnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- parsing and formatting


def parse_number(text: str) -> int | float:
    """``'-3'`` -> -3 (int), ``'1.50'`` -> 1.5, ``'4%'`` -> 0.04. No exponents, nan or inf."""
    m = _NUM_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a number (-?digits[.digits][%])")
    digits, percent = m.groups()
    if percent:
        return float(Decimal(digits).scaleb(-2))
    return float(digits) if "." in digits else int(digits)


def parse_arguments(text: str, schema: dict) -> list:
    """Typed positional values from the text written in tool mode (with or without the ``)``).

    A variadic parameter contributes its items in place, so ``fn(*values)`` calls a Python
    function whose last parameter is ``*args``. Raises ValueError naming the text on failure.
    """
    params, min_args = positional_params(schema)
    try:
        raw = _split_arguments(text)
        if len(raw) < min_args or (len(raw) > len(params) and not (params and params[-1].variadic)):
            n = f"{min_args}" if min_args == len(params) else f"{min_args} to {len(params)}"
            raise ValueError(f"expected {n}{'+' if params and params[-1].variadic else ''} "
                             f"arguments, got {len(raw)}")
        p_last = params[-1] if params else None
        if p_last is not None and p_last.variadic and len(raw) >= len(params):
            k = len(raw) - len(params) + 1
            if k < p_last.min_items or (p_last.max_items is not None and k > p_last.max_items):
                raise ValueError(f"{p_last.name!r} takes {p_last.min_items} to "
                                 f"{p_last.max_items or 'any'} items, got {k}")
        return [_typed(tok, params[min(i, len(params) - 1)]) for i, tok in enumerate(raw)]
    except ValueError as e:
        raise ValueError(f"cannot parse arguments {text!r}: {e}") from None


def _split_arguments(text: str) -> list[tuple[str, bool]]:
    """``'1, "a,b")'`` -> [('1', False), ('a,b', True)]: (value text, was quoted)."""
    s = text.rstrip()
    s = s[:-1] if s.endswith(")") else s
    out: list[tuple[str, bool]] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] == " ":
            i += 1
        if i == n and not out:
            return out  # no arguments at all
        if i < n and s[i] == '"':
            value, i = _scan_string(s, i)
            out.append((value, True))
        else:
            m = _BARE_RE.match(s, i)
            if m is None:
                raise ValueError(f"expected a value at position {i}")
            out.append((m.group(), False))
            i = m.end()
        while i < n and s[i] == " ":
            i += 1
        if i == n:
            return out
        if s[i] != ",":
            raise ValueError(f"expected ',' or ')' at position {i}, found {s[i]!r}")
        i += 1


def _scan_string(s: str, i: int) -> tuple[str, int]:
    chars, i = [], i + 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(chars), i + 1
        if c == "\n":
            raise ValueError("raw newline inside a string")
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in '"\\':
                raise ValueError(f"bad escape at position {i} (only \\\" and \\\\)")
            i += 1
            c = s[i]
        chars.append(c)
        i += 1
    raise ValueError("unterminated string")


def _typed(tok: tuple[str, bool], p: Param) -> Any:
    text, quoted = tok
    if quoted != (p.type == "string"):
        raise ValueError(f"{p.name!r} expects a {p.type}, got {text!r}")
    if p.type == "integer":
        if not _INT_RE.fullmatch(text):
            raise ValueError(f"{p.name!r} expects an integer, got {text!r}")
        value: Any = int(text)
    elif p.type == "number":
        value = parse_number(text)
    elif p.type == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"{p.name!r} expects true or false, got {text!r}")
        value = text == "true"
    else:
        value = text
    if p.enum is not None and value not in p.enum:
        raise ValueError(f"{p.name!r} must be one of {list(p.enum)}, got {value!r}")
    return value


def format_arguments(values: list, schema: dict) -> str:
    """Inverse of parse_arguments: ``[311, 112]`` -> ``'311, 112)'``."""
    params, _ = positional_params(schema)
    kinds = [params[min(i, len(params) - 1)].type for i in range(len(values))]
    return ", ".join(_format_value(v, k) for v, k in zip(values, kinds)) + ")"


def _format_value(v: Any, kind: str) -> str:
    if kind == "string":
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == "boolean":
        return "true" if v else "false"
    if kind == "number" and isinstance(v, float):
        return format(Decimal(repr(v)), "f")  # no exponent: 1e-05 -> 0.00001
    return str(int(v)) if kind == "integer" else str(v)


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
        self.keep_bits = torch.from_numpy(np.packbits(keep, bitorder="little").view(np.int32))
        self.backend: dict[str, Any] = {}  # backend name -> tokenizer info / compiler
        self.compiled: dict[tuple[str, str], Any] = {}  # (backend, grammar) -> compiled


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
    with _LOCK:
        if (backend, grammar) in v.compiled:
            return v.compiled[backend, grammar]
        if backend == "xgrammar":
            import xgrammar as xgr

            if backend not in v.backend:
                info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=v.vocab_size)
                v.backend[backend] = xgr.GrammarCompiler(info)
            compiled = v.backend[backend].compile_grammar(grammar)
        else:
            import llguidance
            import llguidance.hf

            if backend not in v.backend:
                try:
                    v.backend[backend] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=v.vocab_size)
                except ValueError as e:
                    raise ValueError(f"llguidance cannot use this tokenizer ({e}); "
                                     "try backend='xgrammar'") from e
            compiled = llguidance.LLMatcher(v.backend[backend],
                                            llguidance.grammar_from("ebnf", grammar), log_level=0)
            if compiled.is_error():
                raise ValueError(f"llguidance rejected the grammar: {compiled.get_error()}")
        v.compiled[backend, grammar] = compiled
        return compiled


class ArgumentConstraint:
    """Token mask for one tool call being written; ``advance`` it with each chosen token.

    Columns at or past the tokenizer's vocabulary (toolkens, padding rows) and special tokens
    (EOS included) are never allowed; ``is_done()`` turns True once the ``)`` is written.
    """

    def __init__(self, vocab: _Vocab, backend: str, matcher: Any):
        self.vocab, self.backend, self.matcher = vocab, backend, matcher
        self.tokens: list[int] = []  # accepted so far
        self._bits = torch.zeros(1, vocab.words, dtype=torch.int32)  # (1, ceil(V/32))
        self._mask: torch.Tensor | None = None  # (V,) bool for the current state

    def _current(self) -> torch.Tensor:
        if self._mask is None:
            if self.backend == "xgrammar":
                self.matcher.fill_next_token_bitmask(self._bits)
            else:
                self.matcher.unsafe_compute_mask_ptr(self._bits.data_ptr(), self.vocab.words * 4)
            self._bits &= self.vocab.keep_bits
            bits = np.unpackbits(self._bits.numpy().view(np.uint8), bitorder="little")
            self._mask = torch.from_numpy(bits[: self.vocab.vocab_size]).bool()
        return self._mask

    def allowed_mask(self, total_vocab: int) -> torch.Tensor:
        """(total_vocab,) bool, True = allowed now."""
        if total_vocab < self.vocab.vocab_size:
            raise ValueError(f"total_vocab {total_vocab} < vocab_size {self.vocab.vocab_size}")
        out = torch.zeros(total_vocab, dtype=torch.bool)
        out[: self.vocab.vocab_size] = self._current()
        return out

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Set disallowed logits to -inf in place and return them; (V_total,) or (1, V_total)."""
        if logits.dim() not in (1, 2) or (logits.dim() == 2 and logits.shape[0] != 1):
            raise ValueError(f"logits must be (V_total,) or (1, V_total), got {tuple(logits.shape)}")
        n = self.vocab.vocab_size
        if logits.shape[-1] < n:
            raise ValueError(f"logits have {logits.shape[-1]} columns < vocab_size {n}")
        mask = self._current().to(logits.device, non_blocking=True)
        logits[..., n:] = float("-inf")  # toolkens and padding rows
        logits[..., :n].masked_fill_(~mask, float("-inf"))
        return logits

    def advance(self, token_id: int) -> None:
        """Accept one token; ValueError (state unchanged) if it is not allowed here."""
        ok = 0 <= token_id < self.vocab.vocab_size and not self.is_done()
        ok = ok and bool(self.vocab.keep[token_id])
        if ok and self.backend == "xgrammar":
            ok = self.matcher.accept_token(token_id)
        elif ok:  # llguidance enters a permanent error state on a bad token: check first
            ok = self.matcher.validate_tokens([token_id]) == 1 and self.matcher.consume_token(token_id)
        if not ok:
            raise ValueError(f"token {token_id} ({self._piece(token_id)!r}) is not allowed after "
                             f"{self._piece(*self.tokens)!r}")
        self.tokens.append(token_id)
        self._mask = None

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
            self._mask = None

    def _piece(self, *ids: int) -> str:
        tok = self.vocab.tokenizer()
        if tok is None or any(not 0 <= i < self.vocab.vocab_size for i in ids):
            return " ".join(map(str, ids))
        return tok.decode(list(ids))


def make_constraint(schema: dict, tokenizer, *, vocab_size: int, backend: str = "xgrammar",
                    max_string: int = 200) -> ArgumentConstraint:
    """A fresh constraint for one call; grammars compile once per (tokenizer, backend)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown constraint backend {backend!r}; valid: {list(BACKENDS)}")
    grammar = call_grammar(schema, max_string)
    vocab = _vocab_for(tokenizer, vocab_size)
    compiled = _compile(vocab, tokenizer, backend, grammar)
    if backend == "xgrammar":
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    else:
        matcher = compiled.deep_copy()
    return ArgumentConstraint(vocab, backend, matcher)
