"""Training speed: the paper's loop vs toolken's cached-feature training vs one forward pass.

    python benchmarks/train_speed.py [--epochs 10] [--limit N] [--out BENCHMARKS.md]

Same data (FuncQA train set, toolken's dev split), same base model (default: SmolLM2-135M),
same epochs, each approach in its own process so that peak RSS is its own:

(a) the paper's loop (ToolkenGPT train_llama.py): every epoch, every record at batch 1, a
    frozen forward, full logits ``cat(lm_head(h), W_t h)``, ``F.cross_entropy``, AdamW step;
(b) ``toolken train`` (one cached frozen pass, then epochs over the cache);
(c) the floor: one plain ``no_grad`` forward over the same tokens (batched like (b)).

Prints a table and appends it, with this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchutil import append_report, child_result, machine, prepare, run_child

REPO = Path(__file__).resolve().parents[1]
PAPER_LR = 1e-3  # the reference loop: AdamW, lr 1e-3 constant, batch 1 (one record per step)
FUNCQA = REPO.parent / "shared/benchmarks/toolkengpt/funcqa/train.json"
TOOLS = ["add", "subtract", "multiply", "divide", "power", "sqrt", "log", "ln", "lcm", "gcd",
         "remainder", "choose", "permutate"]


def config(args, out: str):
    from toolken.training.config import load_config

    return load_config(REPO / "configs/funcqa.yaml", {
        "base_model": args.base_model, "tools": TOOLS, "epochs": args.epochs, "output_dir": out,
        # the bare texts, as the paper's loop reads them (the recipe reads them behind a prompt)
        "train_prompt": None, "train_prompt_demos": 0, "max_length": 512,
        "cache_dir": os.path.join(out, "cache"), "resume": False, "progress": False,
        "train_file": str(args.data) if not args.limit else limited(args, out)})


def limited(args, out: str) -> str:
    data = json.loads(Path(args.data).read_text())[: args.limit]
    path = os.path.join(out, "train.json")
    Path(path).write_text(json.dumps(data))
    return path


def run_ours(args, out: str) -> dict:
    from toolken.training.trainer import train

    t0 = time.perf_counter()
    res = train(config(args, out))
    wall = time.perf_counter() - t0
    best = res.history[-1]
    return {"wall_s": wall, "epoch_s": None, "dev_f1": best["dev_f1"]}


def setup(args, out: str):
    """Base, labelled data and dev features exactly as toolken's trainer makes them."""
    cfg = config(args, out)
    return (cfg, *prepare(cfg))


