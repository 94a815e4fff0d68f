"""The papers' metrics: FuncQA / GSM8K-XL numbers, KAMEL tool choice, APIBench API matching.

Numbers (ToolkenGPT, Hao et al., 2023, FuncQA and GSM8K-XL):

- :func:`final_number` reads the answer of a generation. If the text has an answer marker
  (``"answer is"``, any case, or ``"####"``), the number right after the *last* marker is the
  answer, and a marker followed by no number gives ``None``; where the marker's sentence (up to
  a full stop and a space, or a line break) writes a calculation, the number after its last
  ``=`` is the answer (``the answer is 2031 - 1969 = 62.`` reads 62, as a person reads it);
  without a marker, the last number in the text. A number is an optional sign (a ``-`` glued to
  a word or number, as in ``5-3``, is not a sign), digits, an optional decimal part and
  exponent. Commas are thousands separators only when every group after one has exactly 3 digits
  (``1,234,567`` -> 1234567; ``1,23`` is the two numbers 1 and 23). ``15%`` reads 15. A fraction
  of two numbers written with ``/`` and no spaces is divided (``3/4`` -> 0.75; ``x/0`` is not
  divided). Non-finite values (``1e999``) give ``None``. ToolkenGPT's own script instead removed
  every comma and took the *last* number after the marker; the two agree on answers of the form
  "... the answer is 42." and "... the answer is 24 * 6 = 144."
- :func:`approx_correct`: ``|pred - gold| <= 0.001 * |gold|`` (the paper's "approx" rule,
  bound included, with 1e-9 of slack on the bound for float rounding). For gold 0 the
  relative bound is empty, so ``|pred| <= 1e-6`` is used instead.
- :func:`em2_correct`: both rounded half-up to 2 decimals (from their shortest decimal
  form, so 2.675 rounds to 2.68) are equal.

KAMEL: :func:`tool_correct` compares whole relation ids (``P241`` never matches ``P2416``;
the paper's notebook matched substrings). The predicted tool is the first call's tool, or
else the first ``P<digits>`` token of the text (the in-context format ``<P241>(x)=y``).

APIBench: :func:`score` uses :mod:`.api_match` (Gorilla's hallucination and domain accuracy,
and the exact-API rate; the matching rule is documented there).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import asdict, is_dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any, Iterable, Sequence

from .api_match import PROVIDERS, ApiIndex, score_api
from .loaders import BENCHMARKS

__all__ = ["final_number", "approx_correct", "em2_correct", "relation_id", "first_tool",
           "tool_correct", "score", "aggregate", "write_report", "METRIC_KEYS", "REPORT_KEYS",
           "PREDICTION_KEYS"]

# ---------------------------------------------------------------- numbers

_NUMBER = re.compile(r"""
    (?<![\w.])                                   # not inside a word or another number
    (?: (?<![\w)]) (?P<sign>[-+]) )?
    (?P<num> (?:\d{1,3}(?:,\d{3})+(?!\d|,\d) | \d+) (?:\.\d+)? | \.\d+ )
    (?P<exp> [eE][-+]?\d+ )?
    (?: /(?P<den>\d+(?:\.\d+)?)(?![\w]|\.\d) )?
    """, re.X)
_MARKER = re.compile(r"answer\s+is|####", re.I)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")


def _value(m: re.Match) -> float | None:
    x = float(m.group("num").replace(",", "") + (m.group("exp") or ""))
    den = m.group("den")
    if den is not None and float(den) != 0:
        x /= float(den)
    if m.group("sign") == "-":
        x = -x
    return x if math.isfinite(x) else None


def final_number(text: str) -> float | None:
    """The answer number of a generation (rule in the module docstring), or None."""
    text = text.replace("\u2212", "-")  # the Unicode minus sign
    markers = list(_MARKER.finditer(text))
    if markers:
        start = markers[-1].end()
        end = _SENTENCE_END.search(text, start)
        sentence = text[start:end.start() if end else len(text)]
        if "=" in sentence:  # a calculation: its result
            m = _NUMBER.search(text, start + sentence.rindex("=") + 1, start + len(sentence))
            if m:
                return _value(m)
        m = _NUMBER.search(text, start)
        return _value(m) if m else None
    numbers = list(_NUMBER.finditer(text))
    return _value(numbers[-1]) if numbers else None


def approx_correct(pred: float | None, gold: float, rel: float = 1e-3,
                   zero_tol: float = 1e-6) -> bool:
    """``|pred - gold| <= rel * |gold|`` (bound included); ``|pred| <= zero_tol`` if gold is 0."""
    if pred is None or not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    if gold == 0:
        return abs(pred) <= zero_tol
    return abs(pred - gold) <= rel * abs(gold) * (1 + 1e-9)


def _round2(x: float) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 400  # enough for any float's integer part
        return Decimal(repr(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def em2_correct(pred: float | None, gold: float) -> bool:
    """Both rounded half-up to 2 decimals are equal."""
    if pred is None or not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    return _round2(pred) == _round2(gold)


# ---------------------------------------------------------------- KAMEL

_RELATION = re.compile(r"<?(P\d+)>?")
_RELATION_IN_TEXT = re.compile(r"\bP\d+\b")


def relation_id(name: str) -> str:
    """``"<P241>"`` -> ``"P241"``; any other name is returned stripped, whole."""
    m = _RELATION.fullmatch(name.strip())
    return m.group(1) if m else name.strip()


def first_tool(calls: Sequence[Any] | None, text: str = "") -> str | None:
    """The first tool chosen: the first call's tool (a dict's ``"tool"``, an object's
    ``.tool`` or a string), else the first ``P<digits>`` token of ``text``, else None."""
    if calls:
        c = calls[0]
        tool = c.get("tool") if isinstance(c, dict) else getattr(c, "tool", c)
        return str(tool) if tool is not None else None
    m = _RELATION_IN_TEXT.search(text or "")
    return m.group(0) if m else None


def tool_correct(pred: str | None, gold: str) -> bool:
    """Whole relation ids are equal (``P241`` != ``P2416``)."""
    return pred is not None and relation_id(pred) == relation_id(gold)


# ---------------------------------------------------------------- scoring

_NUMERIC = ("funcqa-oh", "funcqa-mh", "gsm8k-xl")
METRIC_KEYS = {**{b: ("accuracy", "accuracy_em2") for b in _NUMERIC},
               "kamel": ("tool_accuracy",),
               **{f"apibench-{p}": ("domain_accuracy", "hallucination", "exact_api_accuracy")
                  for p in PROVIDERS}}
_SCORE_FIELD = {"accuracy": "correct", "accuracy_em2": "em2", "tool_accuracy": "correct",
                "domain_accuracy": "correct", "hallucination": "hallucination",
                "exact_api_accuracy": "exact"}


def _check_bench(bench: str) -> None:
    if bench not in METRIC_KEYS:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of: {', '.join(BENCHMARKS)}")


def score(bench: str, prediction: str, gold: Any, *, calls: Sequence[Any] | None = None,
          apis: ApiIndex | None = None) -> dict:
    """Score one generation: ``{"correct": bool, ...}`` plus the benchmark's other fields
    (numbers: ``em2``, ``number``; KAMEL: ``tool``; APIBench: ``hallucination``, ``exact``,
    ``parsed``, ``key``, ``matched``). APIBench needs ``apis``, the provider's documentation."""
    _check_bench(bench)
    if bench in _NUMERIC:
        x = final_number(prediction)
        return {"correct": approx_correct(x, float(gold)), "em2": em2_correct(x, float(gold)),
                "number": x}
    if bench == "kamel":
        tool = first_tool(calls, prediction)
        return {"correct": tool_correct(tool, gold),
                "tool": relation_id(tool) if tool is not None else None}
    provider = bench.removeprefix("apibench-")
    if apis is None or apis.provider != provider:
        raise ValueError(f"{bench} needs the {provider} API documentation "
                         f"(ApiIndex.from_file('{provider}_api.jsonl')), got "
                         f"{apis.provider if apis else None}")
    return score_api(prediction, gold, apis)


