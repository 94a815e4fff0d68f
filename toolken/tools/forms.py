"""Written forms of a call: how running text spells a tool's call, e.g. ``{a} * {b}`` for
``multiply`` or ``lcm({a}, {b}...)`` for ``lcm``. A tool pack declares them (``@tool(forms=...)``);
generation with ``inline_calls`` reads a call the answer has already written (``1260 * 12 =``)
instead of having tool mode write its arguments again (``GenerationConfig.inline_calls``).

Form syntax: ``{name}`` is a parameter's value (a number for integer and number parameters; a
double-quoted string for string ones); ``...`` right after a placeholder repeats the text
between the last two placeholders with a further value of the tool's variadic parameter
(``{a} + {b}...`` reads ``1 + 2 + 3``); whitespace in the form matches any whitespace or none,
and letters match in either case. Numbers may carry a sign, and thousands commas (``2,025``)
where the form has no comma of its own (in ``gcd(72,96,120)`` a comma separates values).

A written call counts only when the text ends with it, then ``=`` (and spaces), and the call
is not the tail of a longer expression (``5 + 3 * 2 =`` is not ``multiply(3, 2)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_PLAIN_NUMBER = r"-?\d+(?:\.\d+)?"  # in a form that separates values by commas
_STRING = r'"(?:[^"\\\n]|\\["\\])*"'
_PLACEHOLDER = re.compile(r"\{(\w+)\}(\.\.\.)?")
_TAIL = re.compile(r"\s*=\s*\Z")
_BEFORE_EXPR = re.compile(r"(?:[-+*/^%×÷(]|(?:^|\s)x|\d)\Z", re.IGNORECASE)  # after spaces
_TOUCHING = re.compile(r"[.\w]\Z")  # right before it, no space: 1.5 * 2 is not "5 * 2"


@dataclass(frozen=True)
class WrittenCall:
    """A call found at the end of a text: the tool, its positional argument text (as tool
    mode would write it, ``1260, 12``) and the expression as written."""

    tool: str
    argument_text: str
    expression: str


def _literal(text: str) -> str:
    out = []
    for part in re.split(r"(\s+)", text):
        if not part:
            continue
        out.append(r"\s*" if part.isspace() else r"\s*".join(re.escape(c) for c in part))
    return "".join(out)


@dataclass(frozen=True)
class Form:
    """One compiled form of a tool."""

    tool: str
    text: str  # the form as declared
    order: tuple[str, ...]  # the tool's positional parameters
    pattern: re.Pattern
    more: tuple[str, str] | None  # '...': (separator regex, value regex)


def compile_form(tool: str, form: str, names: list[str], types: dict[str, str],
                 variadic: str | None) -> Form:
    """The regex of one form; ValueError (naming ``where`` and the form) when a placeholder is
    not a parameter, a parameter appears twice, or ``...`` follows no variadic tool's pair."""
    where = f"tool {tool!r}"
    if not isinstance(form, str) or not form.strip():
        raise ValueError(f"{where}: a form must be a non-empty string, got {form!r}")
    pieces, seen, last_end, prev = [], [], 0, None  # prev: (separator, value) regexes of '...'
    holders = list(_PLACEHOLDER.finditer(form))
    number = _PLAIN_NUMBER if "," in form else _NUMBER  # lcm(72,96,120) is three numbers
    if not holders:
        raise ValueError(f"{where}: form {form!r} has no {{parameter}} placeholder")
    for i, m in enumerate(holders):
        name, repeat = m.group(1), m.group(2)
        if name not in names:
            raise ValueError(f"{where}: form {form!r} names {{{name}}}, which is not a "
                             f"parameter (parameters: {names})")
        if name in seen:
            raise ValueError(f"{where}: form {form!r} names {{{name}}} twice")
        seen.append(name)
        sep = _literal(form[last_end:m.start()])
        value = _STRING if types.get(name) == "string" else number
        pieces.append(sep + f"(?P<{name}>{value})")
        if repeat:
            if variadic is None or i == 0:
                raise ValueError(f"{where}: form {form!r}: '...' repeats the last separator with "
                                 f"the variadic parameter, and this tool has "
                                 f"{'none' if variadic is None else 'no value before it'}")
            pieces.append(f"(?P<_more>(?:{sep}{value})*)")
            prev = (sep, value)
        last_end = m.end()
    fixed = [n for n in names if n != variadic]
    if seen != fixed[:len(seen)]:
        raise ValueError(f"{where}: form {form!r} writes {seen}; a form writes the first "
                         f"parameters in their order ({fixed}), as far as it goes")
    if variadic is not None and variadic in seen:
        raise ValueError(f"{where}: form {form!r}: the variadic parameter {{{variadic}}} is "
                         f"written as '...' after the value before it")
    pieces.append(_literal(form[last_end:]))
    return Form(tool, form, tuple(names), re.compile("".join(pieces), re.IGNORECASE), prev)


def _value_text(raw: str) -> str:
    return raw if raw.startswith('"') else raw.replace(",", "")


def read_written_call(text: str, forms: list[Form]) -> WrittenCall | None:
    """The call the text ends with (then ``=``), read by the first form that matches the longest
    expression; None when there is none (``forms``: e.g. ``Tool.compiled_forms`` of each tool)."""
    tail = _TAIL.search(text)
    if tail is None:
        return None
    body = text[:tail.start()]
    best = None
    for form in forms:
        m = next(_ends_with(form.pattern, body), None)
        if m is not None and (best is None or m.start() < best[1].start()):
            best = (form, m)
    if best is None:
        return None
    form, m = best
    before = body[:m.start()]
    if _BEFORE_EXPR.search(before.rstrip()) or _TOUCHING.search(before):
        return None  # the tail of a longer expression
    groups = m.groupdict()
    values = [_value_text(groups[n]) for n in form.order if groups.get(n) is not None]
    if groups.get("_more") and form.more is not None:
        sep, value = form.more
        values += [_value_text(v) for v in re.findall(f"{sep}({value})", groups["_more"], re.IGNORECASE)]
    return WrittenCall(form.tool, ", ".join(values), m.group(0).strip())


def _ends_with(pattern: re.Pattern, body: str):
    """Matches of ``pattern`` that end where ``body`` ends, earliest start first."""
    for start in range(max(0, len(body) - 200), len(body)):
        m = pattern.fullmatch(body, start)
        if m is not None:
            yield m
