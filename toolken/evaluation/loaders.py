"""Loaders for the published benchmark files, in their own formats.

Each loader returns ``(examples, skipped)``: the well-formed records as :class:`Example`
and one :class:`toolken.core.data.Problem` per malformed record. Nothing is dropped silently; the
caller counts and reports ``skipped``.

    from toolken.evaluation import load_benchmark
    examples, skipped = load_benchmark("funcqa-oh", "funcqa_oh.json")

Formats (see ``../shared/benchmarks/README.md`` and its ``format_sample_*`` files):

- ``funcqa-oh`` (ToolkenGPT, Hao et al., 2023): ``{"question", "answer": number,
  "func": "<op>(args)=result"}``; gold = the answer as a float, ``meta["tool"]`` = op (the
  outermost one of a nested call). A signed call (``-<ln>(0.5)=0.6931``) is read too.
- ``funcqa-mh``: ``{"question", "answer": str or number, "calculation": ["<op>(..)=..", ...]}``;
  ``meta["tools"]`` = the ops in the order they run (inner calls of a nested one first).
- A ``func`` / ``calculation`` that does not parse loses only the record's tool metadata:
  the record is scored, ``meta["warning"]`` says why (:func:`load_warnings` lists them).
- ``kamel``: ``{"question", "answer": [{"chosen", "alternative", "rdf"}], "api": "P241"}``;
  gold = the relation id; ``meta["answers"]`` = every accepted answer string.
- ``gsm8k-xl``: JSON lines; ``{v_i}`` in ``question`` is replaced by ``enhanced_v[i-1]``
  (an integral value is written without ".0": 98304.0 -> "98304"; a value written as a
  string, such as ``'27/64'``, is written as is); gold = ``enhanced_result``. Values and the
  result may be numbers or strings of numbers combined with ``+ - * /`` and parentheses,
  read exactly by :func:`exact_value` (fractions, no ``eval``).
- ``apibench-*`` (Gorilla, Patil et al., 2023): JSON lines ``{"code", "api_call", "provider",
  "api_data"}``. ``code`` is either TorchHub's ``"{'Instruction': ..., 'Output': {...}}"``
  (the instruction is usually unquoted, so it is cut out with a regex, not literal_eval'd)
  or HuggingFace's ``"###Instruction: ...\\n###Output: ..."``; both layouts are accepted for
  every provider. Question = the instruction; gold = ``{"api_call", "api_name", "domain"}``
  of the gold record; the whole ``api_data`` is in ``meta["api_data"]``.

Either container is accepted for every benchmark: a JSON list (the file starts with ``[``)
or JSON lines. Positions: in a JSON-lines file ``Problem.index`` and ``Example.id`` are the
record's 1-based line number; in a JSON list, its 0-based position (``data[i]``). Each
``Problem.detail`` starts with ``"line N: "`` or ``"record i: "`` so that it reads alone.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from ..core.data import DataError, Problem, json_lines, read_text
from ..core.prompts import instruction

__all__ = ["Example", "BENCHMARKS", "load_benchmark", "load_funcqa_oh", "load_funcqa_mh",
           "load_kamel", "load_gsm8k_xl", "load_apibench", "read_records", "exact_value",
           "call_ops", "load_warnings"]

BENCHMARKS = ("funcqa-oh", "funcqa-mh", "kamel", "gsm8k-xl", "apibench-torchhub",
              "apibench-huggingface", "apibench-tensorflowhub")


@dataclass
class Example:
    id: str  # line number (JSON lines) or list position (JSON list) in the source file
    question: str
    gold: Any
    meta: dict = field(default_factory=dict)


class _Bad(Exception):
    """One record is malformed: a generic reason (groups in summaries) and the bad value."""

    def __init__(self, reason: str, value: Any = ""):
        super().__init__(reason)
        self.reason, self.value = reason, value


# ---------------------------------------------------------------- reading


def read_records(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], list[Problem], bool]:
    """Raw records of a JSON list or JSON-lines file: ``([(index, obj)], problems, jsonl)``.

    Lines that are not JSON become problems; a JSON list that does not parse as a whole is
    an error (no record can be located), as is an empty file.
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: no records (the file is empty)")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON list ({e.msg} at line {e.lineno}, "
                            f"column {e.colno})") from None
        return list(enumerate(data)), [], False
    records, problems = [], []
    for n, obj in json_lines(text.split("\n")):
        if isinstance(obj, json.JSONDecodeError):
            problems.append(Problem(n, "invalid JSON", f"line {n}: {obj.msg} at column {obj.colno}"))
        else:
            records.append((n, obj))
    return records, problems, True


