"""Synthetic training data for tools that have none: texts made from each tool's description,
argument schema and demos, with the tool's result span marked as in ``toolken.core.data``.

    from toolken.tools.synth import synthesize
    records, report = synthesize(load_pack("my_pack.py"), per_tool=20, method="both", base=base)
    print(report.summary())          # per tool: generated, kept, dropped by reason
    save_jsonl(records, "synth.jsonl")

Two ways to write the question (``source`` says which: ``synth:template:<tool>`` or
``synth:model:<tool>``):

* templates: argument values are sampled from the schema (numbers shaped like the demos'
  numbers, or 2..999 and two-decimal values; strings from the demos' quoted strings and call
  arguments, else from sentences of the description) and put into generic question
  templates, or into a demo itself when the demo is a ToolkenGPT ``Q: .. A: .. <tool>(args)=r``
  example whose numbers are all the call's arguments;
* model (self-instruct, Wang et al., 2023): the base model is prompted with the description
  and demo questions (and the sampled arguments) and samples a new question; the arguments
  are the sampled ones if the question names them all, else, for numeric tools, the numbers
  it names.

The tool then runs (``Tool.call``) and the text is ``Q: <question>\\nA: <lead-in> <result>.``
A tool with ``meta["api_call"]`` (a catalogue API, ``toolken.tools.catalog``) is never run: its
toolken stands for that fixed call, so the "result" is the api_call and the text has
APIBench's layout, ``###Instruction: <question>\\n###Output: <<<api_call>>>: <api_call>``,
exactly what ``toolken eval apibench-*`` prompts with; such records carry no ``args``.
The result is joined to the text by ``toolken.core.data.result_join``: after a word or ``:`` it gets
the one space that labelling gives to the result (``toolken.core.data``, whitespace rule).

Filters, each counted per tool: arguments must validate against the schema, the tool must
succeed with a non-empty answer of at most 200 characters, ``text[start:end]`` must equal
the result (checked by ``Record.from_json``), and the text before the result (what the
toolken is predicted from) must not duplicate one already kept, for this tool or another
one, or one in ``avoid``: exactly, after removing digits and punctuation, or with token-set
Jaccard >= 0.9. So numeric tools get at most one record per question/lead-in skeleton. Tools
are filled in registry order; the first to claim a text keeps it. A tool that ends with no
record is listed in ``SynthReport.empty``, never skipped silently.
"""

from __future__ import annotations

import math
import random
import re
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..core.data import DataError, Record, result_join
from ..core.prompts import api_prompt
from .syntax import main_type, split_args
from .tool import Tool, ToolArgumentError, format_number, parse_call_args

METHODS = ("template", "model", "both")
MAX_RESULT_CHARS = 200
JACCARD = 0.9
NEED_SHARE = 0.5  # share of an API tool's template requests written from a domain need
QUESTIONS = ("What is {call}?", "Compute {call}.", "Given {named}, what is {desc}?",
             "What is {desc} for {args}?", "Use {name} on {args}. What do you get?",
             "I need {desc}: {named}.", "Please work out {call}.", "Find {desc}, with {named}.",
             "Apply {name} to {args}. What is the result?", "What does {name} give for {args}?")
LEADS = ("The answer is", "The result is", "So the result is", "{call} is", "It comes to",
         "{name} gives", "That gives", "This is")
API_QUESTIONS = ("I need an API that can do {func}.", "Recommend an API for {func}.",
                 "Which API should I use for {func} ({domain})?", "{sentence} Which API does this?",
                 "I want a model for {domain}: {func}. Give me the API call.", "{sentence}",
                 "Find an API for {domain} that does {func}.", "Is there a pretrained model for "
                 "{func}? {sentence}", "Help me load {api_name} for {func}.",
                 "Load a model trained on {dataset} for {func}.")
NEED_STARTS = ("I need to", "We want to", "Our team has to", "Help me", "I'd like to",
               "Our app should", "Can you help me", "My project needs to", "We are trying to")
NEED_QUESTIONS = ("{start} {need}. {sentence}", "{sentence} {start} {need}.",
                  "{start} {need}, with a model trained on {dataset}.",
                  "{start} {need}. Which API should I use? {sentence}",
                  "{start} {need}: {func}. {sentence}")
