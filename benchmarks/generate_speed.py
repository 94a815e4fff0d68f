"""Generation speed: toolken's decode loop against plain HF generate and the paper's strategy.

    python benchmarks/generate_speed.py --toolkens outputs/funcqa [--questions 20] [--out BENCHMARKS.md]

In one run, on the default base model:
(a) plain ``model.generate`` (greedy) vs toolken's ``generate`` with toolkens masked, so no
    tool fires: time per decoded token, same prompts, same number of tokens;
(b) FuncQA-style questions (the training set's per-tool questions; speed only, no scores):
    toolken (no re-encoding; per-tool prefix caches; the prompt template's cache reused
    across questions, starting cold) vs the paper's strategy (the whole
    context encoded again at every mode switch), greedy, checking both give the same text;
    and toolken's batched generation (8 questions in lockstep), which evaluation uses;
(c) time per decoded token with K = 13, 1,000 and 10,000 toolken rows, against K = 0.
Prints a table and appends it, with this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchutil import append_report, machine
from paper_loop import paper_generate

REPO = Path(__file__).resolve().parents[1]
FUNCQA = REPO.parent / "shared/benchmarks/toolkengpt/funcqa"
PLAIN_PROMPTS = ["Write a short note to a friend about a walk in the park.",
                 "Describe the colour of the sea on a calm morning.",
                 "List three things people pack for a picnic.",
                 "Explain why leaves change colour in autumn."]


def questions(n: int) -> list[str]:
    """n questions, round-robin over the 13 tools' training files."""
    per_tool = []
    for f in sorted((FUNCQA / "training_data").glob("*.jsonl")):
        per_tool.append([json.loads(x)["question"] for x in f.read_text().splitlines()[:5]])
    out = []
    i = 0
    while len(out) < n:
        out.append(per_tool[i % len(per_tool)][i // len(per_tool)])
        i += 1
    return out


def per_token_plain(model, tok, prompts, n_tokens) -> float:
    times = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")
        t = time.perf_counter()
        out = model.base.model.generate(**ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                                        do_sample=False, pad_token_id=tok.pad_token_id)
        times.append((time.perf_counter() - t) / (out.shape[1] - ids["input_ids"].shape[1]))
    return statistics.median(times)


def per_token_ours(model, prompts, n_tokens) -> float:
    times = []
    for p in prompts:
        g = model.generate(p, max_new_tokens=n_tokens, max_tool_calls=0, ignore_eos=True,
                           reuse_prompt=False)  # like for like with plain generate
        times.append(g.seconds / max(1, g.decoded_tokens))
    return statistics.median(times)


def with_k(model, k: int):
    """A copy of the model with k random toolken rows (never firing: toolkens masked)."""
    from toolken.model import ToolkenModel

    m = ToolkenModel(model.base, [])
    m.add_tools([f"t{i}" for i in range(k)])
    m.registry = model.registry
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toolkens", required=True, help="FuncQA checkpoint (toolken train configs/funcqa.yaml)")
    p.add_argument("--tools", default=str(REPO / "tools/funcqa.py"))
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--tokens", type=int, default=32, help="tokens per prompt in (a) and (c)")
    p.add_argument("--rounds", type=int, default=3, help="repetitions of (a)'s prompts")
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = p.parse_args()
    from toolken.model import ToolkenModel

    torch.manual_seed(0)
    model = ToolkenModel.from_pretrained(args.toolkens, tools=args.tools)
    tok = model.tokenizer
    template = (FUNCQA / "template_oh/llama_general.txt").read_text()
    per_token_ours(model, PLAIN_PROMPTS[:1], 4)  # warm-up
    per_token_plain(model, tok, PLAIN_PROMPTS[:1], 4)
    pl, ou = [], []
    for _ in range(args.rounds):  # interleaved, so that drift in machine speed hits both alike
        for prompt in PLAIN_PROMPTS:
            pl.append(per_token_plain(model, tok, [prompt], args.tokens))
            ou.append(per_token_ours(model, [prompt], args.tokens))
    plain, ours = statistics.median(pl), statistics.median(ou)

    qs = questions(args.questions)
    runs = {}
    for name, reencode, lookup in (("toolken", False, 0), ("paper (re-encode)", True, 0),
                                   ("toolken, prompt lookup (2)", False, 2)):
        model.prefix_store.clear()  # every run starts cold: no prompt or tool prefix cached
        model._tool_modes.clear()
        t = time.perf_counter()
        cfg = model.generation_config.replace(max_new_tokens=96, stop=["\nQ:", "\n\n"],
                                              prompt_lookup=lookup)
        gens = [paper_generate(model, template.replace("[QUESTION]", q), q, cfg) if reencode else
                model.generate(template.replace("[QUESTION]", q), cfg, question=q) for q in qs]
        runs[name] = (time.perf_counter() - t, gens)
    from toolken.generation.decode import generate_batch

    model.prefix_store.clear()
    model._tool_modes.clear()
    t = time.perf_counter()
    gens = generate_batch(model, [template.replace("[QUESTION]", q) for q in qs], questions=qs,
                          max_new_tokens=96, stop=["\nQ:", "\n\n"], batch_size=8, prompt_lookup=0)
    runs["toolken, batched (8)"] = (time.perf_counter() - t, gens)
    same = sum(a.text == b.text for a, b in zip(runs["toolken"][1], runs["paper (re-encode)"][1]))
    same_b = sum(a.text == b.text for a, b in zip(runs["toolken"][1], gens))
    same_l = sum(a.text == b.text for a, b in zip(runs["toolken"][1], runs["toolken, prompt lookup (2)"][1]))
    calls = [len(g.calls) for g in runs["toolken"][1]]

    variants = {k: with_k(model, k) for k in (0, 13, 1000, 10000)}
    per_token_ours(variants[0], PLAIN_PROMPTS[:1], 8)  # warm-up
    times: dict[int, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleaved rounds, as in (a)
        for k, m in variants.items():
            times[k].append(per_token_ours(m, PLAIN_PROMPTS, args.tokens))
    ks = {k: statistics.median(v) for k, v in times.items()}

    cmd = f"python benchmarks/generate_speed.py --toolkens {args.toolkens}"
    lines = [f"## Generation speed — {time.strftime('%Y-%m-%d')}", "",
             f"`{cmd}` on {machine()}; "
             f"base {model.base.name}, greedy, fp32.", "",
             f"(a) no tool fires, {len(PLAIN_PROMPTS)} prompts x {args.rounds} rounds x {args.tokens} tokens, "
             f"median time per token: "
             f"plain `model.generate` {plain * 1e3:.1f} ms, toolken {ours * 1e3:.1f} ms "
             f"(overhead {100 * (ours / plain - 1):+.1f} %; target <= 5 %).", "",
             f"(b) {len(qs)} FuncQA-style questions, the paper's llama_general prompt, max 96 tokens; "
             f"tool calls per question: min {min(calls)}, max {max(calls)}, total {sum(calls)}:", "",
             "| strategy | wall time (s) | tokens prefilled | tokens decoded |", "|---|---:|---:|---:|"]
    for name, (wall, gens) in runs.items():
        lines.append(f"| {name} | {wall:.1f} | {sum(g.prefilled_tokens for g in gens):,} | "
                     f"{sum(g.decoded_tokens for g in gens):,} |")
    paper_s = runs["paper (re-encode)"][0]
    lines += ["", f"Speed-up over the paper's strategy: {paper_s / runs['toolken'][0]:.2f}x one prompt at a "
              f"time, {paper_s / runs['toolken, prompt lookup (2)'][0]:.2f}x one at a time with prompt "
              f"lookup, {paper_s / runs['toolken, batched (8)'][0]:.2f}x batched (target >= 2x); identical "
              f"answers: re-encode {same}/{len(qs)}, prompt lookup {same_l}/{len(qs)}, batched "
              f"{same_b}/{len(qs)}.", "",
              "(c) median time per decoded token by number of toolken rows (toolkens masked):", "",
              "| K | ms / token | vs K = 0 |", "|---:|---:|---:|"]
    for k, v in ks.items():
        lines.append(f"| {k:,} | {v * 1e3:.2f} | {100 * (v / ks[0] - 1):+.1f} % |")
    append_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
