"""Why a toolken does not fire: its logit against the best word's at the position where it
should fire, with the text read on its own (as ToolkenGPT trains) and behind the few-shot
prompt (as `toolken eval --prompt-demos K` generates).

    python benchmarks/layout_probe.py --toolkens outputs/funcqa_bare \
        --report outputs/eval/fq_bare.json --dev outputs/funcqa_dev_oh.json

For each question of a `toolken eval funcqa-oh` report on which no toolken fired although
the model wrote an expression and "=", the text is cut right after the first "=" and scored
both ways. Prints one row per question and layout; `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO.parent / "shared/benchmarks/toolkengpt/funcqa/template_oh/llama_general.txt"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toolkens", required=True, help="checkpoint folder")
    ap.add_argument("--report", required=True, help="a toolken eval funcqa-oh JSON report")
    ap.add_argument("--dev", required=True, help="the questions it was run on")
    ap.add_argument("--template", default=str(TEMPLATE))
    ap.add_argument("--prompt-demos", type=int, default=4)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from toolken.generation.demos import retrieved_template
    from toolken.model import ToolkenModel
    from toolken.tools import load_pack

    model = ToolkenModel.from_pretrained(args.toolkens)
    registry = load_pack(model.extra_config.get("training", {}).get("config", {}).get("tools")
                         or "tools/funcqa.py")
    pool = model.attach_tools(registry).demo_pool(registry)
    template = Path(args.template).read_text()
    questions = json.loads(Path(args.dev).read_text())
    report = json.loads(Path(args.report).read_text())
    V, rows = model.vocab_size, []
    print(f"{'id':>4} {'layout':9} {'text before the toolken':>28}  best tool (logit)  best word (logit)")
    for p in report["predictions"]:
        text = p["text"]
        if p["calls"] or "=" not in text:
            continue
        q = questions[int(p["id"])]["question"]
        cut = text[:text.index("=") + 1]
        prompted = retrieved_template(template, pool.prompt_demos(q, args.prompt_demos))
        for layout, prompt in (("alone", f"Q: {q}\nA:{cut}"),
                               ("prompted", prompted.replace("[QUESTION]", q) + cut)):
            ids = model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = model(ids)[0][0, -1]
            tk, vocab = logits[V:], logits[:V]
            row = {"id": p["id"], "layout": layout, "text": cut[-28:],
                   "tool": model.tools[int(tk.argmax())], "tool_logit": round(float(tk.max()), 2),
                   "word": model.tokenizer.decode([int(vocab.argmax())]),
                   "word_logit": round(float(vocab.max()), 2)}
            rows.append(row)
            print(f"{row['id']:>4} {layout:9} {row['text']!r:>28}  {row['tool']} ({row['tool_logit']})"
                  f"  {row['word']!r} ({row['word_logit']})")
    for layout in ("alone", "prompted"):
        sel = [r for r in rows if r["layout"] == layout]
        wins = sum(r["tool_logit"] > r["word_logit"] for r in sel)
        gap = sum(r["tool_logit"] - r["word_logit"] for r in sel) / max(len(sel), 1)
        print(f"{layout}: the toolken beats the best word on {wins}/{len(sel)}; mean margin {gap:+.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
