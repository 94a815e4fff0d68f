"""Write the hand-written FuncQA / GSM8K-XL test-style dev sets in the published formats,
with gold answers computed by the tool pack (FuncQA) or exactly with fractions (GSM8K-XL).

    python data/dev/make_math_dev.py            # rewrites the five files below
    python data/dev/make_math_dev.py --check    # exit 1 if a written file is out of date

Sources (hand-written, see data/dev/README.md) -> outputs, next to this script:

- ``funcqa_oh_source.txt`` -> ``funcqa_oh_dev.json``: ``{"question", "answer", "func"}``
  like ``format_sample_oh.json``; one line ``<op>(args) | question`` per question; the
  answer is ``tools/funcqa.py``'s result of the call (its text form, >= 6 significant digits).
- ``funcqa_mh_source.txt`` -> ``funcqa_mh_dev.json``: ``{"question", "answer",
  "calculation"}`` like ``format_sample_mh.json``; a block per question ("Q: ...", then
  one call per line, ``#k`` = the k-th call's full-precision result).
- ``funcqa_mh_source_b.txt`` -> ``funcqa_mh_dev_b.json``: a second multi-hop set (set B),
  same format and converter.
- ``funcqa_mh_source_c.txt`` -> ``funcqa_mh_dev_c.json``: a third multi-hop set (set C),
  same format and converter.
- ``gsm8k_xl_source.txt`` -> ``gsm8k_xl_dev.jsonl``: the gsm8k-xl test format (``question``
  with ``{v_i}``, ``answer``, ``v``, ``r``, ``reasoning_process``, ``result``,
  ``enhanced_v``, ``enhanced_process``, ``enhanced_result``); steps over ``{v_i}`` /
  ``{r_j}`` with ``+ - * /`` are computed exactly by ``toolken.evaluation.exact_value``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

from toolken.evaluation import exact_value
from toolken.tools import load_pack

HERE = Path(__file__).resolve().parent
PACK = HERE.parents[1] / "tools" / "funcqa.py"
_CALL = re.compile(r"^<(\w+)>\((.*)\)$")


class SourceError(ValueError):
    pass


def _lines(path: Path):
    """(line number, text) of the non-comment lines; blank lines kept as ''."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.lstrip().startswith("#"):
            yield n, line.strip()


def _call(tools, expr: str, where: str, results: list[float] = ()) -> tuple[str, float, str]:
    """Run ``<op>(args)`` (``#k`` = results[k-1]); (call text with the values, value, result text)."""
    m = _CALL.match(expr)
    if m is None or m.group(1) not in tools:
        raise SourceError(f"{where}: not a call of a FuncQA tool: {expr!r}")

    def ref(r: re.Match) -> str:
        k = int(r.group(1))
        if not 1 <= k <= len(results):
            raise SourceError(f"{where}: #{k} refers to no earlier call")
        return repr(results[k - 1])

    args = re.sub(r"#(\d+)", ref, m.group(2))
    res = tools[m.group(1)].call(args)
    if not res.ok:
        raise SourceError(f"{where}: {expr} failed: {res.error}")
    shown = ", ".join(_short(a) for a in args.split(","))
    return f"<{m.group(1)}>({shown})", float(res.value), res.text


def _short(arg: str) -> str:
    """An argument as written in the published files (a full-precision result rounded)."""
    x = float(arg)
    return str(int(x)) if x.is_integer() else f"{x:.6g}" if len(arg.strip()) > 10 else arg.strip()


def one_hop(tools, path: Path) -> list[dict]:
    out = []
    for n, line in _lines(path):
        if not line:
            continue
        expr, sep, question = (s.strip() for s in line.partition("|"))
        if not sep or not question:
            raise SourceError(f"{path.name}:{n}: expected '<op>(args) | question'")
        call, value, text = _call(tools, expr, f"{path.name}:{n}")
        out.append({"question": question, "answer": _json_number(value),
                    "func": f"{call}={text}"})
    return out


def _json_number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _blocks(path: Path) -> list[tuple[int, list[str]]]:
    blocks, cur, start = [], [], 0
    for n, line in [*_lines(path), (0, "")]:
        if line:
            start = start or n
            cur.append(line)
        elif cur:
            blocks.append((start, cur))
            cur, start = [], 0
    return blocks


