"""Where an APIBench eval report misses the exact API.

    python benchmarks/apibench_misses.py REPORT.json [REPORT.json ...] [--tools tools/apibench.py] [--near 0.9]

REPORT.json is ``toolken eval apibench-* --method toolken ... --out REPORT.json``. Each
question is one of: the exact API; the right domain but another API; a wrong domain; no API
(a hallucination). The right-domain misses are split further: was the gold API among the
rerank's candidates (the head's top k), and is its documentation near-identical to the
chosen API's (cosine of the two ``doc_text`` under all-MiniLM-L6-v2 >= ``--near``: APIs that
differ in a size letter or a checkpoint date, which no reading of the documentation can tell
apart). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.generation.rerank import doc_text  # noqa: E402
from toolken.tools import load_pack  # noqa: E402

KINDS = ("exact API", "right domain, other API", "  gold among the candidates",
         "  documentation near-identical", "wrong domain", "hallucination")


def misses(report: dict, tools: dict, embed, near: float = 0.9) -> Counter:
    """Counts of ``KINDS`` over the report's predictions. ``tools``: tool name -> catalogue
    tool (``meta["record"]``); ``embed``: texts -> (n, e) unit vectors."""
    by_call = {t.meta["record"].get("api_call"): t for t in tools.values()
               if isinstance((t.meta or {}).get("record"), dict)}
    c = Counter()
    for p in report["predictions"]:
        if p.get("exact"):
            c["exact API"] += 1
        elif p.get("hallucination") or not p.get("calls"):
            c["hallucination"] += 1
        elif not p.get("correct"):
            c["wrong domain"] += 1
        else:
            c["right domain, other API"] += 1
            gold = by_call.get(p["gold"]["api_call"])
            chosen = tools.get(p["calls"][0]["tool"])
            candidates = (p.get("reranks") or [{}])[0].get("candidates") or []
            c["  gold among the candidates"] += gold is not None and gold.name in candidates
            if gold is not None and chosen is not None:
                g, k = embed([doc_text(gold), doc_text(chosen)])
                c["  documentation near-identical"] += float(g @ k) >= near
    return c


def table(rows: list[tuple[str, int, Counter]]) -> str:
    head = "| | " + " | ".join(name for name, _, _ in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(f"{c[kind]} ({c[kind] / n:.3f})" if n else "0"
                                                  for _, n, c in rows) + " |")
    lines.append("| questions | " + " | ".join(str(n) for _, n, _ in rows) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="toolken eval apibench-* --out files")
    ap.add_argument("--tools", default="tools/apibench.py", help="the catalogue tool pack")
    ap.add_argument("--near", type=float, default=0.9,
                    help="documentation cosine at or above which two APIs count as near-identical")
    args = ap.parse_args(argv)
    reports = []
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        if not str(report.get("benchmark", "")).startswith("apibench-") or report.get("method") != "toolken":
            sys.exit(f"{path}: not a toolken APIBench report (benchmark {report.get('benchmark')!r}, "
                     f"method {report.get('method')!r})")
        reports.append((path, report))
    from toolken.generation.demos import minilm_embed

    tools = {t.name: t for t in load_pack(args.tools)}
    rows = [(Path(p).stem, len(r["predictions"]), misses(r, tools, minilm_embed, args.near)) for p, r in reports]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