def run_paper(args, out: str) -> dict:
    """The reference loop, written as the paper's code does it."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from toolken.training.features import compute_features
    from toolken.training.loss import predict, prf, toolken_counts

    cfg, base, model, data = setup(args, out)
    dev = set(data.dev_seqs.tolist())
    train_idx = [i for i in range(len(data.labelled.input_ids)) if i not in dev]
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=PAPER_LR)
    lm_head = base.model.get_output_embeddings()
    t0 = time.perf_counter()
    epoch_times = []
    for epoch in range(cfg.epochs):
        te = time.perf_counter()
        order = np.random.default_rng(cfg.seed + epoch).permutation(train_idx)
        for i in order:
            x = torch.tensor([data.labelled.input_ids[i]])
            y = torch.tensor([data.labelled.labels[i]])
            with torch.no_grad():
                h = base.model.base_model(input_ids=x).last_hidden_state  # (1, T, d)
            logits = torch.cat([lm_head(h).float(), head(h)], dim=-1)  # (1, T, V + K)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_times.append(time.perf_counter() - te)
    wall = time.perf_counter() - t0
    # dev F1 of the head it trained, by the same metric as (b)
    dev_ids = sorted(dev)
    f = compute_features(base, [data.labelled.input_ids[i] for i in dev_ids],
                         [data.labelled.labels[i] for i in dev_ids], progress=False)
    with torch.no_grad():
        z = head(torch.from_numpy(f["h"]))
        pred = predict(z, torch.from_numpy(f["vmax"]), torch.from_numpy(f["vargmax"]).long(),
                       base.vocab_size)
        counts = toolken_counts(pred, torch.from_numpy(f["label"]), base.vocab_size)
    return {"wall_s": wall, "epoch_s": sum(epoch_times) / len(epoch_times),
            "dev_f1": prf(counts.tolist())["f1"]}


def run_floor(args, out: str) -> dict:
    import torch

    cfg, base, model, data = setup(args, out)
    ids = data.labelled.input_ids
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(order), 64):
            batch = [ids[i] for i in order[s:s + 64]]
            width = max(map(len, batch))
            x = torch.full((len(batch), width), base.tokenizer.pad_token_id)
            att = torch.zeros_like(x)
            for r, b in enumerate(batch):
                x[r, :len(b)], att[r, :len(b)] = torch.tensor(b), 1
            base.model(input_ids=x, attention_mask=att)  # a plain forward: hidden states + logits
    return {"wall_s": time.perf_counter() - t0, "epoch_s": None, "dev_f1": None,
            "tokens": sum(map(len, ids))}


PHASES = {"paper": run_paper, "toolken": run_ours, "floor": run_floor}


def child(args) -> None:
    with tempfile.TemporaryDirectory() as out:
        child_result(PHASES[args.phase](args, out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit", type=int, default=0, help="use only the first N training records")
    p.add_argument("--base-model", default="SmolLM2-135M-Instruct")
    p.add_argument("--data", default=str(FUNCQA))
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        return child(args)
    results = {}
    for phase in ("floor", "toolken", "paper"):
        results[phase] = run_child(__file__, [
            "--phase", phase, "--epochs", str(args.epochs), "--limit", str(args.limit),
            "--base-model", args.base_model, "--data", args.data], phase)
    report(args, results)


def report(args, r: dict) -> None:
    a, b, c = r["paper"], r["toolken"], r["floor"]
    cmd = "python benchmarks/train_speed.py" + (f" --epochs {args.epochs}" if args.epochs != 10 else "") \
        + (f" --limit {args.limit}" if args.limit else "")

    def f(x, fmt="{:.1f}"):
        return "–" if x is None else fmt.format(x)

    rows = [("(a) paper's loop", a), ("(b) toolken", b), ("(c) one no_grad forward", c)]
    lines = [f"## Training speed — {time.strftime('%Y-%m-%d')}", "",
             f"`{cmd}` on {machine()}; base {args.base_model}; {args.epochs} epochs; "
             f"FuncQA train set{f' (first {args.limit} records)' if args.limit else ''}, "
             f"{c['tokens']:,} tokens.", "",
             "| approach | wall time (s) | time per epoch (s) | peak RSS (MB) | dev toolken F1 |",
             "|---|---:|---:|---:|---:|"]
    b_epoch = b["wall_s"] / args.epochs
    for name, x in rows:
        ep = x["epoch_s"] if name.startswith("(a)") else (b_epoch if name.startswith("(b)") else None)
        lines.append(f"| {name} | {f(x['wall_s'])} | {f(ep, '{:.2f}')} | {f(x['peak_rss_mb'], '{:.0f}')} "
                     f"| {f(x['dev_f1'], '{:.3f}')} |")
    lines += ["", f"a/b = {a['wall_s'] / b['wall_s']:.1f}x (target >= 8 at equal dev F1 +-0.01); "
              f"b/c = {b['wall_s'] / c['wall_s']:.2f} (target <= 1.2); "
              f"dev F1 difference a-b = {a['dev_f1'] - b['dev_f1']:+.3f}.", "",
              "(b)'s wall time includes loading the data, labelling and the cached frozen pass; "
              "(b)'s time per epoch is its wall time divided by the epochs.", ""]
    append_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
