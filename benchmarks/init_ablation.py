"""Description init vs random init of new toolkens, at 0, 5 and 20 training texts per tool.

    python benchmarks/init_ablation.py [--shots 0,5,20] [--seeds 0,1,2] [--out RESULTS.md]

KAMEL's 234 relations (``tools/kamel.py``) on the default base model. Each toolken row starts
either random (the paper: ``nn.Linear``'s default) or from the direction of the base model's
input embeddings of the tool's ``name: description`` (``model.add_tools(init="embedding")``,
the text the trainer uses with ``init: embedding``) at the random rows' norm (the library's
init since 2026-11-26) or at the LM head's mean row norm (its init before; to tell the
direction from the scale), then
trains on n texts per relation drawn (by seed)
from the KAMEL training texts outside the dev split. Scored on the dev split that
``toolken train configs/kamel.yaml`` holds out (5 %, seed 0: 454 held-out training-style
texts): toolken top-1 accuracy at the gold call positions (is the right relation the best
toolken; chance = 1/234) and dev toolken F1 (argmax over vocabulary + toolkens).

All settings train on one feature cache: the frozen pass over the whole KAMEL training file
with configs/kamel.yaml's labelling options, so the cache that ``toolken train
configs/kamel.yaml`` wrote is reused when it is there. Optimisation is configs/kamel.yaml's
(AdamW, lr 5e-3, batch 1,024 positions, 10 epochs, cosine) for every setting, on one CPU
thread (the head's products are small; on a shared CPU one thread is the fastest).
Prints a table and appends it, with this command, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from benchutil import append_report, machine, prepare

REPO = Path(__file__).resolve().parents[1]
KAMEL = REPO.parent / "shared/benchmarks/toolkengpt/kamel"
INITS = {"random": "random", "lmnorm": "description, LM-head norm",
         "embedding": "description, random-init norm (library)"}  # column titles
SETTINGS = {  # configs/kamel.yaml's values (that file may change; these stay)
    "base_model": "SmolLM2-135M-Instruct", "train_file": str(KAMEL / "train_clean.json"),
    "data_format": "toolkengpt-kamel", "tools": str(REPO / "tools/kamel.py"), "max_length": 256,
    "only_toolken_positions": False, "dev_fraction": 0.05, "seed": 0, "epochs": 10,
    "batch_size": 1024, "lr": 0.005, "schedule": "cosine", "progress": False}


def initial_head(base, names: list[str], texts: list[str], init: str, seed: int):
    """A model with one fresh row per tool, initialised as ``INITS[init]`` says."""
    from toolken.model import ToolkenModel

    torch.manual_seed(seed)
    m = ToolkenModel(base, [])
    m.add_tools(names, init="random" if init == "random" else "embedding", texts=texts)
    if init == "lmnorm":  # the library's embedding init before 2026-11-26
        with torch.no_grad():
            target = base.model.get_output_embeddings().weight.float().norm(dim=-1).mean()
            m.head.weight *= target / m.head.weight.norm(dim=-1, keepdim=True)
    return m


def fit(rows, feats, cfg, seed: int) -> None:
    """Train the rows on the cached features: the trainer's objective and schedule."""
    from toolken.training.loss import toolken_loss
    from toolken.training.trainer import scheduler_for

    opt = torch.optim.AdamW(rows.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(feats) / cfg.batch_size)
    sched = scheduler_for(cfg, opt, steps * cfg.epochs)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed + epoch))
        for s in range(steps):
            i = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = toolken_loss(rows(feats.h[i]), feats.lse[i], feats.zt[i], feats.label[i],
                                feats.vocab_size).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def score(rows, dev) -> dict:
    from toolken.training.trainer import evaluate

    gold = dev.label >= dev.vocab_size
    top1 = rows(dev.h[gold]).argmax(-1) == dev.label[gold] - dev.vocab_size
    return {"top1": float(top1.float().mean()), "f1": evaluate(rows, dev, "cpu")["f1"]}


