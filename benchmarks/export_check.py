"""Does an exported folder decode like toolken? ``toolken export`` a checkpoint, then for N
FuncQA-style questions compare plain transformers greedy ``generate`` on the folder
(``AutoModelForCausalLM.from_pretrained`` alone) with toolken's reasoning mode, up to and
including the first toolken.

    flock /tmp/toolken-heavy.lock env OMP_NUM_THREADS=2 \
        python benchmarks/export_check.py --toolkens outputs/funcqa [--questions 13] [--out RESULTS.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchutil import append_report, command_line, machine

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO.parent / "shared/benchmarks/toolkengpt/funcqa/template_oh/llama_general.txt"


def first_toolken(model, prompt: str, n: int) -> str | None:
    """The tool whose toolken wins first in toolken's reasoning mode (None: none in n tokens)."""
    for item in model.stream(prompt, max_new_tokens=n, stop=()):
        if getattr(item, "kind", None) == "tool_call":
            return item.call.tool
    return None


def main() -> None:
    from serve import questions  # noqa: E402 (benchmarks/serve.py)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toolkens", required=True)
    p.add_argument("--tools", default=str(REPO / "tools/funcqa.py"))
    p.add_argument("--questions", type=int, default=13)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--out")
    args = p.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolken.export import export
    from toolken.model import ToolkenModel

    model = ToolkenModel.from_pretrained(args.toolkens, tools=args.tools)
    model.generation_config = model.generation_config.replace(arg_demos=0, prompt_demos=0)
    template = TEMPLATE.read_text()
    agree = fired = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        export(model, Path(tmp) / "x")
        seconds = time.perf_counter() - t
        lm = AutoModelForCausalLM.from_pretrained(Path(tmp) / "x")
        tok = AutoTokenizer.from_pretrained(Path(tmp) / "x")
        ids = set(lm.generation_config.eos_token_id)
        for q in questions(args.questions):
            prompt = template.replace("[QUESTION]", q)
            tool = first_toolken(model, prompt, args.max_new_tokens)
            if tool is None:
                continue  # no toolken within the budget: not compared
            fired += 1
            x = tok(prompt, return_tensors="pt")
            out = lm.generate(**x, max_new_tokens=args.max_new_tokens, do_sample=False)
            new = out[0, x["input_ids"].shape[1]:].tolist()
            ok = new[-1] in ids and tok.convert_ids_to_tokens(new[-1]) == f"<tool:{tool}>"
            if ok and len(new) > 1:  # the tokens before it: toolken stopped one step earlier
                g = model.generate(prompt, max_new_tokens=len(new) - 1, stop=())
                ok = not g.calls and g.token_ids[x["input_ids"].shape[1]:] == new[:-1]
            agree += ok
            print(f"{'same' if ok else 'DIFFERENT'}: {q[:60]!r} -> <tool:{tool}>", flush=True)
    cmd = command_line()
    report = (f"### Export check: transformers `generate` on the exported folder vs reasoning mode "
              f"({time.strftime('%Y-%m-%d')})\n\n`{cmd}`\n\nMachine: {machine()}. Export took "
              f"{seconds:.1f} s. Of {args.questions} FuncQA-style questions in the paper's template, "
              f"{fired} reached a toolken within {args.max_new_tokens} tokens; on {agree} of them the "
              f"exported folder's greedy tokens up to and including the toolken were toolken's.\n")
    if args.out:
        append_report(args.out, report)
    else:
        print(report)


if __name__ == "__main__":
    main()
