"""Replay the APIBench ``embed`` rerank's decisions with the ``rerank_requests`` term added at
several weights, from eval reports made without it (no generation: the recorded candidates and
scores, plus each candidate's best MiniLM cosine with its domain's user needs).

    python benchmarks/rerank_requests_sweep.py REPORT.json:DEV.json [REPORT.json:DEV.json ...] \
        [--weights 0 0.1 0.2 0.3 0.5 1] [--made-with 0] [--tools tools/apibench.py] [--temperature 0.01]

REPORT.json is ``toolken eval apibench-* --method toolken --out REPORT.json`` with the ``embed``
rerank, made with ``rerank_requests`` W (``--made-with W``, default 0: its recorded scores
hold W x the term, taken out before each weight is put in); DEV.json the questions it was run on
(Gorilla's JSONL, ``outputs/apibench_testdev/*.json``). The requests are the pack's
``meta["requests"]`` (``tools/apibench.py``: ``data/apibench_needs.yaml``), centred over the
candidates that have some: ``toolken.generation.rerank.request_sims``, the term the rerank
adds. Prints, per weight and report, domain and exact-API counts; weight 0 reproduces the
report's own figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.evaluation.api_match import ApiIndex  # noqa: E402
from toolken.evaluation.metrics import score  # noqa: E402
from toolken.generation.rerank import request_sims  # noqa: E402
from toolken.tools import load_pack  # noqa: E402

SHARED_API = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "apibench" / "api"


def replay(report: dict, questions: list[str], tools: dict, apis, embed, weights, made_with=0.0,
           temperature=0.01):
    """{weight: (domain right, exact API, n)} for one report made with ``rerank_requests``
    ``made_with``."""
    recs, asks = report["predictions"], {}
    qv = embed(questions)
    terms = [request_sims(q, [tools[n] for n in p["reranks"][0]["candidates"]], embed, asks).tolist()
             for p, q in zip(recs, qv)]
    out = {}
    for w in weights:
        dom = ex = 0
        for p, t in zip(recs, terms):
            rr = p["reranks"][0]
            names, scores = rr["candidates"], rr["scores"][:len(rr["candidates"])]
            best = max(range(len(names)),
                       key=lambda i: scores[i] + (w - made_with) * t[i] / temperature)
            s = score(report["benchmark"], tools[names[best]].meta.get("api_call", ""), p["gold"], apis=apis)
            dom, ex = dom + s["correct"], ex + s["exact"]
        out[w] = (dom, ex, len(recs))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="REPORT.json:DEV.json")
    ap.add_argument("--weights", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.5, 1.0])
    ap.add_argument("--tools", default="tools/apibench.py")
    ap.add_argument("--made-with", type=float, default=0.0,
                    help="the rerank_requests the reports were made with (default 0)")
    ap.add_argument("--temperature", type=float, default=0.01)
    args = ap.parse_args(argv)
    from toolken.generation.demos import minilm_embed

    tools = {t.name: t for t in load_pack(args.tools)}
    rows = []
    for pair in args.pairs:
        rpath, _, dpath = pair.partition(":")
        report = json.loads(Path(rpath).read_text())
        if not str(report.get("benchmark", "")).startswith("apibench-") or not all(
                p.get("reranks") for p in report["predictions"]):
            sys.exit(f"{rpath}: not a toolken APIBench report with the embed rerank")
        lines = [json.loads(x) for x in Path(dpath).read_text().splitlines() if x.strip()]
        questions = [re.search(r"###Instruction:(.*?)###Output", x["code"], re.S).group(1).strip()
                     for x in lines]
        if len(questions) != len(report["predictions"]):
            sys.exit(f"{dpath}: {len(questions)} questions, {rpath}: {len(report['predictions'])}")
        provider = report["benchmark"].removeprefix("apibench-")
        apis = ApiIndex.from_file(SHARED_API / f"{provider}_api.jsonl", provider)
        rows.append((Path(rpath).stem, replay(report, questions, tools, apis, minilm_embed,
                                              args.weights, args.made_with, args.temperature)))
    print("| rerank_requests | " + " | ".join(f"{n}: domain / exact" for n, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for w in args.weights:
        print(f"| {w:g} | " + " | ".join(f"{r[w][0]} / {r[w][1]} of {r[w][2]}" for _, r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