def per_relation_pools(data, dev_seqs) -> dict[str, list[int]]:
    """Labelled sequence ids outside the dev split, by the relation their text calls."""
    pools = defaultdict(list)
    held = set(dev_seqs.tolist())
    for seq, rec in enumerate(data.labelled.record_index):
        if seq not in held and data.records[rec].calls:
            pools[data.records[rec].calls[0].tool].append(seq)
    return pools


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", default="0,5,20", help="training texts per relation")
    p.add_argument("--seeds", default="0,1,2", help="draws of the texts (and of random rows)")
    p.add_argument("--out", default=str(REPO / "RESULTS.md"))
    args = p.parse_args()
    shots, seeds = [int(x) for x in args.shots.split(",")], [int(x) for x in args.seeds.split(",")]
    from toolken.training.config import load_config
    from toolken.training.pipeline import split_features, tool_list
    from toolken.training.trainer import TrainableRows

    t0 = time.perf_counter()
    cfg = load_config(None, SETTINGS)
    base, model, data = prepare(cfg)
    names, _, texts = tool_list(cfg, data.records)
    train_f, dev_f = (v.load() for v in split_features(cfg, base, model.tools, data))
    pools = per_relation_pools(data, data.dev_seqs)
    torch.set_num_threads(1)  # the head's products are small: on a shared CPU one thread is fastest
    short = sorted(r for r in names if len(pools[r]) < max(shots))
    res: dict = defaultdict(list)  # (shots, init) -> [scores per seed]
    positions: dict = defaultdict(list)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = {r: rng.permutation(pools[r]).tolist() for r in names}
        for n in shots:
            chosen = torch.tensor(sorted(s for r in names for s in order[r][:n]), dtype=torch.long)
            sub = train_f.subset(torch.isin(train_f.seq, chosen))
            positions[n].append(len(sub))
            for init in INITS:
                rows = TrainableRows(initial_head(base, names, texts, init, seed), 0)
                if n:
                    fit(rows, sub, cfg, seed)
                res[n, init].append(score(rows, dev_f))
                print(f"seed {seed} shots {n} {init}: {res[n, init][-1]}", flush=True)
    report(args, res, positions, len(dev_f), int((dev_f.label >= base.vocab_size).sum()), short,
           len(names), time.perf_counter() - t0, shots, seeds)


def report(args, res, positions, n_dev, n_gold, short, k, wall, shots, seeds) -> None:
    def cell(xs):
        m = statistics.mean(xs)
        return f"{m:.3f}" if len(xs) == 1 else f"{m:.3f} ({min(xs):.3f}-{max(xs):.3f})"

    cmd = "python benchmarks/init_ablation.py" + (f" --shots {args.shots}" if args.shots != "0,5,20" else "") \
        + (f" --seeds {args.seeds}" if args.seeds != "0,1,2" else "")
    lines = [f"## New toolkens: description init vs random init (KAMEL, {k} relations) — "
             f"{time.strftime('%Y-%m-%d')}", "",
             f"`{cmd}` on {machine()}; {wall / 60:.1f} min. Dev split of configs/kamel.yaml "
             f"({n_dev:,} positions, {n_gold} gold calls); mean over seeds {seeds} (min-max); "
             f"chance top-1 = 1/{k} = {1 / k:.4f}.", "",
             "| texts per relation | training positions | "
             + " | ".join(f"{m}: {title}" for m in ("top-1", "dev F1") for title in INITS.values())
             + " |", "|---:|---:|" + "---:|" * 2 * len(INITS)]
    for n in shots:
        cells = [cell([x[m] for x in res[n, init]]) for m in ("top1", "f1") for init in INITS]
        lines.append(f"| {n} | {statistics.mean(positions[n]):,.0f} | " + " | ".join(cells) + " |")
    if short:
        lines += ["", f"{len(short)} relation(s) have fewer than {max(shots)} training texts outside "
                  f"the dev split and train on all they have: {', '.join(short[:10])}"
                  f"{f' and {len(short) - 10} more' if len(short) > 10 else ''}."]
    append_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
