"""Tool-call data: the canonical JSONL format, converters for ToolkenGPT's released data,
and the labelling rule that turns records into (input_ids, labels) for the toolken head.

Canonical format, one JSON object per line::

    {"text": "... 5572 mod 3241=2331.", "source": "optional",
     "calls": [{"tool": "remainder", "args": [5572, 3241], "start": 87, "end": 91,
                "result": "2331"}]}

``start``/``end`` are character offsets of the tool's *result* in ``text``
(``text[start:end] == result``); ``args`` is a list, a dict or absent when unknown. A record
may have no call at all (a pure negative). An optional ``"context"`` string is read before the
text (a prompt's header and demos, say) and conditions the hidden states without being
labelled: training then sees the text in the layout it will be generated in.

Labelling follows ToolkenGPT (Hao et al., 2023, sec. 3.2) made exact for any tokenizer: the
position whose next token is the first token of a result predicts the toolken
``vocab_size + tools.index(tool)``; positions predicting the rest of the result are ignored
(-100); every other position keeps its next-token label. The text is tokenized in segments
cut at every result boundary, so a result always starts on a token boundary, exactly as at
generation time, where the result is tokenized on its own and appended to the model's tokens.

Whitespace rule: a single space immediately before a result belongs to the result's segment,
so in "... is District 1011." the result's first token is " District", as a byte-level BPE
writes it mid-sentence, and the toolken is predicted at "is". Generation must reproduce this:
the toolken fires right after "is", so the result goes in as " District 1011", with a leading
space wherever the training text had one (after a word, not after "=" or an opening bracket).
Only one U+0020 is taken: newlines, tabs and further spaces stay in the text before, as BPE
tokenizers do not merge them into the next word. Exact for tokenizers that do not add a prefix
space to every encode call (byte-level BPE: GPT-2, LLaMA-3, SmolLM2); sentencepiece in legacy
mode would give each segment its own prefix space.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

IGNORE = -100
FORMATS = ("canonical", "toolkengpt-funcqa", "toolkengpt-kamel", "apibench")


class DataError(ValueError):
    """A data file or record is malformed; the message names file:line and field."""


@dataclass
class ToolCall:
    tool: str
    start: int  # character offset of the result in the record's text
    end: int
    result: str
    args: list | dict | None = None


@dataclass
class Record:
    text: str
    calls: list[ToolCall]
    source: str | None = None
    context: str | None = None  # read before the text, never labelled
    where: str | None = field(default=None, compare=False, repr=False)  # "file:line" it came from

    def to_json(self) -> dict:
        calls = [{"tool": c.tool, "start": c.start, "end": c.end, "result": c.result}
                 | ({} if c.args is None else {"args": c.args}) for c in self.calls]
        return ({} if self.context is None else {"context": self.context}) | {
            "text": self.text, "calls": calls} | (
            {} if self.source is None else {"source": self.source})

    @classmethod
    def from_json(cls, obj, where: str) -> "Record":
        """Validate a parsed JSON object; errors read ``{where}: field 'x': ...``."""
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        _check_keys(obj, {"text", "calls"}, {"source", "context"}, where, "")
        text, calls = obj["text"], obj["calls"]
        _check_type(text, str, where, "text")
        _check_type(calls, list, where, "calls")
        for k in ("source", "context"):
            if obj.get(k) is not None:
                _check_type(obj[k], str, where, k)
        rec = cls(text, [_call_from_json(c, text, where, f"calls[{i}]")
                         for i, c in enumerate(calls)], obj.get("source"), obj.get("context"))
        _check_overlaps(rec, where)
        return rec


def _check_keys(obj: dict, required: set, optional: set, where: str, prefix: str) -> None:
    missing, unknown = sorted(required - obj.keys()), sorted(obj.keys() - required - optional)
    if missing:
        raise DataError(f"{where}: field '{prefix}{missing[0]}': missing")
    if unknown:
        raise DataError(f"{where}: field '{prefix}{unknown[0]}': unknown field; "
                        f"allowed: {', '.join(sorted(required | optional))}")


def _check_type(value, types: type | tuple[type, ...], where: str, name: str) -> None:
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        want = " or ".join(t.__name__ for t in types)
        raise DataError(f"{where}: field '{name}': expected {want}, got {type(value).__name__}")


def _call_from_json(c, text: str, where: str, name: str) -> ToolCall:
    _check_type(c, dict, where, name)
    _check_keys(c, {"tool", "start", "end", "result"}, {"args"}, where, name + ".")
    for k, t in (("tool", str), ("start", int), ("end", int), ("result", str)):
        _check_type(c[k], t, where, f"{name}.{k}")
    if c.get("args") is not None:
        _check_type(c["args"], (list, dict), where, f"{name}.args")
    start, end = c["start"], c["end"]
    if not 0 <= start <= end <= len(text):
        raise DataError(f"{where}: field '{name}.end': span {start}..{end} is outside the "
                        f"text (length {len(text)})")
    if start == end:
        raise DataError(f"{where}: field '{name}.end': span {start}..{end} is empty")
    if text[start:end] != c["result"]:
        raise DataError(f"{where}: field '{name}.result': text[{start}:{end}] is "
                        f"{text[start:end]!r} but result is {c['result']!r}")
    return ToolCall(c["tool"], start, end, c["result"], c.get("args"))


def _check_overlaps(rec: Record, where: str) -> None:
    order = sorted(range(len(rec.calls)), key=lambda i: rec.calls[i].start)
    for a, b in zip(order, order[1:]):
        if rec.calls[b].start < rec.calls[a].end:
            ca, cb = rec.calls[a], rec.calls[b]
            raise DataError(f"{where}: field 'calls[{b}].start': span {cb.start}..{cb.end} "
                            f"overlaps calls[{a}] span {ca.start}..{ca.end}")


def _check_tool(tool: str, tools: Sequence[str], where: str) -> None:
    if tool not in tools:
        shown = ", ".join(list(tools)[:8]) + (", ..." if len(tools) > 8 else "")
        raise DataError(f"{where}: unknown tool {tool!r}; allowed ({len(tools)}): {shown}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen.add(k)
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (give a finite number)")


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys and NaN / Infinity (Python's json accepts
    both: the last duplicate would silently win, and NaN is not JSON)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as e:
        err = json.JSONDecodeError(str(e) if not isinstance(e, RecursionError) else
                                   "nested too deeply", text, 0)
        raise err from None


def read_text(path: str | os.PathLike) -> str:
    """A file's text as UTF-8; a byte that is not is a ``DataError`` naming file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at column "
                        f"{col}); save the file as UTF-8") from None


