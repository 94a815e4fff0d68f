"""Multi-hop answers against the plan of the demo shown first: for each question of a
funcqa-mh eval report, whether the most similar multi-step training text (the first prompt
demo ``toolken eval`` shows, BM25 over the checkpoint's demo pool) calls the same tools in the
same order as the question's gold ``calculation``; accuracy in each group.

    python benchmarks/demo_plans.py REPORT.json... --data DEV.json... --toolkens outputs/funcqa \
        --tools tools/funcqa.py

Each REPORT.json is ``toolken eval funcqa-mh --data DEV.json ... --out REPORT.json``, given in
the same order as the ``--data`` files. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.core.data import load_jsonl  # noqa: E402
from toolken.evaluation import load_benchmark  # noqa: E402
from toolken.generation.demos import DemoPool  # noqa: E402
from toolken.model import DEMOS_NAME  # noqa: E402
from toolken.tools.registry import load_pack  # noqa: E402

_CALL = re.compile(r"<(\w+)>\(")


def first_demo_plan(pool: DemoPool, question: str) -> tuple[str, ...]:
    """The tools the most similar multi-step text calls (``<tool>(...)=`` marks), in order."""
    best = pool.examples[pool._shaped(pool.ranked(question), True)[0]]
    return tuple(_CALL.findall(next(iter(best.tool_text.values()), "")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="funcqa-mh eval reports (JSON)")
    p.add_argument("--data", nargs="+", required=True, help="the dev file of each report, in order")
    p.add_argument("--toolkens", required=True, help="the checkpoint the reports were made with")
    p.add_argument("--tools", required=True, help="its tool pack (writes the demos' calls)")
    args = p.parse_args(argv)
    if len(args.data) != len(args.reports):
        p.error(f"{len(args.reports)} reports but {len(args.data)} --data files")
    pool = DemoPool(load_jsonl(Path(args.toolkens) / DEMOS_NAME), load_pack(args.tools))
    print("| report | questions | first demo has the gold plan | right there | other | right there |")
    print("|---|---:|---:|---:|---:|---:|")
    for report, data in zip(args.reports, args.data):
        preds = {str(x["id"]): x for x in json.loads(Path(report).read_text())["predictions"]}
        examples, _ = load_benchmark("funcqa-mh", data)
        same = [0, 0]
        other = [0, 0]
        for ex in examples:
            pred = preds.get(str(ex.id))
            if pred is None:
                continue
            gold = tuple(ex.meta.get("tools") or ())  # the loader's: the ops in the order they run
            group = same if first_demo_plan(pool, ex.question) == gold else other
            group[0] += 1
            group[1] += bool(pred.get("correct"))
        print(f"| {Path(report).name} | {same[0] + other[0]} | {same[0]} | {same[1]} | {other[0]} | {other[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
