"""Score saved FuncQA / GSM8K-XL eval reports again with today's answer reading
(``toolken.evaluation.metrics.score``), without generating again: the texts are the report's.

    python benchmarks/rescore.py REPORT.json [REPORT.json ...]

Prints, per report, its stored accuracy and the accuracy of the same texts scored now, and
every question whose verdict changed (id, before -> now, the answer's text). Reports of other
benchmarks are refused by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.evaluation.metrics import score  # noqa: E402

NUMERIC = ("funcqa-oh", "funcqa-mh", "gsm8k-xl")


def rescore(report: dict) -> tuple[int, int, list[tuple[str, bool, bool, str]]]:
    """(right before, right now, [(id, before, now, text)] for every changed verdict)."""
    before = now = 0
    changed = []
    for p in report["predictions"]:
        verdict = score(report["benchmark"], p["text"], p["gold"])["correct"]
        before += bool(p["correct"])
        now += verdict
        if verdict != bool(p["correct"]):
            changed.append((str(p["id"]), bool(p["correct"]), verdict, p["text"]))
    return before, now, changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="toolken eval --out files")
    args = ap.parse_args(argv)
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        if report.get("benchmark") not in NUMERIC:
            sys.exit(f"{path}: benchmark {report.get('benchmark')!r} is not one of {list(NUMERIC)}")
        before, now, changed = rescore(report)
        n = len(report["predictions"])
        print(f"{path}: {before}/{n} ({before / n:.4f}) stored -> {now}/{n} ({now / n:.4f}) now")
        for i, was, is_, text in changed:
            print(f"  id {i}: {was} -> {is_}: {' '.join(text.split())[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
