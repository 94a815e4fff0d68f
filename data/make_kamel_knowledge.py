"""Build the knowledge file of the KAMEL tool pack (tools/kamel.py) from ToolkenGPT's
``train_clean.json``.

    python data/make_kamel_knowledge.py --out data/kamel_knowledge.json
    python data/make_kamel_knowledge.py --train path/to/train_clean.json --out kb.json

Every record's ``call`` (``<f>P5353("FGH Elementary School")="District 1011"</f>``) becomes
the fact ``{"P5353": {"FGH Elementary School": "District 1011"}}``. Calls are read with
regular expressions, never evaluated. Several arguments are keyed as ``tools/kamel.py``'s
``fact_key`` says (joined with ", "); several quoted answers (``="A", "B"``) become a list.
Records that cannot be read are reported (count and the first few, with their index); when a
subject appears twice with different answers, the first answer is kept and the clash reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = REPO.parent / "shared" / "benchmarks" / "toolkengpt" / "kamel" / "train_clean.json"
CALL = re.compile(r'^\s*<f>\s*(P\d+)\(((?:"(?:[^"\\]|\\.)*"|[^()"])*)\)\s*=\s*(.*?)\s*</f>\s*$',
                  re.S)
ITEM = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^,"\s][^,"]*?))\s*(,|$)')
SHOW = 5


def _fact_key():
    """``fact_key`` from tools/kamel.py: the pack that reads the file defines its keys."""
    spec = importlib.util.spec_from_file_location("toolken_kamel_pack", REPO / "tools" / "kamel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.fact_key


def read_items(text: str) -> list[str]:
    """``"A", "B", 2016`` -> ["A", "B", "2016"]; ValueError if it is not such a list."""
    items, pos = [], 0
    while pos < len(text) and text[pos:].strip():
        m = ITEM.match(text, pos)
        if not m:
            raise ValueError(f"cannot read {text[pos:pos + 30]!r}")
        quoted, bare, sep = m.groups()
        items.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare)
        pos = m.end()
        if sep == "" and text[pos:].strip():
            raise ValueError(f"unexpected {text[pos:pos + 30]!r}")
    return items


def parse_call(call: str) -> tuple[str, list[str], Any]:
    """``<f>P5353("FGH")="District 1011"</f>`` -> ("P5353", ["FGH"], "District 1011")."""
    m = CALL.match(call)
    if not m:
        raise ValueError("not <f>Pxxx(args)=\"answer\"</f>")
    answers = read_items(m.group(3))
    if not answers:
        raise ValueError("empty answer")
    return m.group(1), read_items(m.group(2)), answers[0] if len(answers) == 1 else answers


def build_knowledge(records: list, fact_key) -> tuple[dict, list[str], list[str]]:
    """(knowledge, problems, clashes): problems and clashes are human-readable lines."""
    knowledge: dict[str, dict[str, Any]] = {}
    problems, clashes = [], []
    for i, rec in enumerate(records):
        calls = rec.get("call") if isinstance(rec, dict) else None
        calls = [calls] if isinstance(calls, str) else calls
        if not calls:
            problems.append(f"record {i}: no 'call' field")
            continue
        for call in calls:
            try:
                relation, args, answer = parse_call(call)
            except ValueError as e:
                problems.append(f"record {i}: {e}: {str(call)[:80]!r}")
                continue
            table = knowledge.setdefault(relation, {})
            key = fact_key(args)
            if key in table and table[key] != answer:
                clashes.append(f"record {i}: {relation}({key!r}) = {answer!r}, "
                               f"kept the earlier {table[key]!r}")
                continue
            table[key] = answer
    return knowledge, problems, clashes


def _report(what: str, lines: list[str]) -> None:
    if lines:
        print(f"{len(lines)} {what}; first {min(SHOW, len(lines))}:", file=sys.stderr)
        for line in lines[:SHOW]:
            print(f"  {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="train_clean.json")
    ap.add_argument("--out", type=Path, required=True, help="knowledge JSON to write")
    args = ap.parse_args(argv)
    if not args.train.is_file():
        ap.error(f"--train file not found: {args.train}")
    records = json.loads(args.train.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        ap.error(f"{args.train}: expected a JSON list of records, got {type(records).__name__}")
    knowledge, problems, clashes = build_knowledge(records, _fact_key())
    _report("record(s) could not be parsed", problems)
    _report("conflicting fact(s) skipped", clashes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(knowledge, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, args.out)
    facts = sum(len(t) for t in knowledge.values())
    print(f"wrote {facts} facts for {len(knowledge)} relations from {len(records)} records "
          f"to {args.out} ({len(problems)} unparsed, {len(clashes)} conflicting)")
    return 0 if knowledge else 1


if __name__ == "__main__":
    sys.exit(main())