def json_lines(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) per non-blank line (``loads_strict``); a line that is not
    JSON yields its ``json.JSONDecodeError`` instead, so that each caller applies its own
    error policy."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, loads_strict(line)
        except json.JSONDecodeError as e:
            yield n, e


def load_jsonl(path: str | os.PathLike, tools: Sequence[str] | None = None) -> list[Record]:
    """Read and validate a canonical JSONL file (blank lines skipped)."""
    path = Path(path)
    records = []
    for n, obj in json_lines(read_text(path).split("\n")):  # not splitlines: U+2028 is text
        where = f"{path}:{n}"
        if isinstance(obj, json.JSONDecodeError):
            raise DataError(f"{where}: invalid JSON ({obj.msg} at column {obj.colno})")
        rec = Record.from_json(obj, where)
        rec.where = where
        for i, c in enumerate(rec.calls):
            if tools is not None:
                _check_tool(c.tool, tools, f"{where}: field 'calls[{i}].tool'")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records


def record_lines(records: Sequence[Record]) -> Iterator[str]:
    """Canonical JSONL lines of records."""
    for r in records:
        yield json.dumps(r.to_json(), ensure_ascii=False) + "\n"


def save_jsonl(records: Sequence[Record], path: str | os.PathLike) -> None:
    """Write records as canonical JSONL, atomically (temporary file, then os.replace)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(record_lines(records))
    os.replace(tmp, path)


# ---------------------------------------------------------------- problems


@dataclass
class Problem:
    index: int  # position of the record in its source
    reason: str  # generic, so that problems group in summaries
    detail: str = ""  # the offending value


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _grouped(problems: Sequence[Problem]) -> list[str]:
    groups: dict[str, list[int]] = defaultdict(list)
    for p in problems:
        groups[p.reason].append(p.index)
    out = []
    for reason, idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = ", ".join(map(str, idx[:5])) + (", ..." if len(idx) > 5 else "")
        out.append(f"  {len(idx)} x {reason} (records {first})")
    return out


# ---------------------------------------------------------------- labelling


@dataclass
class LabelReport:
    records: int = 0  # records labelled (truncated ones included)
    calls: int = 0
    toolken_labels: int = 0
    vocab_labels: int = 0
    truncated: int = 0
    skipped: list[Problem] = field(default_factory=list)
    calls_by_tool: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        total = self.records + len(self.skipped)
        tools = ", ".join(f"{t} {n}" for t, n in Counter(self.calls_by_tool).most_common(10))
        more = ", ..." if len(self.calls_by_tool) > 10 else ""
        lines = [f"labelled {self.records}/{total} records ({self.truncated} truncated, "
                 f"{len(self.skipped)} skipped), {self.calls} calls",
                 f"labels: {self.toolken_labels} toolken, {self.vocab_labels} vocabulary",
                 f"calls by tool ({len(self.calls_by_tool)} tools): {tools}{more}"]
        return "\n".join(lines + _grouped(self.skipped))


@dataclass
class Labelled:
    input_ids: list[list[int]]
    labels: list[list[int]]  # labels[b][t] = target of position t (the token at t+1)
    record_index: list[int]  # the record each row came from
    report: LabelReport


def _segments(rec: Record) -> list[tuple[int, int, int]]:
    """(start, end, call index or -1) covering the text, cut at every result boundary; a
    result's segment takes the one space right before it (module docstring)."""
    out, pos = [], 0
    for k, c in sorted(enumerate(rec.calls), key=lambda kc: kc[1].start):
        s = c.start - 1 if c.start - 1 >= pos and rec.text[c.start - 1] == " " else c.start
        if s > pos:
            out.append((pos, s, -1))
        out.append((s, c.end, k))
        pos = c.end
    if pos < len(rec.text):
        out.append((pos, len(rec.text), -1))
    return out


