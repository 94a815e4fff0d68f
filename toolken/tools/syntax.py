"""Text <-> values for tools: Python signatures and docstrings -> JSON schema, and argument
text as a model writes it -> Python values.

Pure helpers behind ``toolken.tools.tool`` (``@tool`` and ``parse_call_args``); they raise plain
``TypeError``/``ValueError``, which the public API turns into ``ToolError``s. Nothing here
calls ``eval``: numbers, including small arithmetic like ``39/3`` or ``4%`` (which appear in
ToolkenGPT's FuncQA prompts), are read by a recursive-descent parser.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import json
import math
import re
import types
import typing
from typing import Any, Callable

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
_ARG_LINE = re.compile(r"^(\s+)\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(\*\*|[-+*/^()%]))")


def main_type(schema: dict) -> str | None:
    """The JSON type of a property schema, ignoring "null" (``["integer", "null"]``)."""
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t


# ---------------------------------------------------------------------------- signatures
def schema_from_function(f: Callable) -> tuple[str, dict]:
    """(description, parameters schema) of a type-hinted function; see ``toolken.tools.tool.tool``."""
    where = f"function {getattr(f, '__qualname__', f)!r}"
    summary, arg_docs = parse_docstring(inspect.getdoc(f))
    try:
        hints = typing.get_type_hints(f)
    except Exception as e:
        raise TypeError(f"{where}: cannot resolve its type hints ({e})") from e
    props: dict[str, dict] = {}
    required: list[str] = []
    for p in inspect.signature(f).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            raise TypeError(f"{where}: **{p.name} is not supported; name each argument")
        if p.name not in hints:
            raise TypeError(f"{where}: parameter {p.name!r} has no type hint; give it one of "
                            f"int, float, str, bool, Literal[...], an Enum or list[...] of those")
        hint, optional = _unwrap_optional(hints[p.name])
        schema = _json_schema_for(hint, f"{where}: parameter {p.name!r}")
        if p.kind is p.VAR_POSITIONAL:
            schema = {"type": "array", "items": schema, "x-variadic": True, "default": []}
        elif optional:
            schema["type"] = [schema["type"], "null"]
        if p.default is not p.empty and json_ok(p.default):
            schema["default"] = p.default
        elif optional and p.default is p.empty:
            schema["default"] = None
        elif p.default is p.empty and p.kind is not p.VAR_POSITIONAL:
            required.append(p.name)
        if arg_docs.get(p.name):
            schema["description"] = arg_docs[p.name]
        props[p.name] = schema
    return summary, {"type": "object", "properties": props, "required": required,
                     "x-order": list(props), "additionalProperties": False}


def json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [h for h in typing.get_args(hint) if h is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def _json_schema_for(hint: Any, where: str, top: bool = True) -> dict:
    if hint in JSON_TYPES:
        return {"type": JSON_TYPES[hint]}
    choices = _choices(hint)
    if choices is not None:
        kinds = {JSON_TYPES.get(type(v)) for v in choices}
        if len(kinds) != 1 or None in kinds:
            raise TypeError(f"{where}: the values of {hint!r} must all be int, float, str or "
                            f"bool, and of one type; got {list(choices)!r}")
        return {"type": kinds.pop(), "enum": list(choices)}
    item = typing.get_args(hint)
    if top and typing.get_origin(hint) is list and len(item) == 1:
        return {"type": "array", "items": _json_schema_for(item[0], where, top=False)}
    raise TypeError(f"{where}: type hint {hint!r} has no JSON-schema mapping; allowed: int, "
                    f"float, str, bool, Literal[...], an Enum, list[...] of those, "
                    f"Optional[...] of those")


def _choices(hint: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` or an ``Enum`` class (its members' values)."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return tuple(m.value for m in hint)
    return None


def enum_arguments(f: Callable) -> dict[str, type]:
    """{parameter: Enum class} for the parameters of ``f`` hinted with an Enum (or a list or
    Optional of one): their JSON values are turned back into members before ``f`` runs."""
    out = {}
    for name, hint in typing.get_type_hints(f).items():
        hint, _ = _unwrap_optional(hint)
        if typing.get_origin(hint) is list:
            hint = (typing.get_args(hint) or (None,))[0]
        if isinstance(hint, type) and issubclass(hint, enum.Enum) and name != "return":
            out[name] = hint
    return out


def to_members(value: Any, cls: type) -> Any:
    """A JSON value (or a list of them) -> the ``cls`` member(s) it names; None stays None."""
    if isinstance(value, list):
        return [to_members(v, cls) for v in value]
    return value if value is None or isinstance(value, cls) else cls(value)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(first paragraph, {argument: description from the Google-style ``Args:`` section})."""
    lines = (doc or "").splitlines()
    summary = list(itertools.takewhile(lambda s: s.strip() and s.strip() != "Args:", lines))
    args: dict[str, str] = {}
    current, indent, inside = None, None, False
    for line in lines:
        if line.strip() in ("Args:", "Arguments:"):
            inside = True
            continue
        if not inside or not line.strip():
            continue
        if not line[0].isspace():
            break  # the next section (Returns:, Raises:, ...)
        m = _ARG_LINE.match(line)
        if m and (indent is None or len(m.group(1)) <= indent):
            current, indent = m.group(2), len(m.group(1))
            args[current] = m.group(3).strip()
        elif current:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return " ".join(s.strip() for s in summary), args


