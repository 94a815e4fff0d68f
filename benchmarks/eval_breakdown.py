"""Where a FuncQA one-hop eval report goes wrong: per question, right answer / no call /
wrong first tool / right tool but wrong answer (arguments), overall and per gold tool.

    python benchmarks/eval_breakdown.py REPORT.json --data data/dev/funcqa_oh_dev.json

REPORT.json is ``toolken eval funcqa-oh ... --out REPORT.json``; ``--data`` the file it ran
on (its ``func`` fields give the gold tool). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.evaluation import load_benchmark  # noqa: E402


def outcome(pred: dict, gold_tool: str | None) -> str:
    if pred.get("correct"):
        return "right answer"
    calls = pred.get("calls") or []
    if not calls:
        return "no call"
    if gold_tool is not None and calls[0].get("tool") != gold_tool:
        return "wrong first tool"
    return "right tool, wrong answer"


def breakdown(report: dict, gold_tools: dict[str, str | None]) -> str:
    kinds = ("right answer", "no call", "wrong first tool", "right tool, wrong answer")
    total, by_tool, confusions = Counter(), {}, Counter()
    for p in report["predictions"]:
        gold = gold_tools.get(str(p["id"]))
        k = outcome(p, gold)
        total[k] += 1
        by_tool.setdefault(gold, Counter())[k] += 1
        if k == "wrong first tool":
            confusions[f"{p['calls'][0].get('tool')} for {gold}"] += 1
    n = len(report["predictions"])
    lines = [f"n={n}, accuracy {report['metrics'].get('accuracy')}", "",
             "| gold tool | n | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    for tool, c in sorted(by_tool.items(), key=lambda kv: str(kv[0])):
        lines.append(f"| {tool} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in kinds) + " |")
    lines.append(f"| all | {n} | " + " | ".join(str(total[k]) for k in kinds) + " |")
    lines += ["", "Wrong first tools: " + ", ".join(f"{k} x{v}" for k, v in confusions.most_common())]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report")
    p.add_argument("--data", required=True)
    a = p.parse_args()
    report = json.loads(Path(a.report).read_text())
    examples, _ = load_benchmark(report["benchmark"], a.data)
    gold = {ex.id: ex.meta.get("tool") for ex in examples}
    print(breakdown(report, gold))


if __name__ == "__main__":
    main()
