"""Converters from ToolkenGPT's (and Gorilla APIBench's) released training files to the
canonical format.

Record by record: a call that cannot be located is reported (``Problem``: record index and
reason) and counted in the summary; nothing is dropped silently. The location rules are in
the docstrings of ``convert_funcqa`` and ``locate_answer``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.data import (FORMATS, DataError, Problem, Record, ToolCall, _grouped, _Skip,
                         load_jsonl, loads_strict, read_text)
from ..core.prompts import api_prompt, instruction


@dataclass
class Conversion:
    records: list[Record]
    problems: list[Problem]  # source records not converted, one Problem each
    total: int  # records in the source: len(records) + len(problems)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        calls = sum(len(r.calls) for r in self.records)
        empty = sum(not r.calls for r in self.records)
        head = f"converted {len(self.records)}/{self.total} records, {calls} calls"
        if empty:
            head += f" ({empty} records without a call, kept as negatives)"
        lines = [head, f"problems: {len(self.problems)} records not converted"]
        lines += _grouped(self.problems) + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


_FIELDS = {"text": (lambda v: isinstance(v, str), "a string"),
           "tar_eq": (_strings, "a list of strings"), "tar_number": (_strings, "a list of strings"),
           "call": (lambda v: isinstance(v, str) or _strings(v), "a string or a list of strings")}


def _convert_each(path, one, name: str, needs: tuple[str, ...]) -> Conversion:
    """Apply ``one`` (record -> calls, or raise _Skip) to each record of a JSON list file;
    a record without one of the ``needs`` fields, or with one of the wrong type, is an error."""
    try:
        data = loads_strict(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        f"a {name} file is a JSON list of records") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records ({name}), "
                        f"got {type(data).__name__}")
    records, problems = [], []
    for i, ex in enumerate(data):
        missing = [k for k in needs if not isinstance(ex, dict) or k not in ex]
        if missing:
            raise DataError(f"{path}: record {i}: field '{missing[0]}': missing "
                            f"(a {name} file has fields {', '.join(needs)})")
        for k in needs:
            ok, what = _FIELDS[k]
            if not ok(ex[k]):
                raise DataError(f"{path}: record {i}: field '{k}': must be {what}, got "
                                f"{_short(ex[k])}")
        try:
            records.append(Record(ex["text"], one(ex), f"{name}#{i}", where=f"{path}: record {i}"))
        except _Skip as e:
            problems.append(Problem(i, e.reason, e.detail))
    return Conversion(records, problems, len(data))


def _short(value, n: int = 60) -> str:
    s = json.dumps(value)
    return s if len(s) <= n else s[: n - 3] + "..."


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
FUNCQA_EQ = re.compile(r"<(\w+)>\((.*)\)\s*=\s*(.*?)<eoe>", re.S)


def _number_or_str(s: str) -> int | float | str:
    s = s.strip()
    if not NUMBER.fullmatch(s):
        return s  # an expression such as "10-3" or "8/5": kept as written, never evaluated
    return float(s) if any(ch in s for ch in ".eE") else int(s)


def _whole_numbers(text: str, num: str, lo: int) -> list[int]:
    """Starts of ``num`` in ``text[lo:]`` that are not part of a longer number."""
    def digit(i: int) -> bool:
        return 0 <= i < len(text) and text[i].isdigit()
    out = []
    for m in re.finditer(re.escape(num), text[lo:]):
        s, e = m.start() + lo, m.end() + lo
        before = digit(s - 1) or s >= 1 and text[s - 1] == "." and digit(s - 2)
        after = digit(e) or e < len(text) and text[e] == "." and digit(e + 1)
        if not (before or after):
            out.append(s)
    return out


def convert_funcqa(path: str | os.PathLike) -> Conversion:
    """Convert ToolkenGPT FuncQA ``train.json``; its LLaMA token indices are ignored.

    Each ``tar_number`` is searched after the previous call's result as a whole number
    (not inside a longer one); an occurrence right after ``=`` (spaces allowed) wins, else
    the last one. On the released data this agrees with the LLaMA token indices on every
    locatable record. Tool = ``<op>``; args = the numbers in ``(...)`` (int or float;
    an expression such as ``10-3`` is kept as a string, never evaluated).
    """
    conv = _convert_each(path, _funcqa_calls, "toolkengpt-funcqa",
                         ("text", "tar_eq", "tar_number"))
    markup = [r.source for r in conv.records if re.search(r"<eoe>|<\w+>\(", r.text)]
    if markup:
        conv.notes.append(f"{len(markup)} kept records contain raw tool markup in their "
                          f"text: {', '.join(map(str, markup[:5]))}")
    return conv


def _funcqa_calls(ex: dict) -> list[ToolCall]:
    text, calls, lo = ex["text"], [], 0
    if len(ex["tar_eq"]) != len(ex["tar_number"]):
        raise _Skip("tar_eq and tar_number differ in length")
    for eq, num in zip(ex["tar_eq"], ex["tar_number"]):
        m, num = FUNCQA_EQ.fullmatch(eq.strip()), num.strip()
        if m is None or m.group(3).strip() != num:
            raise _Skip("tar_eq is not '<op>(args)=tar_number<eoe>'", eq)
        found = _whole_numbers(text, num, lo)
        if not found:
            raise _Skip("result not found as a whole number in the text", num)
        after_eq = [s for s in found if re.search(r"=\s*$", text[lo:s])]
        s = after_eq[0] if after_eq else found[-1]
        args = [_number_or_str(a) for a in m.group(2).split(",")]
        calls.append(ToolCall(m.group(1), s, s + len(num), num, args))
        lo = s + len(num)
    return calls


KAMEL_CALL = re.compile(r'<f>\s*(\w+)\(((?:"(?:[^"\\]|\\.)*"|[^()"])*)\)\s*=\s*(.*?)</f>',
                        re.S)
KAMEL_ARG = re.compile(r'"(?:[^"\\]|\\.)*"|[^,"]+')  # a quoted string or a bare item


def _kamel_args(s: str) -> list:
    items = [x.strip() for x in KAMEL_ARG.findall(s)]
    return [x[1:-1].replace('\\"', '"') if x.startswith('"') else _number_or_str(x)
            for x in items if x]


def _occurrences(text: str, needle: str, flags: int) -> list[int]:
    """Starts of ``needle``; those not glued to a letter or digit if there are any."""
    found = [m.start() for m in re.finditer(re.escape(needle), text, flags)]
    def glued(s: int) -> bool:
        e = s + len(needle)
        return (s > 0 and needle[0].isalnum() and text[s - 1].isalnum()
                or e < len(text) and needle[-1].isalnum() and text[e].isalnum())
    return [s for s in found if not glued(s)] or found


def locate_answer(text: str, answer: str) -> int | None:
    """Start of ``answer`` in ``text`` (None if absent): the LAST occurrence, searching
    case-sensitively, else case-insensitively, whole-word matches preferred.

    KAMEL texts ask about the subject and end with the sentence that states the answer, so
    the answer's last mention is the one to label, also when it appears earlier in the
    question ("... a mammal or a fish? ... is a fish.") or inside the subject's name
    ("Anas platyrhynchos ... is Anas."). Of the 579 released records with several
    occurrences, this agrees with the reference token spans on 562; taking the first
    occurrence when the subject is not mentioned agrees on 531 (the last occurrence after
    the subject's mention is always the last occurrence, so that part adds nothing).
    """
    found = _occurrences(text, answer, 0) or _occurrences(text, answer, re.I)
    return found[-1] if found else None


def convert_kamel(path: str | os.PathLike) -> Conversion:
    """Convert ToolkenGPT KAMEL ``train_clean.json``: tool = relation id, args = the call's
    arguments (subject first), result = the answer as the text writes it (locate_answer).

    Every ``<f>...</f>`` in every string of ``call`` becomes a call (the released file has
    exactly one per record). A multi-valued answer (``="A", "B"``) keeps its inner quotes,
    as the text does.
    """
    return _convert_each(path, _kamel_calls, "toolkengpt-kamel", ("text", "call"))


def _kamel_calls(ex: dict) -> list[ToolCall]:
    text, strings, out = ex["text"], ex.get("call") or [], []
    for string in [strings] if isinstance(strings, str) else strings:
        matches = list(KAMEL_CALL.finditer(string))
        if not matches:
            raise _Skip("call is not '<f>Pxxx(args)=\"answer\"</f>'", string)
        for m in matches:
            tool, args, answer = m.group(1), _kamel_args(m.group(2)), m.group(3).strip()
            if len(answer) >= 2 and answer[0] == answer[-1] == '"':
                answer = answer[1:-1].replace('\\"', '"')
            s = locate_answer(text, answer) if answer else None
            if s is None:
                raise _Skip("answer contains the relation id (corrupted in the source)"
                            if tool in answer else "answer not found in the text", answer)
            out.append(ToolCall(tool, s, s + len(answer), text[s:s + len(answer)], args))
    out.sort(key=lambda c: c.start)
    if any(b.start < a.end for a, b in zip(out, out[1:])):
        raise _Skip("answers of two calls overlap in the text")
    return out


def convert_apibench(path: str | os.PathLike, catalog) -> Conversion:
    """Convert Gorilla's APIBench training file (``torchhub_train.json``: JSON lines, or a
    JSON list, of ``{"code", "api_call", "api_data"}``) against a tool catalogue.

    Each record becomes ``###Instruction: <instruction>\\n###Output: <<<api_call>>>:
    <api_call>`` (the layout ``toolken eval apibench-*`` prompts with), one call whose span
    is the api_call and whose tool is the catalogue tool (any iterable of ``Tool``, e.g.
    ``load_pack("tools/apibench.py")``) with ``meta["api_call"]`` equal to it, whitespace
    normalised. The instruction is read as the evaluation reads it
    (``toolken.evaluation.loaders.instruction``). When several tools share the api_call the
    first is used and the records are counted in a note; a record without instruction or
    api_call, or whose api_call names no catalogue tool, is a Problem.
    """

    by_call: dict[str, list[str]] = {}
    for t in catalog:
        if isinstance(t.meta.get("api_call"), str):
            by_call.setdefault(" ".join(t.meta["api_call"].split()), []).append(t.name)
    if not by_call:
        raise DataError("data format 'apibench' needs a catalogue of tools with "
                        "meta['api_call'] (e.g. tools: tools/apibench.py); none given")
    records, problems, shared = [], [], 0
    raw = _json_records(path)
    for i, (where, ex) in enumerate(raw):
        if not isinstance(ex, dict):
            problems.append(Problem(i, "not a JSON object", where))
            continue
        call, code = ex.get("api_call"), ex.get("code")
        instr = instruction(code) if isinstance(code, str) else None
        names = by_call.get(" ".join(call.split())) if isinstance(call, str) else None
        if instr is None or not isinstance(call, str) or not call.strip():
            problems.append(Problem(i, "no instruction in 'code' or no 'api_call'", where))
        elif not names:
            problems.append(Problem(i, "api_call matches no catalogue tool", call))
        else:
            shared += len(names) > 1
            head = api_prompt(instr) + " "
            call = call.strip()
            records.append(Record(head + call, [ToolCall(names[0], len(head), len(head) +
                                                         len(call), call)], f"apibench#{i}",
                                  where=f"{path}: {where}"))
    conv = Conversion(records, problems, len(raw))
    if shared:
        conv.notes.append(f"{shared} records' api_call belongs to several catalogue tools; "
                          f"the first was used")
    return conv


def _json_records(path: str | os.PathLike) -> list[tuple[str, object]]:
    """``[(where, record)]`` of a JSON list or JSON-lines file; a line that is not JSON is
    kept as ``None`` (a Problem for the converter), an empty file is an error."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            return [(f"record {i}", r) for i, r in enumerate(loads_strict(text))]
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON list ({e.msg} at line {e.lineno})") from None
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                out.append((f"line {n}", loads_strict(line)))
            except json.JSONDecodeError as e:
                out.append((f"line {n}: invalid JSON ({e.msg})", None))
    if not out:
        raise DataError(f"{path}: no records (the file is empty)")
    return out


NEEDS_TOOLS = ("apibench",)  # formats whose converter maps calls to tools by the tool pack


def convert(path: str | os.PathLike, fmt: str, tools=None) -> Conversion:
    """Read ``path`` in format ``fmt`` (one of FORMATS) as canonical records; ``tools`` (a
    ToolRegistry) is needed by the formats in NEEDS_TOOLS."""
    if fmt == "apibench":
        return convert_apibench(path, tools or [])
    if fmt == "canonical":
        records = load_jsonl(path)
        return Conversion(records, [], len(records))
    if fmt == "toolkengpt-funcqa":
        return convert_funcqa(path)
    if fmt == "toolkengpt-kamel":
        return convert_kamel(path)
    raise DataError(f"unknown data format {fmt!r}; valid formats: {', '.join(FORMATS)}")