def _load(path, one: Callable[[dict], tuple[str, Any, dict]]):
    records, skipped, jsonl = read_records(path)
    examples = []
    for i, obj in records:
        where = f"line {i}" if jsonl else f"record {i}"
        try:
            if not isinstance(obj, dict):
                raise _Bad("record is not a JSON object", type(obj).__name__)
            question, gold, meta = one(obj)
        except _Bad as e:
            skipped.append(Problem(i, e.reason, f"{where}: {_short(e.value)}"))
            continue
        examples.append(Example(str(i), question, gold, meta))
    skipped.sort(key=lambda p: p.index)
    return examples, skipped


def _short(value: Any, n: int = 80) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _field(obj: dict, key: str) -> Any:
    if key not in obj:
        raise _Bad(f"field '{key}' missing", sorted(obj))
    return obj[key]


def _text(obj: dict, key: str) -> str:
    v = _field(obj, key)
    if not isinstance(v, str) or not v.strip():
        raise _Bad(f"field '{key}' is not a non-empty string", v)
    return v


def _number(obj: dict, key: str) -> float:
    """A finite number, given as a JSON number or a numeric string ("1,234", "27/64" and
    other :func:`exact_value` forms allowed)."""
    v = _field(obj, key)
    try:
        x = float(exact_value(v.replace(",", "") if isinstance(v, str) else v))
    except (ValueError, OverflowError):
        raise _Bad(f"field '{key}' is not a number", v) from None
    return x


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def exact_value(value: Any) -> Fraction:
    """A JSON number or a string such as ``"27/64"``, ``"-3.5"`` or ``"(1+2)/4"`` as an exact
    :class:`~fractions.Fraction`: number literals combined with ``+ - * /``, unary signs and
    parentheses, walked over the syntax tree (never ``eval``). Anything else -- names, calls,
    powers, ``bool``, ``nan``/``inf``, division by zero -- raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return Fraction(repr(value))  # the shortest decimal form: 0.1 -> 1/10
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError(f"not a number or arithmetic of numbers: {value!r}")
    try:
        tree = ast.parse(value.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not a number or arithmetic of numbers: {value!r}") from None
    return _walk(tree.body, value)


def _walk(node: ast.AST, text: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return exact_value(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        x = _walk(node.operand, text)
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _walk(node.left, text), _walk(node.right, text)
        if isinstance(node.op, ast.Div) and b == 0:
            raise ValueError(f"division by zero in {text!r}")
        return _BINOPS[type(node.op)](a, b)
    raise ValueError(f"not a number or arithmetic of numbers: {text!r}")


# ---------------------------------------------------------------- ToolkenGPT

_CALL_TOKEN = re.compile(r"<(\w+)>\s*\(|[()]")


def call_ops(text: Any) -> list[str] | None:
    """The ops of one call written ``[+-]<op>(args)=result``, in the order they run (inner
    calls of a nested one first, the outermost last), or None if ``text`` is not such a call
    (nothing but a sign before the first ``<op>(``, balanced parentheses, ``=`` after them)."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    first = _CALL_TOKEN.search(s)
    if first is None or first.group(1) is None or s[: first.start()].strip() not in ("", "-", "+"):
        return None
    stack: list[str | None] = []
    ops: list[str] = []
    for m in _CALL_TOKEN.finditer(s, first.start()):
        if m.group(0) == ")":
            if not stack:
                return None
            op = stack.pop()
            if op is not None:
                ops.append(op)
            if not stack:
                rest = s[m.end():].strip()
                return ops if rest.startswith("=") and rest[1:].strip() else None
        else:
            stack.append(m.group(1))
    return None


def _warning(meta: dict, field_name: str, value: Any, expected: str) -> dict:
    meta["warning"] = (f"field '{field_name}' is not {expected} ({_short(value)}): "
                       f"scored without its tool metadata")
    return meta


def _funcqa_oh(obj: dict):
    question, gold = _text(obj, "question"), _number(obj, "answer")
    func = obj.get("func")
    ops = call_ops(func)
    if not ops:
        return question, gold, _warning({"tool": None, "func": func}, "func", func,
                                        "'<op>(args)=result'")
    return question, gold, {"tool": ops[-1], "func": func}


def _funcqa_mh(obj: dict):
    question, gold = _text(obj, "question"), _number(obj, "answer")
    steps = obj.get("calculation")
    ops = ([call_ops(s) for s in steps] if isinstance(steps, list) else [None])
    if not ops or any(o is None for o in ops):
        return question, gold, _warning({"tools": None, "calculation": steps}, "calculation",
                                        steps, "a list of '<op>(args)=result'")
    return question, gold, {"tools": [op for o in ops for op in o], "calculation": steps}


def load_warnings(examples: list[Example]) -> list[str]:
    """``"record i: ..."`` for each loaded example whose tool metadata could not be read."""
    return [f"record {ex.id}: {ex.meta['warning']}" for ex in examples if "warning" in ex.meta]


def _kamel(obj: dict):
    question = _text(obj, "question")
    api = _field(obj, "api")
    if not isinstance(api, str) or not api.strip() or len(api.split()) != 1:
        raise _Bad("field 'api' is not a relation id", api)
    answers = _field(obj, "answer")
    if not isinstance(answers, list) or not answers:
        raise _Bad("field 'answer' is not a non-empty list", answers)
    names: list[str] = []
    for a in answers:
        if not isinstance(a, dict) or not isinstance(a.get("chosen"), str):
            raise _Bad("field 'answer' has an entry without a 'chosen' string", a)
        alternatives = a.get("alternative") or []
        if not isinstance(alternatives, list):
            raise _Bad("field 'answer' has an 'alternative' that is not a list", a)
        for s in [a["chosen"], a.get("rdf"), *alternatives]:
            if isinstance(s, str) and s and s not in names:
                names.append(s)
    return question, api.strip(), {"answers": names}


_PLACEHOLDER = re.compile(r"\{v_(\d+)\}")


def _plain(v: float | int | str) -> str:
    """98304.0 -> "98304", 2.5 -> "2.5" (shortest round-trip form); a string as written."""
    if isinstance(v, str):
        return v.strip()
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _exact_values(values: Any) -> bool:
    if not isinstance(values, list):
        return False
    try:
        for v in values:
            exact_value(v)
    except ValueError:
        return False
    return True


def _gsm8k_xl(obj: dict):
    template = _text(obj, "question")
    values = _field(obj, "enhanced_v")
    if not _exact_values(values):
        raise _Bad("field 'enhanced_v' is not a list of numbers (or fractions like '27/64')",
                   values)
    gold = _number(obj, "enhanced_result")

    def fill(m: re.Match) -> str:
        i = int(m.group(1))
        if not 1 <= i <= len(values):
            raise _Bad("placeholder {v_i} out of range of 'enhanced_v'", m.group(0))
        return _plain(values[i - 1])

    question = _PLACEHOLDER.sub(fill, template)
    return question, gold, {"values": values, "process": obj.get("enhanced_process")}


# ---------------------------------------------------------------- APIBench

def _apibench(obj: dict):
    code = _text(obj, "code")
    question = instruction(code)
    if question is None:
        raise _Bad("field 'code' has no instruction", code)
    api_call = _text(obj, "api_call")
    data = _field(obj, "api_data")
    if not isinstance(data, dict) or not isinstance(data.get("domain"), str):
        raise _Bad("field 'api_data' is not an object with a 'domain'", data)
    gold = {"api_call": api_call, "api_name": data.get("api_name"), "domain": data["domain"]}
    return question, gold, {"provider": obj.get("provider"), "api_data": data}


# ---------------------------------------------------------------- dispatch


def load_funcqa_oh(path):
    return _load(path, _funcqa_oh)


def load_funcqa_mh(path):
    return _load(path, _funcqa_mh)


def load_kamel(path):
    return _load(path, _kamel)


def load_gsm8k_xl(path):
    return _load(path, _gsm8k_xl)


def load_apibench(path):
    return _load(path, _apibench)


EXPECTED = {  # what one record of each benchmark holds (for error messages)
    "funcqa-oh": '{"question": str, "answer": number, "func": "<op>(args)=result"}',
    "funcqa-mh": '{"question": str, "answer": number, "calculation": ["<op>(..)=..", ...]}',
    "kamel": '{"question": str, "answer": [{"chosen": str, ...}], "api": "P241"}',
    "gsm8k-xl": '{"question": str with {v_i}, "enhanced_v": [numbers], "enhanced_result": number}',
    **{f"apibench-{p}": '{"code": "###Instruction: ...", "api_call": str, "api_data": {"domain": str}}'
       for p in ("torchhub", "huggingface", "tensorflowhub")},
}

_LOADERS = {"funcqa-oh": load_funcqa_oh, "funcqa-mh": load_funcqa_mh, "kamel": load_kamel,
            "gsm8k-xl": load_gsm8k_xl, "apibench-torchhub": load_apibench,
            "apibench-huggingface": load_apibench, "apibench-tensorflowhub": load_apibench}


def load_benchmark(bench: str, path: str | os.PathLike) -> tuple[list[Example], list[Problem]]:
    """Load a benchmark file by benchmark name; see the module docstring for the formats."""
    if bench not in _LOADERS:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of: {', '.join(BENCHMARKS)}")
    return _LOADERS[bench](path)
