"""The argument language of tool calls: what a model writes between ``<op>(`` and ``)``,
e.g. ``311, 112`` or ``"FGH Elementary School"``. One module for all who read or write it:
tool mode (the grammar it decodes under, the parser of what it wrote), the in-context baseline
and ``Tool.call`` (``tool.parse_call_args`` accepts a superset: bare or single-quoted strings,
small arithmetic; ``tests/test_constrain.py`` checks that every text this grammar allows reads
the same there), retrieved demos and synth (``format_arguments``, the inverse of the parser).

* ``call_grammar``: a tool's JSON-schema parameters as a grammar (xgrammar's EBNF dialect,
  which llguidance reads too);
* ``parse_arguments``: the written text back into typed values, without ``eval``;
* ``format_arguments``: values as the grammar writes them;
* ``context_numbers``: the numbers of a text, for a grammar that may only copy them.

Argument syntax: arguments separated by ``,`` plus an optional single space, then ``)``;
with ``names`` (``GenerationConfig.arg_names``) each argument but a variadic's items follows its
parameter's name and ``=`` (``part=12, whole=30)``), which the parser accepts with or without.
integer ``-?[0-9]{1,20}``; number ``-?[0-9]{1,15}(\\.[0-9]{1,8})?%?`` (``4%`` means 0.04);
string: double-quoted, no raw newline, escapes ``\\"`` and ``\\\\``, at most ``max_string``
characters; boolean ``true|false``; a variadic array (``"x-variadic": true``, like ``*args``)
is one or more bare items and must be the last parameter; any other array is a list
``[a, b]``; ``minItems``/``maxItems`` are respected; ``["integer", "null"]`` reads as integer
(null is never written). Parameters follow ``x-order`` (else the order of ``properties``);
optional ones may be left off the end.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

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
# one value, then ',' or the end: "string" (escapes \" \\, no raw newline), [list], bare word
_STR = r'"(?:[^"\\\n]|\\["\\])*"'
_VALUE_RE = re.compile(rf' *(?:([A-Za-z_]\w*) ?= ?)?(?:({_STR})|\[((?:{_STR}|[^\]"])*)\]|([^,\s"\[\]=]+)) *(,|\Z)')
_UNESCAPE_RE = re.compile(r'\\(["\\])')


# ---------------------------------------------------------------- schema -> positional params


@dataclass(frozen=True)
class Param:
    """One positional parameter as the argument syntax sees it."""

    name: str
    type: str  # one of SCALAR_TYPES (for an array: the type of its items)
    shape: str = "scalar"  # or "variadic" (*args: items in place) or "list" ([a, b])
    min_items: int = 0  # arrays only
    max_items: int | None = None  # arrays only
    enum: tuple | None = None  # allowed values, if the schema lists them
    min_length: int = 0  # strings: the schema's minLength (e.g. 1: never the empty string)

    @property
    def variadic(self) -> bool:
        return self.shape == "variadic"


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
        if name in required and not (p.variadic and p.min_items == 0):  # *args may be empty
            min_args = i + 1  # an optional param before a required one cannot be left out
        params.append(p)
    return params, min_args


def _param(name: str, spec: dict) -> Param:
    kind = spec.get("type")
    if isinstance(kind, list) and len([k for k in kind if k != "null"]) == 1:
        kind = next(k for k in kind if k != "null")  # Optional[int]; null is never written
    if kind == "array":
        item = _param(name, spec.get("items", {}))
        if item.shape != "scalar":
            raise ValueError(f"parameter {name!r}: arrays of arrays are not supported")
        shape = "variadic" if spec.get("x-variadic") else "list"
        lo = int(spec.get("minItems", 1 if shape == "variadic" else 0))
        return Param(name, item.type, shape, lo, spec.get("maxItems"), item.enum)
    if kind not in SCALAR_TYPES:
        raise ValueError(f"parameter {name!r} has type {kind!r}; supported: {list(SCALAR_TYPES)}"
                         " and arrays of those")
    enum = spec.get("enum")
    min_length = spec.get("minLength", 0) if kind == "string" else 0
    if not isinstance(min_length, int) or isinstance(min_length, bool) or min_length < 0:
        raise ValueError(f"parameter {name!r}: minLength must be an integer >= 0, got {min_length!r}")
    return Param(name, kind, enum=tuple(enum) if enum is not None else None, min_length=min_length)


# ---------------------------------------------------------------- grammar


def call_grammar(schema: dict, max_string: int = 200, numbers: tuple[str, ...] | None = None,
                 strings: tuple[str, ...] | None = None, names: bool = False) -> str:
    """EBNF grammar (xgrammar dialect, ``root ::= ...``) for ``arg, arg, ...)``.

    ``names``: each argument is written after its parameter's name, ``name=value`` (a
    variadic parameter's items bare, as Python passes ``*args``).
    ``numbers`` (from ``context_numbers``): integer and number arguments may only be one of
    these literals (the integer ones for integers), with an optional ``-``; None = any number.
    ``strings`` (from ``context_strings``): string arguments (but enums) may only be one of
    these texts; None = any string.
    """
    if not isinstance(max_string, int) or max_string < 0:
        raise ValueError(f"max_string must be an int >= 0, got {max_string!r}")
    if numbers is not None:
        bad = [n for n in numbers if not isinstance(n, str) or not _NUM_RE.fullmatch(n) or n[0] == "-"]
        if bad or not numbers:
            raise ValueError(f"numbers must be a non-empty tuple of literals like '12', '0.5' or "
                             f"'4%', got {bad or numbers!r}")
        numbers = tuple(numbers)
    if strings is not None:
        bad = [x for x in strings if not isinstance(x, str) or not x or '"' in x or "\n" in x]
        if bad or not strings:
            raise ValueError(f"strings must be a non-empty tuple of non-empty texts without '\"' "
                             f"or a newline, got {bad or strings!r}")
        strings = tuple(strings)
    return _grammar(json.dumps(schema), max_string, numbers, strings, bool(names))  # key order: properties order matters


@lru_cache(maxsize=1024)
def _grammar(schema_json: str, max_string: int, numbers: tuple[str, ...] | None = None,
             strings: tuple[str, ...] | None = None, names: bool = False) -> str:
    params, min_args = positional_params(json.loads(schema_json))
    rules: dict[str, str] = {}  # rule name -> body, for the types in use
    if numbers is not None:
        rules.update(_number_rules(numbers))
    if strings is not None:  # each text as the argument syntax writes it (\\ for a backslash)
        rules["string"] = '"\\"" (' + " | ".join(
            _ebnf_literal(x.replace("\\", "\\\\")) for x in sorted(set(strings))) + ') "\\""'

    items = [_item_expr(p, i, rules, max_string, strings is not None) for i, p in enumerate(params)]
    if names:
        items = [x if p.variadic else f"({_ebnf_literal(p.name + '=')} {x})"
                 for p, x in zip(params, items)]
    body = " sep ".join(items[:min_args])
    tail = ""
    for k in range(len(items) - 1, min_args - 1, -1):  # optional ones nest from the end
        sep = "sep " if k > 0 else ""
        tail = f"({sep}{items[k]}{' ' + tail if tail else ''})?"
    lines = ["root ::= " + " ".join(x for x in (body, tail, '")"') if x)]
    if "sep" in lines[0]:
        rules["sep"] = '"," " "?'
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    return "\n".join(lines) + "\n"


def _item_expr(p: Param, i: int, rules: dict[str, str], max_string: int,
               context_strings: bool = False) -> str:
    """The grammar expression for parameter i (a rule name, or a sequence for a variadic);
    ``context_strings``: the "string" rule lists the allowed texts (none of them empty)."""
    if p.enum is not None:
        name = f"enum{i}"
        rules[name] = " | ".join(_ebnf_literal(_format_scalar(v, p.type)) for v in p.enum)
    elif p.type == "string":
        name = "string"
        if name not in rules:
            _add_string_rules(rules, max_string)
        if p.min_length and context_strings:  # every allowed text has at least one character
            if p.min_length > 1:
                raise ValueError(f"parameter {p.name!r}: minLength {p.min_length} with context "
                                 f"strings is not supported (1 is)")
        elif p.min_length:  # n chars first, then up to max_string - n more
            n = p.min_length
            if n > max_string:
                raise ValueError(f"parameter {p.name!r}: minLength {n} > the longest string "
                                 f"written ({max_string} chars)")
            name = f"string{n}"
            rest = f" chars{max_string - n}" if max_string > n else ""
            rules[name] = '"\\"" ' + " ".join(["char"] * n) + rest + ' "\\""'

    else:
        name = p.type
        rules.setdefault(name, _RULES[name])
    if p.shape == "scalar":
        return name
    lo, hi = max(p.min_items, 1), p.max_items  # a variadic that is written has >= 1 item
    if hi is not None and hi < lo:
        raise ValueError(f"parameter {p.name!r}: maxItems {hi} < minItems {p.min_items}")
    more = _repeat(f"sep {name}", lo - 1, None if hi is None else hi - 1)
    seq = f"{name} {more}" if more else name
    if p.variadic:
        return f"({seq})"
    return f'("[" {seq} "]")' if p.min_items else f'("[" ({seq})? "]")'


def _number_rules(numbers: tuple[str, ...]) -> dict[str, str]:
    """Rules "number" / "integer" that allow only the given literals (integers: the integral
    ones; none of those: any integer)."""
    alts = lambda xs: '"-"? (' + " | ".join(_ebnf_literal(x) for x in sorted(set(xs))) + ")"  # noqa: E731
    ints = [x for x in numbers if _INT_RE.fullmatch(x)]
    return {"number": alts(numbers), "integer": alts(ints) if ints else _RULES["integer"]}


_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_WORDS.update(double="2", doubles="2", doubling="2", twice="2", triple="3", triples="3",
              tripling="3", thrice="3", quadruple="4", quadrupling="4", half="0.5", dozen="12")
_CONTEXT_NUM_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)|\b([A-Za-z]+)\b")


def context_strings(text: str, max_string: int = 200) -> tuple[str, ...] | None:
    """The double-quoted spans of ``text`` (``How similar are "A." and "B."?`` -> ``A.``,
    ``B.``), for a grammar whose string arguments may only copy them; None when it has none."""
    found = [m for m in re.findall(r'"([^"\n]+)"', text) if len(m) <= max_string]
    return tuple(dict.fromkeys(found)) or None


def context_numbers(text: str) -> tuple[str, ...] | None:
    """The numbers a call can copy or derive from ``text``: each number as written (``1,234``
    also as 1234), a percentage also as its fraction (``4%`` -> ``4%``, ``4`` and
    ``0.04``), number words (``three`` -> ``3``, ``tripling`` -> ``3``, ``half`` -> ``0.5``).
    None when the text has no number."""
    out: dict[str, None] = {}
    for m in _CONTEXT_NUM_RE.finditer(text):
        whole, frac, pct, word = m.groups()
        if word is not None:
            if word.lower() in _WORDS:
                out[_WORDS[word.lower()]] = None
            continue
        if "," in whole:  # 1,234: one number, or a list written without spaces
            out.update(dict.fromkeys(whole.split(",")))
        lit = whole.replace(",", "") + (frac or "")
        out[lit] = None
        if pct:
            out[lit + "%"] = None
            out[format(Decimal(lit).scaleb(-2).normalize(), "f")] = None
    return tuple(out) or None


def _add_string_rules(rules: dict[str, str], max_string: int) -> None:
    """At most max_string chars as a chain of rules (charsN: up to N more chars). xgrammar
    precomputes a mask for each rule, while its {0,N} repetition costs ~10 ms per step."""
    rules["string"] = f'"\\"" chars{max_string} "\\""' if max_string else '"\\"" "\\""'
    for n in range(max_string, 0, -1):
        rules[f"chars{n}"] = f'"" | char chars{n - 1}' if n > 1 else '"" | char'
    if max_string:
        rules["char"] = '[^"\\\\\\n\\r] | "\\\\" ["\\\\]'  # escapes: \" and \\


def _repeat(x: str, lo: int, hi: int | None) -> str:
    """``x`` lo to hi times (hi None: unbounded), unrolled: xgrammar's {m,n} is slow to match."""
    tail = f"({x})*" if hi is None else ""
    for _ in range(0 if hi is None else hi - lo):
        tail = f"({x}{' ' + tail if tail else ''})?"
    return " ".join([x] * lo + ([tail] if tail else []))


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
    function whose last parameter is ``*args``. An argument may follow its parameter's name
    (``part=12, whole=30``, as ``call_grammar(names=True)`` writes): the name must be the one
    of its position. Raises ValueError naming the text on failure.
    """
    params, min_args = positional_params(schema)
    try:
        s = text.rstrip()
        raw = _split_arguments(s[:-1] if s.endswith(")") else s)
        n, last = len(raw), params[-1] if params else None
        if last is not None and last.variadic and n >= len(params):  # variadic present
            k, lo, hi = n - len(params) + 1, max(last.min_items, 1), last.max_items
            if k < lo or (hi is not None and k > hi):
                raise ValueError(f"{last.name!r} takes {lo} to {hi or 'any'} items, got {k}")
        elif not min_args <= n <= len(params):
            raise ValueError(f"expected {min_args} to {len(params)} arguments, got {n}")
        out = []
        for i, (kind, value, name) in enumerate(raw):
            p = params[min(i, len(params) - 1)]
            if name is not None and (name != p.name or (p.variadic and i >= len(params))):
                raise ValueError(f"argument {i + 1} is named {name!r}; its parameter is {p.name!r}"
                                 + (" (a variadic's items after the first are not named)"
                                    if name == p.name else ""))
            out.append(_typed((kind, value), p))
        return out
    except ValueError as e:
        raise ValueError(f"cannot parse arguments {text!r}: {e}") from None


def _split_arguments(s: str, inner: bool = False) -> list[tuple[str, Any, str | None]]:
    """``'1, "a,b", x=[2]'`` -> [('bare', '1', None), ('quoted', 'a,b', None),
    ('list', [('bare', '2', None)], 'x')]: (kind, value, the name written before it)."""
    out: list[tuple[str, Any, str | None]] = []
    i = 0
    while out or s.strip():  # an empty text is a call without arguments
        m = _VALUE_RE.match(s, i)
        if m is None:
            raise ValueError(f"no value (number, true/false, \"string\" or [list]) at "
                             f"{s[i:i + 20]!r}")
        name, quoted, items, bare, comma = m.groups()
        if name is not None and inner:
            raise ValueError(f"a list item cannot be named ({name!r}=)")
        if quoted is not None:
            out.append(("quoted", _UNESCAPE_RE.sub(r"\1", quoted[1:-1]), name))
        elif bare is None:
            out.append(("list", _split_arguments(items, inner=True), name))
        else:
            out.append(("bare", bare, name))
        i = m.end()
        if not comma:
            break
    return out


def _typed(raw: tuple[str, Any], p: Param) -> Any:
    if (raw[0] == "list") != (p.shape == "list"):
        raise ValueError(f"{p.name!r} expects {'a [list] of ' if p.shape == 'list' else 'a '}"
                         f"{p.type}, got {raw[1]!r}")
    if raw[0] != "list":
        return _scalar(raw, p)
    if len(raw[1]) < p.min_items or (p.max_items is not None and len(raw[1]) > p.max_items):
        raise ValueError(f"{p.name!r} takes {p.min_items} to {p.max_items or 'any'} items")
    return [_scalar(r[:2], p) for r in raw[1]]


def _scalar(raw: tuple[str, Any], p: Param) -> Any:
    kind, text = raw
    if (kind == "quoted") != (p.type == "string"):
        raise ValueError(f"{p.name!r} expects a {p.type}, got {text!r}")
    if p.type == "integer" and _INT_RE.fullmatch(text):
        value: Any = int(text)
    elif p.type == "number":
        value = parse_number(text)
    elif p.type == "boolean" and text in ("true", "false"):
        value = text == "true"
    elif p.type == "string":
        value = text
    else:
        raise ValueError(f"{p.name!r} expects a {p.type}, got {text!r}")
    if p.enum is not None and value not in p.enum:
        raise ValueError(f"{p.name!r} must be one of {list(p.enum)}, got {value!r}")
    return value


def format_arguments(values: list, schema: dict, names: bool = False) -> str:
    """Inverse of parse_arguments: ``[311, 112]`` -> ``'311, 112)'``; with ``names``, as
    ``call_grammar(names=True)`` writes them: ``'a=311, b=112)'``."""
    params, _ = positional_params(schema)
    out = []
    for i, v in enumerate(values):
        p = params[min(i, len(params) - 1)]
        text = ("[" + ", ".join(_format_scalar(x, p.type) for x in v) + "]"
                if p.shape == "list" else _format_scalar(v, p.type))
        out.append(f"{p.name}={text}" if names and not p.variadic else text)
    return ", ".join(out) + ")"


def name_calls(text: str, tool_name: str, schema: dict) -> str:
    """``text`` with each call ``<tool_name>(args)`` whose arguments parse rewritten with the
    parameters' names (``<percent>(12, 30)`` -> ``<percent>(part=12, whole=30)``), for demos
    shown in tool mode under ``names``; calls that do not parse stay as they are."""
    opener = f"<{tool_name}>("
    out, i = [], 0
    while (j := text.find(opener, i)) >= 0:
        start = j + len(opener)
        end = _call_end(text, start)
        out.append(text[i:start])
        i = start
        if end is None:
            continue
        try:
            values = parse_arguments(text[start:end], schema)
        except ValueError:
            continue
        out.append(format_arguments(values, schema, names=True))
        i = end + 1
    return "".join(out) + text[i:]


def _call_end(text: str, start: int) -> int | None:
    """Index of the ``)`` closing the argument list that starts at ``start`` (outside quoted
    strings and brackets), or None."""
    quoted = escaped = False
    depth = 0
    for k in range(start, len(text)):
        c = text[k]
        if quoted:
            escaped, quoted = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            quoted = True
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == ")" and depth == 0:
            return k
        elif c == "\n":
            return None
    return None


def _format_scalar(v: Any, kind: str) -> str:
    if kind == "string":
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == "boolean":
        return "true" if v else "false"
    if kind == "number" and isinstance(v, float):
        return format(Decimal(repr(v)), "f")  # no exponent: 1e-05 -> 0.00001
    return str(int(v)) if kind == "integer" else str(v)