def bos_id(tokenizer) -> int | None:
    """The BOS id if the tokenizer puts one in front of a plain encode call, else None."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("x")["input_ids"] if bos is not None else []
    return bos if ids and ids[0] == bos else None


def label_records(records: Sequence[Record], tokenizer, tools: Sequence[str], vocab_size: int,
                  max_length: int, only_toolken_positions: bool = False) -> Labelled:
    """Tokenize records and label them by the ToolkenGPT rule (module docstring).

    A record longer than ``max_length`` tokens is truncated if all its results end within
    the first ``max_length`` tokens, else skipped; both are counted in the report. A record's
    ``context`` is tokenized on its own, put before the text and left unlabelled.
    """
    tool_id = {t: vocab_size + i for i, t in enumerate(tools)}
    if len(tool_id) != len(tools):
        dup = sorted(t for t in tool_id if list(tools).count(t) > 1)
        raise DataError(f"tools must be distinct; repeated: {', '.join(dup)}")
    for i, r in enumerate(records):
        for j, c in enumerate(r.calls):
            _check_tool(c.tool, tools, f"{r.where or r.source or f'record {i}'}: field "
                                       f"'calls[{j}].tool'")
    segs = [_segments(r) for r in records]
    pieces = [p for r, ss in zip(records, segs)
              for p in ([r.context] if r.context else []) + [r.text[s:e] for s, e, _ in ss]]
    encoded = iter(tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else [])
    bos = bos_id(tokenizer)
    out = Labelled([], [], [], LabelReport())
    rep = out.report
    for i, (r, ss) in enumerate(zip(records, segs)):
        ids, spans = [] if bos is None else [bos], []
        if r.context:
            ids += next(encoded)
        context = len(ids)  # positions before the text: not labelled
        for _, _, k in ss:
            t = next(encoded)
            if k >= 0:
                spans.append((len(ids), len(ids) + len(t), tool_id[r.calls[k].tool]))
            ids += t
        try:
            labels = _label(ids, spans, max_length, only_toolken_positions)
            if r.context:  # the last context position predicts the text's first token
                labels[:context - 1] = [IGNORE] * min(context - 1, len(labels))
        except _Skip as e:
            rep.skipped.append(Problem(i, e.reason, e.detail))
            continue
        rep.truncated += len(ids) > max_length
        out.input_ids.append(ids[:max_length])
        out.labels.append(labels)
        out.record_index.append(i)
        rep.records, rep.calls = rep.records + 1, rep.calls + len(r.calls)
        rep.toolken_labels += len(spans)
        rep.vocab_labels += len(labels) - labels.count(IGNORE) - len(spans)
        for c in r.calls:
            rep.calls_by_tool[c.tool] = rep.calls_by_tool.get(c.tool, 0) + 1
    return out


def _label(ids: list[int], spans: list[tuple[int, int, int]], max_length: int,
           only: bool) -> list[int]:
    """Labels of one record, truncated to max_length; spans are (first token, end token,
    toolken id) of its results."""
    if len(ids) > max_length and any(e > max_length for _, e, _ in spans):
        raise _Skip("a result ends after max_length tokens", f"{len(ids)} tokens")
    ids = ids[:max_length]
    if len(ids) < 2:
        raise _Skip("fewer than two tokens")
    labels = [IGNORE] * len(ids) if only else ids[1:] + [IGNORE]
    for p, e, toolken in spans:
        if p == 0:
            raise _Skip("a result starts at the first token (no position to predict it)")
        if e == p:
            raise _Skip("a result tokenizes to nothing")
        labels[p - 1] = toolken
        labels[p:e - 1] = [IGNORE] * (e - 1 - p)
    return labels


def result_join(before: str, result: str) -> str:
    """The whitespace rule of labelling (toolken.core.data): a result after a word gets one space."""
    if before and (before[-1].isalnum() or before[-1] in ".,;:!?%)\"'"):
        return " " + result
    return result
