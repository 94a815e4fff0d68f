"""False-call rate and tool accuracy with and without the Toolken+ rerank (toolken.generation.rerank).

    OMP_NUM_THREADS=1 python benchmarks/false_calls.py --toolkens outputs/kamel --limit 100 \
        --bias calibrated 2 --top-k 3 --method pmi choice --none-bias 0 2 \
        --out outputs/eval/false_calls.json

Two question sets, both in the paper's KAMEL reasoning prompt (``kamel_general.txt``), greedy,
at most one call, as ``toolken eval kamel`` runs them:
- KAMEL dev questions (``dev_first_30.json``, first ``--limit``): every one needs a tool;
  tool accuracy = the first tool called is the gold relation; call rate = any tool called.
- ``data/no_tool_questions.txt``: questions that need no tool (how-to, advice, definitions,
  writing requests; written for this benchmark); false-call rate = any tool called.

One row per toolken bias x (rerank off, and each rerank method x top-k x none bias).
``--bias calibrated`` is the bias stored in the checkpoint. Prints a markdown table; ``--out``
writes the figures (and each false call's question and tool) as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "benchmarks"


def no_tool_questions(path: Path) -> list[str]:
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
    questions = [x for x in lines if x and not x.startswith("#")]
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def run(model, questions: list[str], template: str, bias: float, top_k: int, none_bias: float,
        method: str, batch_size: int):
    from toolken.generation.decode import generate_batch
    from toolken.evaluation.run import STOPS

    return generate_batch(model, [template.replace("[QUESTION]", q) for q in questions],
                          questions=questions, max_new_tokens=32, stop=STOPS["kamel"],
                          max_tool_calls=1, toolken_bias=bias, batch_size=batch_size,
                          rerank_top_k=top_k, rerank_none_bias=none_bias, rerank_method=method)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toolkens", default="outputs/kamel")
    p.add_argument("--data", default=str(SHARED / "toolkengpt" / "kamel" / "dev_first_30.json"))
    p.add_argument("--no-tool", default=str(REPO / "data" / "no_tool_questions.txt"))
    p.add_argument("--template", default=str(SHARED / "toolkengpt" / "kamel" / "template" / "kamel_general.txt"))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--top-k", type=int, nargs="+", default=[3], help="rerank top-k values")
    p.add_argument("--method", nargs="+", default=["pmi", "choice"], help="rerank scorings")
    p.add_argument("--none-bias", type=float, nargs="+", default=[0.0], help="score(s) of 'none'")
    p.add_argument("--bias", nargs="+", default=["calibrated"], help="toolken biases ('calibrated': the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out")
    args = p.parse_args()

    from toolken.evaluation.loaders import load_benchmark
    from toolken.evaluation.metrics import first_tool, tool_correct
    from toolken.model import ToolkenModel

    model = ToolkenModel.from_pretrained(args.toolkens)
    model.attach_tools(model.extra_config["training"]["config"]["tools"])
    examples = load_benchmark("kamel", args.data)[0][: args.limit]
    plain = no_tool_questions(Path(args.no_tool))
    template = Path(args.template).read_text()
    rows = []
    print("| toolken bias | rerank | none bias | KAMEL tool accuracy | KAMEL call rate | "
          "false-call rate (no-tool) | reranks rejected | s / question |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    settings = [(0, "off", 0.0)] + [(k, m, nb) for m in args.method for k in args.top_k
                                      for nb in args.none_bias]
    for b in args.bias:
        bias = model.toolken_bias if b == "calibrated" else float(b)
        for k, method, none_bias in settings:
            t0 = time.perf_counter()
            kam = run(model, [ex.question for ex in examples], template, bias, k, none_bias, method, args.batch_size)
            free = run(model, plain, template, bias, k, none_bias, method, args.batch_size)
            secs = (time.perf_counter() - t0) / (len(kam) + len(free))
            right = sum(tool_correct(first_tool(g.calls), ex.gold) for ex, g in zip(examples, kam))
            decisions = [r for g in kam + free for r in g.reranks]
            row = {"toolken_bias": round(bias, 4), "rerank_top_k": k, "rerank_method": method,
                   "none_bias": none_bias, "kamel_n": len(kam),
                   "kamel_tool_accuracy": right / len(kam),
                   "kamel_call_rate": sum(bool(g.calls) for g in kam) / len(kam),
                   "no_tool_n": len(free), "false_call_rate": sum(bool(g.calls) for g in free) / len(free),
                   "reranks": len(decisions), "rejected": sum(r.choice is None for r in decisions),
                   "seconds_per_question": round(secs, 3),
                   "false_calls": [(q, g.calls[0].tool) for q, g in zip(plain, free) if g.calls]}
            rows.append(row)
            name = "off" if not k else f"{method}, top-{k}"
            print(f"| {bias:.2f} | {name} | {none_bias if k else ''} | {row['kamel_tool_accuracy']:.2f} | "
                  f"{row['kamel_call_rate']:.2f} | {row['false_call_rate']:.2f} | "
                  f"{row['rejected']}/{row['reranks']} | {secs:.2f} |", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"toolkens": args.toolkens, "data": args.data,
                                              "no_tool": args.no_tool, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