def multi_hop(tools, path: Path) -> list[dict]:
    out = []
    for n, block in _blocks(path):
        where = f"{path.name}:{n}"
        if not block[0].startswith("Q: ") or not 2 <= len(block) - 1 <= 4:
            raise SourceError(f"{where}: expected 'Q: question' and 2 to 4 calls")
        results, steps = [], []
        for expr in block[1:]:
            call, value, text = _call(tools, expr, where, results)
            results.append(value)
            steps.append(f"{call}={text}")
        out.append({"question": block[0][3:].strip(), "answer": steps[-1].rsplit("=", 1)[1],
                    "calculation": steps})
    return out


def _values(text: str, where: str) -> list:
    vals = []
    for v in (s.strip() for s in text.split(",")):
        if "/" in v:
            exact_value(v)
            vals.append(v)  # fractions stay strings, as in the published file
        else:
            x = exact_value(v)
            vals.append(int(x) if x.denominator == 1 else float(x))
    if not vals:
        raise SourceError(f"{where}: no values")
    return vals


def _run_steps(steps: list[str], values: list, where: str) -> tuple[list[str], list[Fraction]]:
    """Each step with values and earlier results put in; (process lines, exact results)."""
    process, results = [], []
    for step in steps:
        def put(m: re.Match) -> str:
            seq = values if m.group(1) == "v" else [_num(r) for r in results]
            k = int(m.group(2))
            if not 1 <= k <= len(seq):
                raise SourceError(f"{where}: {m.group(0)} is out of range in {step!r}")
            return str(seq[k - 1])
        filled = re.sub(r"\{([vr])_(\d+)\}", put, step)
        results.append(exact_value("".join(f"({t})" if "/" in t else t
                                           for t in re.split(r"(\d+/\d+)", filled))))
        process.append(f"{filled} = {float(results[-1])!r}")
    return process, results


def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def gsm8k_xl(path: Path) -> list[dict]:
    out = []
    for n, block in _blocks(path):
        where = f"{path.name}:{n}"
        fields = {"Q": None, "V": None, "XL": None}
        steps = []
        for line in block:
            key, _, rest = line.partition(":")
            if key == "S":
                steps.append(rest.strip())
            elif key in fields and fields[key] is None:
                fields[key] = rest.strip()
            else:
                raise SourceError(f"{where}: unexpected line {line!r}")
        if None in fields.values() or not steps:
            raise SourceError(f"{where}: needs Q:, V:, XL: and at least one S: line")
        v, xl = _values(fields["V"], where), _values(fields["XL"], where)
        process, r = _run_steps(steps, v, where)
        xl_process, xl_r = _run_steps(steps, xl, where)
        answer = " ".join(f"{s}=<<{s}={{r_{i}}}>>{{r_{i}}}." for i, s in enumerate(steps, 1))
        out.append({"question": fields["Q"], "answer": f"{answer}\n#### {{r_{len(steps)}}}",
                    "v": v, "r": [float(x) for x in r], "reasoning_process": process,
                    "result": float(r[-1]), "enhanced_v": xl, "enhanced_process": xl_process,
                    "enhanced_result": float(xl_r[-1])})
    return out


def build_all() -> dict[Path, str]:
    tools = load_pack(PACK)
    oh = one_hop(tools, HERE / "funcqa_oh_source.txt")
    mh = multi_hop(tools, HERE / "funcqa_mh_source.txt")
    mh_b = multi_hop(tools, HERE / "funcqa_mh_source_b.txt")
    mh_c = multi_hop(tools, HERE / "funcqa_mh_source_c.txt")
    gsm = gsm8k_xl(HERE / "gsm8k_xl_source.txt")
    return {HERE / "funcqa_oh_dev.json": json.dumps(oh, indent=1) + "\n",
            HERE / "funcqa_mh_dev.json": json.dumps(mh, indent=1) + "\n",
            HERE / "funcqa_mh_dev_b.json": json.dumps(mh_b, indent=1) + "\n",
            HERE / "funcqa_mh_dev_c.json": json.dumps(mh_c, indent=1) + "\n",
            HERE / "gsm8k_xl_dev.jsonl": "".join(json.dumps(r) + "\n" for r in gsm)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check the files are up to date")
    a = p.parse_args()
    try:
        files = build_all()
    except (SourceError, ValueError) as e:
        sys.exit(f"make_math_dev: {e}")
    stale = [f for f, text in files.items() if not f.is_file() or f.read_text() != text]
    if a.check:
        for f in stale:
            print(f"out of date: {f}")
        sys.exit(1 if stale else 0)
    for f, text in files.items():
        f.write_text(text, encoding="utf-8")
        print(f"{f}: {text.count(chr(10)) if f.suffix == '.jsonl' else len(json.loads(text))} records")


if __name__ == "__main__":
    main()