API_PROMPT = ("API: {name}\nDescription: {desc}\n\nWrite one request, in one or two sentences, "
              "from a user who needs this API for a task. Do not name the API or the model. "
              "Reply with the request only.")
API_STARTS = ("I need", "I want", "Help me", "We need", "Recommend", "Find me", "Our team")
RUN_PROMPT = ("Tool: {name}: {desc}\n{examples}Write one new question that this tool answers, "
              "using {args}. Reply with the question only.")
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w|\.\d)")  # a whole number, not "12th"
_QUOTED = re.compile(r""""([^"\n]{2,80})"|(?<![A-Za-z])'([^'\n]{2,80})'(?![A-Za-z])""")


class _Drop(Exception):
    """A candidate is dropped; the message is its reason (generic, so that reasons group)."""


@dataclass
class ToolReport:
    tool: str
    generated: int = 0  # candidates made: kept + dropped
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    kept_by_source: Counter = field(default_factory=Counter)  # template / model -> count


@dataclass
class SynthReport:
    tools: list[ToolReport]
    seconds: float = 0.0

    @property
    def empty(self) -> list[str]:
        """Tools that got no record at all."""
        return [r.tool for r in self.tools if r.kept == 0]

    def summary(self) -> str:
        kept = Counter()
        for r in self.tools:
            kept.update(r.kept_by_source)
        lines = [f"synth: {sum(r.kept for r in self.tools)} records for {len(self.tools)} tools "
                 f"({', '.join(f'{k} {n}' for k, n in sorted(kept.items())) or 'none kept'}) "
                 f"in {self.seconds:.1f} s"]
        for r in self.tools:
            drops = ", ".join(f"{n} x {why}" for why, n in r.dropped.most_common())
            lines.append(f"  {'EMPTY ' if r.kept == 0 else ''}{r.tool}: kept {r.kept}/"
                         f"{r.generated}" + (f"; dropped: {drops}" if drops else ""))
        if self.empty:
            lines.append(f"{len(self.empty)} tool(s) got no data: {', '.join(self.empty[:20])}"
                         + (", ..." if len(self.empty) > 20 else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------------------- duplicates
def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _loose(text: str) -> str:
    return " ".join(re.sub(r"[\d\W_]+", " ", text.lower()).split())


class Seen:
    """Texts already kept, with their tool: ``find`` says whether a text is an exact, a
    digit/punctuation-blind or a token-set Jaccard >= 0.9 duplicate of one (prefix-filter
    index, so the Jaccard check is not quadratic)."""

    def __init__(self) -> None:
        self.exact: dict[str, str | None] = {}
        self.loose: dict[str, str | None] = {}
        self.sets: list[tuple[frozenset, str | None]] = []
        self.index: dict[str, list[int]] = defaultdict(list)

    @staticmethod
    def _prefix(tokens: frozenset) -> list[str]:
        """The tokens a Jaccard >= 0.9 pair must share one of, in a fixed pseudo-random order
        (so that words common to every text rarely land in the index)."""
        order = sorted(tokens, key=lambda t: (zlib.crc32(t.encode()), t))
        return order[:len(tokens) - math.ceil(JACCARD * len(tokens) - 1e-9) + 1]

    def find(self, text: str) -> tuple[str, str | None] | None:
        if _norm(text) in self.exact:
            return "exact duplicate", self.exact[_norm(text)]
        if _loose(text) in self.loose:
            return "near duplicate (digits/punctuation)", self.loose[_loose(text)]
        tokens = frozenset(re.findall(r"\w+", text.lower()))
        for j in {j for t in self._prefix(tokens) for j in self.index[t]}:
            other, tool = self.sets[j]
            if len(tokens & other) >= JACCARD * len(tokens | other):
                return "near duplicate (token Jaccard)", tool
        return None

    def add(self, text: str, tool: str | None) -> None:
        self.exact.setdefault(_norm(text), tool)
        self.loose.setdefault(_loose(text), tool)
        tokens = frozenset(re.findall(r"\w+", text.lower()))
        for t in self._prefix(tokens):
            self.index[t].append(len(self.sets))
        self.sets.append((tokens, tool))


def context(record: Record) -> str:
    """The text a record's first toolken is predicted from (all of it if it has no call)."""
    return record.text[:min((c.start for c in record.calls), default=len(record.text))]


# ---------------------------------------------------------------------------- sampling
def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", " ".join(text.split()))
    return [p for p in parts if 3 <= len(p.split()) <= 30]


def _desc(tool: Tool) -> str:
    """The description's first sentence, without a leading ``name(args):`` signature."""
    text = re.sub(r"^\s*\w+\([^)]*\)\s*:\s*", "", tool.description).strip()
    first = (_sentences(text) or [text or tool.name])[0].rstrip(".")
    return first[:1].lower() + first[1:] if not first[:2].isupper() else first


def _demo_calls(tool: Tool) -> list[list]:
    """Positional argument values of the calls written in the tool's demos."""
    out = []
    for m in re.finditer(rf"(?:<{re.escape(tool.name)}>|\b{re.escape(tool.name)})\(([^()]*)\)",
                         "\n".join(tool.demos)):
        try:
            kwargs = parse_call_args(m.group(1), tool)
        except ToolArgumentError:
            continue
        out.append([kwargs[n] for n in tool.param_names if n in kwargs and
                    not isinstance(kwargs[n], list)])
    return out


def _string_pool(tool: Tool) -> list[str]:
    text = "\n".join(tool.demos + [tool.description])
    quoted = [a or b for a, b in _QUOTED.findall(text)]
    quoted += [v for call in _demo_calls(tool) for v in call if isinstance(v, str)]
    if quoted:
        return sorted(set(quoted))
    demo_qs = [q for d in tool.demos for q in re.findall(r"Q:\s*(.+)", d)]
    return sorted({s.rstrip(".") for t in [tool.description, *demo_qs] for s in _sentences(t)})


def _like(v: float, rng: random.Random) -> int | float:
    """A random number shaped like v: as many integer digits, as many decimals (<= 4)."""
    digits = len(str(int(abs(v)))) if abs(v) >= 1 else 1
    lo, hi = (2 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
    decimals = 0 if float(v).is_integer() else min(len(repr(float(v)).split(".")[1]), 4)
    return rng.randint(lo, hi) if decimals == 0 else round(rng.uniform(lo, hi + 1), decimals)


def _number(prop: dict, examples: list, integer: bool, rng: random.Random) -> int | float:
    if "enum" in prop:
        return rng.choice(prop["enum"])
    if examples:
        x = _like(rng.choice(examples), rng)
    elif integer or rng.random() < 0.7:
        x = rng.randint(2, 10 ** rng.choice((1, 2, 2, 3)) - 1)
    else:
        x = round(rng.uniform(1, 100), 2)
    lo, hi = prop.get("minimum", -math.inf), prop.get("maximum", math.inf)
    x = min(max(x, lo), hi)
    return int(x) if integer else x


def sample_args(tool: Tool, rng: random.Random) -> list:
    """Positional values for the tool's fixed arguments (optional ones now and then)."""
    examples = _demo_calls(tool)
    required = set(tool.parameters.get("required", []))
    values = []
    for i, name in enumerate(tool.param_names):
        prop = tool._prop(name)
        if prop.get("x-variadic") or (name not in required and rng.random() < 0.7):
            break  # positional: an omitted argument ends the list
        t, seen = main_type(prop), [c[i] for c in examples if len(c) > i]
        if t in ("integer", "number"):
            nums = [v for v in seen if isinstance(v, (int, float)) and not isinstance(v, bool)]
            values.append(_number(prop, nums, t == "integer", rng))
        elif t == "boolean":
            values.append(rng.random() < 0.5)
        elif t == "string":
            pool = prop.get("enum") or _string_pool(tool)
            if not pool:
                raise _Drop(f"no example values for string argument {name!r} (give demos)")
            values.append(rng.choice(pool))
        else:
            raise _Drop(f"argument {name!r} of type {t!r} cannot be sampled")
    return values


def _show(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else format_number(v) if not isinstance(v, bool) \
        else str(v).lower()


def _fields(tool: Tool, args: list) -> dict:
    shown = [_show(v) for v in args]
    listed = " and ".join(shown) if len(shown) < 3 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return {"name": tool.name, "call": f"{tool.name}({', '.join(shown)})", "desc": _desc(tool),
            "args": listed or "no arguments", "named": ", ".join(
                f"{n} = {s}" for n, s in zip(tool.param_names, shown)) or "no arguments"}


# ---------------------------------------------------------------------------- questions
def _demo_templates(tool: Tool) -> list[tuple[str, str, str, list[str]]]:
    """(question, answer before the result, answer after it, the values the demo wrote) with
    ``{0}``, ``{1}``, ... for the arguments, from demos ``Q: ..\\nA: .. <tool>(args)=result ..``
    whose numbers are all the call's arguments (no other number in the question, the lead-in
    or after the result) and whose quoted-string arguments are quoted in the question as
    written (``"A cat sits on the mat."``)."""
    out = []
    for demo in tool.demos:
        m = re.fullmatch(r"\s*Q:\s*(.+?)\nA:\s*(.+?)\s*", demo, re.S)
        calls = list(re.finditer(rf"<{re.escape(tool.name)}>\(([^()]*)\)\s*=\s*(-?\d+(?:\.\d+)?)",
                                 m.group(2))) if m else []
        if len(calls) != 1:
            continue
        q, a, c = m.group(1), m.group(2), calls[0]
        written = [s.strip() for s in split_args(c.group(1))]
        quoted = {i: w for i, w in enumerate(written) if len(w) > 1 and w[0] == w[-1] and w[0] in "\"'"}
        head, tail = a[:c.start()], a[c.end():]
        bare_q, bare_head = q, head
        for w in quoted.values():
            bare_q, bare_head = bare_q.replace(w, " "), bare_head.replace(w, " ")
        numbers = [w for i, w in enumerate(written) if i not in quoted]
        if (len(set(written)) != len(written) or "<" in head + tail or re.search(r"\d", tail)
                or {n.group() for n in _NUM.finditer(bare_q + " " + bare_head)} - set(numbers)
                or any(w not in {n.group() for n in _NUM.finditer(bare_q)} for w in numbers)
                or any(w not in q for w in quoted.values())):
            continue

        def slots(text: str) -> str:
            text = text.replace("{", "{{").replace("}", "}}")
            for i, w in quoted.items():  # strings first, so that digits inside them stay text
                text = text.replace(w.replace("{", "{{").replace("}", "}}"), f"\x00{chr(97 + i)}\x00")
            text = _NUM.sub(lambda n: "{%d}" % written.index(n.group()), text)
            return re.sub(r"\x00([a-z])\x00", lambda m: "{%d}" % (ord(m.group(1)) - 97), text)
        out.append((slots(q), slots(head), tail, written))
    return out


def _in_demo_order(args: list, written: list[str]) -> list:
    """The sampled numbers rearranged so that they rank as the demo's numbers do (a demo's
    "12 of the 30 pupils" never becomes "59 of the 46 pupils"); other values as they are."""
    try:
        demo = [float(w) for w in written]
    except ValueError:
        return args
    if len(demo) != len(args) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                         for a in args):
        return args
    out = list(args)
    for slot, value in zip(sorted(range(len(demo)), key=demo.__getitem__), sorted(args)):
        out[slot] = value
    return out


def _template_candidate(tool: Tool, rng: random.Random, settings: "SynthSettings"
                        ) -> tuple[str, list | None, str]:
    """(text before the result, args or None, text after it) from a template, written as
    ``settings`` say (its ``lead`` and, for a catalogue API, its ``needs``)."""
    lead = settings.lead
    if tool.meta.get("api_call"):
        return _api_prefix(_api_question(tool, rng, settings.needs)), None, ""
    demos = _demo_templates(tool)
    args = sample_args(tool, rng)
    if demos and rng.random() < 0.5:
        q, head, tail, written = rng.choice(demos)
        if len(args) == max(map(int, re.findall(r"\{(\d+)\}", q))) + 1:
            args = _in_demo_order(args, written)
            shown = [_show(v) for v in args]
            return f"Q: {q.format(*shown)}\nA: {lead or head.format(*shown)}", args, tail
    f = _fields(tool, args)
    question = re.sub(r'([.!?]"?)\.$', r"\1", rng.choice(QUESTIONS).format(**f))  # '."."' -> '."'
    return f"Q: {question[0].upper()}{question[1:]}\nA: {lead or rng.choice(LEADS).format(**f)}", args, "."


def _api_fields(tool: Tool) -> dict:
    rec = tool.meta.get("record") or {}
    func = rec.get("functionality")
    func = ", ".join(map(str, func)) if isinstance(func, list) else str(func or "").strip()
    dataset = (rec.get("performance") or {}).get("dataset") if isinstance(
        rec.get("performance"), dict) else None
    return {"func": func[:1].lower() + func[1:] if func else _desc(tool),
            "domain": str(rec.get("domain") or "").strip().lower(),
            "api_name": str(rec.get("api_name") or tool.name), "sentences": _sentences(str(
                rec.get("description") or tool.description)),
            "dataset": dataset if isinstance(dataset, str) and dataset.strip() else None}


def _api_question(tool: Tool, rng: random.Random,
                  needs: Mapping[str, Sequence[str]] | None = None) -> str:
    f = _api_fields(tool)
    phrases = (needs or {}).get(f["domain"])
    if phrases and rng.random() < NEED_SHARE:  # a user's need for the domain + what sets the API apart
        forms = [t for t in NEED_QUESTIONS if ("{dataset}" not in t or f["dataset"]) and
                 ("{sentence}" not in t or f["sentences"])]
        if forms:
            q = rng.choice(forms).format(start=rng.choice(NEED_STARTS), need=rng.choice(phrases),
                                         sentence=rng.choice(f["sentences"] or [""]), **{
                                             k: v for k, v in f.items() if k != "sentences"})
            return q[0].upper() + q[1:]
    usable = [t for t in API_QUESTIONS if all(f.get(k) for k in re.findall(r"\{(\w+)\}", t)
                                              if k != "sentence") and
              ("{sentence}" not in t or f["sentences"])]
    return rng.choice(usable).format(**f, sentence=rng.choice(f["sentences"] or [""]))


def load_needs(path: str | Path) -> dict[str, tuple[str, ...]]:
    """User needs by API domain from a YAML (or JSON) mapping ``domain: [phrase, ...]``
    (``data/apibench_needs.yaml``); keys are matched to a record's ``domain`` in lower case.
    A clear error names the file and the key or entry that is not a non-empty string."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the needs file: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a mapping 'domain: [need, ...]', got {type(raw).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for key, phrases in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{path}: domain {key!r} is not a non-empty string")
        if not isinstance(phrases, list) or not phrases:
            raise ValueError(f"{path}: domain {key!r}: expected a non-empty list of needs")
        for i, p in enumerate(phrases):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"{path}: domain {key!r}, need {i + 1}: {p!r} is not a "
                                 f"non-empty string")
        k = key.strip().lower()
        if k in out:
            raise ValueError(f"{path}: domain {key!r} is listed twice (case does not matter)")
        out[k] = tuple(" ".join(p.split()).rstrip(".") for p in phrases)
    return out


def _api_prefix(question: str) -> str:
    return api_prompt(question)


# ---------------------------------------------------------------------------- the model
def _model_prompts(tool: Tool, base, args: list | None, start: str = "") -> str:
    """The prompt asking for a new question; it ends with ``start``, the question's first
    words, which anchor a small model (an API request starts "I need", "Help me", ...)."""
    demo_qs = [q.strip() for d in tool.demos for q in re.findall(r"Q:\s*(.+)", d)][:4]
    if args is None:
        body = API_PROMPT.format(name=tool.meta.get("api_name", tool.name), desc=tool.description)
        plain = f"API: {tool.description}\n###Instruction: "
    else:
        examples = "".join(f"- {q}\n" for q in demo_qs)
        body = RUN_PROMPT.format(name=tool.name, desc=tool.description, args=_fields(tool, args)[
            "args"], examples=f"Examples of questions it answers:\n{examples}" if examples else "")
        plain = f"{tool.description}\n" + "".join(f"Q: {q}\n" for q in demo_qs) + \
            f"Q (with {_fields(tool, args)['args']}): "
    tok = base.tokenizer
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                       add_generation_prompt=True) + start
    return plain + start


def model_questions(base, prompts: list[str], seed: int, max_new_tokens: int = 48,
                    temperature: float = 0.8) -> list[str]:
    """One sampled continuation per prompt (left-padded batch), cut to its first line."""
    import torch

    tok = base.tokenizer
    no_pad, side = tok.pad_token is None, tok.padding_side
    tok.padding_side = "left"
    try:
        if no_pad:
            tok.pad_token = tok.eos_token
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(base.device)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = base.model.generate(**enc, do_sample=True, temperature=temperature, top_p=0.95,
                                      max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    finally:
        tok.padding_side = side
        if no_pad:
            tok.pad_token = None
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [_clean_question(t) for t in texts]


STOP = frozenset("about also able could does from have help here just know like make more need "
                 "please should some task tell that their there they this tool using want what "
                 "when where which will with would your model models request".split())


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9]{3,}", text.lower()) if w not in STOP}


def _clean_question(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:Q|Question|Request|###\s*Instruction)\s*:\s*", "", line, flags=re.I)
    line = line.strip()
    return line[1:-1].strip() if len(line) > 1 and line[0] == line[-1] == '"' else line


def _names_in_order(question: str, args: list) -> bool:
    """Whether the question writes each argument, in the order of the arguments."""
    pos, text = 0, question.lower()
    for v in args:
        written = re.escape(_show(v).strip('"').lower())
        m = re.compile(rf"(?<![\w.]){written}(?!\w|\.\d)").search(text, pos)
        if m is None:
            return False
        pos = m.end()
    return True


def _model_candidate(tool: Tool, question: str, args: list | None, lead: str | None = None
                     ) -> tuple[str, list | None, str]:
    if len(question.split()) < 3 or len(question) > 300:
        raise _Drop("the model wrote no usable question")
    if args is None:  # (a runnable tool's question must contain its arguments instead)
        about = f"{tool.description} {tool.meta.get('record') or ''}"
        if not _content_words(question) & _content_words(about):
            raise _Drop("the request shares no content word with the API's description")
        return _api_prefix(question), None, ""
    if not _names_in_order(question, args):
        numbers = [float(n) if "." in n else int(n) for n in _NUM.findall(question)]
        want = len(tool.parameters.get("required", []))
        if not numbers or not all(main_type(tool._prop(n)) in ("integer", "number")
                                  for n in tool.param_names[:want]) or len(numbers) < want:
            raise _Drop("question does not contain the arguments")
        args = numbers[:want]
    lead = lead or random.Random(question).choice(LEADS).format(**_fields(tool, args))
    return f"Q: {question}\nA: {lead}", args, "."


# ---------------------------------------------------------------------------- records
def _record(tool: Tool, prefix: str, args: list | None, tail: str, source: str,
            timeout: float) -> Record:
    if args is None:
        result = " ".join(str(tool.meta["api_call"]).split())
    else:
        try:
            tool.validate(args)
        except ToolArgumentError:
            raise _Drop("arguments do not fit the schema") from None
        res = tool.call(args, timeout=timeout, max_chars=MAX_RESULT_CHARS + 1)
        if not res.ok:
            raise _Drop("tool cannot run (no implementation, no api_call)" if tool.fn is None
                        else "tool failed")
        result = res.text.strip()
        if res.value is None or not result:
            raise _Drop("tool gave no answer")
        if len(result) > MAX_RESULT_CHARS:
            raise _Drop(f"result longer than {MAX_RESULT_CHARS} characters")
    joined = result_join(prefix, result)
    tail = "" if tail == "." and result[-1] in ".!?" else tail
    text = prefix + joined + tail
    start = len(prefix) + len(joined) - len(result)
    call = {"tool": tool.name, "start": start, "end": start + len(result), "result": result}
    try:
        return Record.from_json({"text": text, "calls": [call | ({} if args is None else
                                                                 {"args": args})],
                                 "source": source}, f"synth {tool.name}")
    except DataError:
        raise _Drop("the result is not at the marked span") from None


@dataclass(frozen=True)
class SynthSettings:
    """How candidates are made: the tool's timeout, and the model's sampling (method model)."""

    tool_timeout: float = 30.0
    max_new_tokens: int = 48
    temperature: float = 0.8
    lead: str | None = None  # every answer's lead-in (the end of the prompt the tools will be
    # used under, e.g. "The answer is"); None: the demos' own or varied ones (LEADS)
    needs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # user needs by API
    # domain (lower case; ``load_needs``): an API tool of a listed domain gets about half its
    # template requests as "<start> <need>. <its description sentence / dataset>"


@dataclass
class _Run:
    """What every tool's filling shares: the kept texts, the records, the settings."""

    seen: Seen
    out: list[Record]
    settings: SynthSettings


def _fill(tool: Tool, rep: ToolReport, target: int, make: Callable[[int], tuple], source: str,
          run: _Run, budget: int) -> None:
    """Make candidates with ``make(i)`` until ``target`` are kept, ``budget`` were tried, or
    ``max(20, 2 * target)`` in a row were dropped."""
    kept = misses = 0
    for i in range(budget):
        if kept >= target or misses >= max(20, 2 * target):
            break
        rep.generated += 1
        try:
            prefix, args, tail = make(i)
            dup = run.seen.find(prefix)
            if dup:
                raise _Drop(f"{dup[0]} of {'this' if dup[1] == tool.name else 'another'} "
                            f"tool's data")
            run.out.append(_record(tool, prefix, args, tail, f"synth:{source}:{tool.name}",
                                   run.settings.tool_timeout))
        except _Drop as e:
            rep.dropped[str(e)] += 1
            misses += 1
            continue
        run.seen.add(prefix, tool.name)
        kept, misses = kept + 1, 0
        rep.kept, rep.kept_by_source[source] = rep.kept + 1, rep.kept_by_source[source] + 1


def synthesize(tools: Iterable[Tool], per_tool: int, *, method: str = "template", base=None,
               seed: int = 0, avoid: Sequence[Record] = (),
               settings: SynthSettings = SynthSettings()) -> tuple[list[Record], SynthReport]:
    """Up to ``per_tool`` records for each tool (module docstring); ``method`` "both" asks
    the model for half and fills the rest from templates. ``avoid``: existing records whose
    texts count as other tools' data. Returns (records, report); see ``SynthReport.empty``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {list(METHODS)}")
    if per_tool <= 0:
        raise ValueError(f"per_tool={per_tool} must be positive")
    if method != "template" and base is None:
        raise ValueError(f"method={method!r} samples questions from a base model: pass base=")
    t0, reports = time.perf_counter(), []
    run = _Run(Seen(), [], settings)
    for r in avoid:
        run.seen.add(context(r), r.calls[0].tool if r.calls else None)
    for k, tool in enumerate(tools):
        rep, rng = ToolReport(tool.name), random.Random(f"{seed}:{tool.name}")
        reports.append(rep)
        n_model = 0 if method == "template" else per_tool if method == "model" else \
            math.ceil(per_tool / 2)
        if n_model:
            _fill_from_model(tool, rep, n_model, base, seed * 100_003 + k, rng, run)
        if method != "model":
            _fill(tool, rep, per_tool - rep.kept, lambda i: _template_candidate(tool, rng, run.settings),
                  "template", run, budget=10 * per_tool)
    return run.out, SynthReport(reports, time.perf_counter() - t0)


def _fill_from_model(tool, rep, target, base, seed, rng, run: _Run) -> None:
    n = math.ceil(1.5 * target) + 1
    api = bool(tool.meta.get("api_call"))
    if tool.fn is None and not api:  # nothing to run: no need to ask the model
        rep.generated += 1
        rep.dropped["tool cannot run (no implementation, no api_call)"] += 1
        return
    args_list: list[list | None] = []
    for _ in range(n):
        try:
            args_list.append(None if api else sample_args(tool, rng))
        except _Drop as e:  # e.g. no values for a string argument: counted, then stop
            rep.generated += 1
            rep.dropped[str(e)] += 1
            return
    starts = [rng.choice(API_STARTS) if api else "" for _ in args_list]
    prompts = [_model_prompts(tool, base, a, s) for a, s in zip(args_list, starts)]
    questions = [f"{s} {q}".strip() for s, q in zip(starts, model_questions(
        base, prompts, seed, run.settings.max_new_tokens, run.settings.temperature))]
    _fill(tool, rep, target, lambda i: _model_candidate(tool, questions[i], args_list[i], run.settings.lead),
          "model", run, budget=n)
