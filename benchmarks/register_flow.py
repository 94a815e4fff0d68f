"""The README's *Register new tools* flow, run as a user runs it, scored on fresh questions
(issue 15, item 0).

    python benchmarks/register_flow.py --toolkens outputs/funcqa [--results RESULTS.md]

Runs the README's three commands with the README's pack (``tools/register_example.py``, the
same text as the README's ``my_pack.py``): ``toolken synth --lead "The answer is"`` (seeded),
``toolken train ... train_only=new`` (texts read as they are), then generation under the
README's ``answer_is.txt`` template with the tools' own demos, quoted strings copied and
arguments after their names (``--arg-demos 0 --arg-strings context --arg-names``), on the
questions of ``data/dev/register_questions.jsonl`` (written by hand for this project, 20 per
new tool, independently of the synth output). A question counts when its first tool call is
the gold tool with the gold arguments (numbers equal, strings equal after trimming); it also
reports how many answers stop on the answer's own line. Prints a table; ``--results`` appends
it, with the command, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchutil import append_report, command_line, machine  # noqa: E402

TEMPLATE = "Q: [QUESTION]\nA: The answer is"


def same_arguments(got, gold) -> bool:
    if got is None or len(got) != len(gold):
        return False
    for a, b in zip(got, gold):
        if isinstance(b, str):
            if not isinstance(a, str) or a.strip() != b.strip():
                return False
        else:
            try:
                if abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(b))):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def score(questions: list[dict], generations) -> tuple[list[dict], dict]:
    rows, per_tool = [], {}
    for q, g in zip(questions, generations):
        first = g.calls[0] if g.calls else None
        right_tool = first is not None and first.tool == q["tool"]
        right = right_tool and same_arguments(first.arguments, q["arguments"])
        one_line = "\n" not in g.text.strip()
        rows.append({"question": q["question"], "gold": [q["tool"], q["arguments"]],
                     "call": [first.tool, first.arguments, first.result] if first else None,
                     "right_tool": right_tool, "right": right, "one_line": one_line,
                     "stop_reason": g.stop_reason, "text": g.text})
        c = per_tool.setdefault(q["tool"], Counter())
        c.update(n=1, right_tool=int(right_tool), right=int(right), one_line=int(one_line))
    return rows, per_tool


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toolkens", default="outputs/funcqa", help="the main job's FuncQA checkpoint")
    p.add_argument("--pack", default="tools/register_example.py")
    p.add_argument("--questions", default="data/dev/register_questions.jsonl")
    p.add_argument("--per-tool", type=int, default=20)
    p.add_argument("--method", default="template", choices=("template", "model", "both"))
    p.add_argument("--lead", default="The answer is", help="synth --lead ('' for varied lead-ins)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="outputs/register_flow", help="synth file and checkpoint go here")
    p.add_argument("--skip-train", action="store_true", help="score the checkpoint already in --work")
    p.add_argument("--set", nargs="*", default=["train_prompt=null", "train_prompt_demos=0"],
                   metavar="KEY=VALUE", help="training overrides (default: the README's: texts "
                   "read as they are, the layout generation uses with answer_is.txt)")
    p.add_argument("--gen", nargs="*", default=["arg_demos=0", "arg_strings=context", "arg_names=true"],
                   metavar="KEY=VALUE", help="generation overrides (GenerationConfig fields; default: "
                   "the README's --arg-demos 0 --arg-strings context --arg-names)")
    p.add_argument("--results", help="append the report to this file (RESULTS.md)")
    p.add_argument("--out", help="write every answer as JSON here")
    args = p.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    synth, ckpt = work / "new_tools.jsonl", work / "checkpoint"
    t_synth = t_train = 0.0
    if not args.skip_train:
        t_synth = run(["toolken", "synth", "--tools", args.pack, "--only", "percent,similarity",
                       "--per-tool", str(args.per_tool), "--method", args.method,
                       "--seed", str(args.seed), "--out", str(synth),
                       *(["--lead", args.lead] if args.lead else [])])
        t_train = run(["toolken", "train", "configs/funcqa.yaml", f"resume_from={args.toolkens}",
                       "train_only=new", f"tools={args.pack}", f"train_file={synth}",
                       "data_format=canonical", f"output_dir={ckpt}", *args.set])

    from toolken import ToolkenModel, load_pack

    questions = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    model = ToolkenModel.from_pretrained(ckpt).attach_tools(load_pack(args.pack))
    from toolken.training.config import parse_overrides

    cfg = model.generation_config.replace(stop=("\n",),  # what `toolken generate` uses for this template
                                          **parse_overrides(args.gen))
    t0 = time.perf_counter()
    gens = model.generate_batch([TEMPLATE] * len(questions), cfg,
                                questions=[q["question"] for q in questions], progress=True)
    t_gen = time.perf_counter() - t0
    rows, per_tool = score(questions, gens)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))

    lines = [f"## Register flow on fresh questions (issue 15) — {time.strftime('%Y-%m-%d')}", "",
             f"`{command_line()}` on {machine()}; synth {t_synth:.0f} s, training the new rows "
             f"{t_train:.0f} s, {len(questions)} answers {t_gen:.0f} s.", "",
             "| new tool | questions | right tool | right tool and arguments | answer stops on its line |",
             "|---|---:|---:|---:|---:|"]
    for tool, c in per_tool.items():
        lines.append(f"| {tool} | {c['n']} | {c['right_tool']} | **{c['right']}** ({c['right'] / c['n']:.0%}) "
                     f"| {c['one_line']} |")
    wrong = [r for r in rows if not r["right"]]
    if wrong:
        lines += ["", "Missed:", ""]
        lines += [f"- {r['question']} -> {r['call'][0] + str(tuple(r['call'][1] or ())) if r['call'] else 'no call'}"
                  for r in wrong]
    report = "\n".join(lines)
    if args.results:
        append_report(args.results, report)
    else:
        print(report)


if __name__ == "__main__":
    main()