def aggregate(bench: str, scores: Iterable[dict]) -> dict[str, float | None]:
    """The benchmark's metrics (keys as in the issue), means rounded to 4 decimals;
    ``None`` when there is nothing to average. ``scores``: dicts from :func:`score`
    (or prediction records holding those fields)."""
    _check_bench(bench)
    scores = list(scores)
    out: dict[str, float | None] = {}
    for metric in METRIC_KEYS[bench]:
        name = _SCORE_FIELD[metric]
        missing = [i for i, s in enumerate(scores) if name not in s]
        if missing:
            raise ValueError(f"{bench}: score {missing[0]} has no field {name!r} "
                             f"(needed for {metric}); use evaluation.score()")
        hits = sum(bool(s[name]) for s in scores)
        out[metric] = round(hits / len(scores), 4) if scores else None
    return out


# ---------------------------------------------------------------- report

REPORT_KEYS = ("benchmark", "method", "n", "metrics", "base_model", "toolkens", "config",
               "predictions", "skipped", "wall_seconds")
PREDICTION_KEYS = ("id", "prediction", "gold", "correct", "calls")


def _jsonable(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return _jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def write_report(path: str | os.PathLike, record: dict) -> Path:
    """Write an evaluation record as JSON, atomically (temporary file, then os.replace).

    ``record`` must hold :data:`REPORT_KEYS` (written in that order, then any extra keys),
    each prediction :data:`PREDICTION_KEYS`, and ``n == len(predictions)``. Dataclasses
    (``Problem``) become objects; non-finite floats become null."""
    missing = [k for k in REPORT_KEYS if k not in record]
    if missing:
        raise ValueError(f"report is missing {missing}; required keys: {', '.join(REPORT_KEYS)}")
    for i, p in enumerate(record["predictions"]):
        lacking = [k for k in PREDICTION_KEYS if k not in p]
        if lacking:
            raise ValueError(f"prediction {i} is missing {lacking}; required: "
                             f"{', '.join(PREDICTION_KEYS)}")
    if record["n"] != len(record["predictions"]):
        raise ValueError(f"n={record['n']} but {len(record['predictions'])} predictions")
    ordered = {k: record[k] for k in REPORT_KEYS} | {k: v for k, v in record.items()
                                                     if k not in REPORT_KEYS}
    text = json.dumps(_jsonable(ordered), indent=2, ensure_ascii=False, allow_nan=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