# ---------------------------------------------------------------------------- call text
def strip_parens(s: str) -> str:
    """``(1.03, 14)`` -> ``1.03, 14``; ``(1+2)*3`` stays as it is."""
    if s.startswith("(") and s.endswith(")") and _scan(s)[1] == [len(s) - 1]:
        return s[1:-1].strip()
    return s


def _scan(s: str) -> tuple[list[int], list[int]]:
    """(positions of top-level commas, positions where the depth returns to 0), respecting
    quotes and backslash escapes; ValueError if quotes or parentheses don't balance."""
    commas, closes, depth, quote, escaped = [], [], 0, None, False
    for i, c in enumerate(s):
        if quote:
            if c == quote and not escaped:
                quote = None
            escaped = c == "\\" and not escaped
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' at position {i}")
            if depth == 0:
                closes.append(i)
        elif c == "," and depth == 0:
            commas.append(i)
    if quote or depth:
        raise ValueError("unclosed quote" if quote else "unclosed '('")
    return commas, closes


def split_args(s: str) -> list[str]:
    """Top-level comma-separated items (commas inside quotes or parentheses stay)."""
    if not s:
        return []
    bounds = [-1, *_scan(s)[0], len(s)]
    items = [s[a + 1:b].strip() for a, b in zip(bounds, bounds[1:])]
    if "" in items:
        raise ValueError(f"empty argument at position {items.index('')}")
    return items


def is_quoted(s: str) -> bool:
    """True for one whole quoted string: ``"a, b"`` yes, ``"a", "b"`` no."""
    if len(s) < 2 or s[0] not in "\"'":
        return False
    i = 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
        elif s[i] == s[0]:
            return i == len(s) - 1
        else:
            i += 1
    return False


def unquote(s: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), s[1:-1])


def read_value(item: str, json_type: str | None) -> Any:
    """One argument's text -> a value of ``json_type`` (None: unknown, best effort)."""
    quoted = is_quoted(item)
    if quoted and json_type in ("string", None):
        return unquote(item)
    raw = unquote(item) if quoted else item
    if json_type == "string":
        return raw
    if json_type == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return arith(raw)
    except ValueError as e:
        if json_type is None:
            return raw
        raise ValueError(f"{item!r} is not a {json_type} ({e})") from None


def _tokens(text: str) -> list:
    tokens, pos, end = [], 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unexpected {text[pos:].strip()[:20]!r}")
        num, op = m.groups()
        if num is not None:
            tokens.append(float(num) if re.search(r"[.eE]", num) else int(num))
        else:
            tokens.append(op)
        pos = m.end()
    if not tokens:
        raise ValueError("empty")
    return tokens


def arith(text: str) -> int | float:
    """A number (``-3``, ``1.5e3``, ``4%`` = 0.04) or a small arithmetic expression
    (+ - * / ^ ** parentheses), read by recursive descent; ValueError otherwise."""
    tokens, i = _tokens(text), 0

    def peek() -> Any:
        return tokens[i] if i < len(tokens) else None

    def take() -> Any:
        nonlocal i
        i += 1
        return tokens[i - 1]

    def expr() -> float:  # term (('+' | '-') term)*
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    def term() -> float:  # unary (('*' | '/') unary)*
        v = unary()
        while peek() in ("*", "/"):
            op, w = take(), unary()
            if op == "/" and w == 0:
                raise ValueError("division by zero")
            v = v * w if op == "*" else v / w
        return v

    def unary() -> float:  # ('-' | '+') unary | atom (('^' | '**') unary)?
        if peek() in ("+", "-"):
            return -unary() if take() == "-" else unary()
        v = atom()
        if peek() in ("^", "**"):
            take()
            try:
                return math.pow(v, unary())
            except (OverflowError, ValueError) as e:
                raise ValueError(f"power out of range ({e})") from None
        return v

    def atom() -> float:  # number '%'* | '(' expr ')' '%'*
        t = take() if peek() is not None else None
        if t == "(":
            v = expr()
            if peek() != ")":
                raise ValueError("missing ')'")
            take()
        elif isinstance(t, (int, float)):
            v = t
        else:
            raise ValueError(f"expected a number, got {t!r}")
        while peek() == "%":
            take()
            v = v / 100
        return v

    try:
        value = expr()
    except (RecursionError, OverflowError) as e:  # nested too deeply; a result too large
        raise ValueError(f"expression out of range ({type(e).__name__})") from None
    if i != len(tokens):
        raise ValueError(f"unexpected {tokens[i]!r}")
    return value
