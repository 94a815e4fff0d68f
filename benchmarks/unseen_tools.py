"""Toolkens for tools never trained: KAMEL relations in folds (issue 15).

    python data/make_kamel_questions.py --out outputs/kamel_questions.jsonl
    toolken train configs/kamel.yaml output_dir=outputs/kamel        # the features + upper bound
    python benchmarks/unseen_tools.py --toolkens outputs/kamel --folds 5 --out outputs/unseen_kamel.json

The 234 relations are split (by seed) into folds. Per fold, the seen relations' rows are
trained (the recipe's epochs, batch and lr) on the train-split records of the seen relations
only; the description -> toolken maps are fitted on those rows (``toolken.training.predict``:
ridge on the description; prototype, read in ``--layout``; prototype then end to end on the
same features); the held-out fold's rows are then set by each method compared:

    random | init: embedding | predicted (ridge) | predicted (prototype) | (prototype + loss) |
    each of these + 5 texts (5 train-split records per unseen relation, only those rows trained) |
    trained on all data (the checkpoint's rows: the upper bound)

Measured from the cached features (the same decision greedy generation takes at the toolken
position: the argmax over [vocab ; 234 toolkens] at "The answer is"), on the recipe's dev-split
records: tool accuracy on questions of the unseen relations and of the seen ones, and toolken
choice alone (argmax over the 234 rows). Printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolken.core.head import ToolkenHead, init_from_embeddings  # noqa: E402
from toolken.core.predictor import FEATURES, ToolkenPredictor, describe, guard_sample, reading_text, tool_text  # noqa: E402
from toolken.model import ToolkenModel  # noqa: E402
from toolken.training.loss import predict, toolken_loss  # noqa: E402
from toolken.training.predict import LossFit, checkpoint_tools, fit_loss, fit_prototype, fit_ridge  # noqa: E402


def load_features(model, directory):
    """(all features, dev mask over them, record index per position, records) of the recipe."""
    from toolken.training.config import from_dict
    from toolken.training.pipeline import load_records, prepare_data, split_features

    cfg = from_dict(model.extra_config["training"]["config"], f"{directory}'s recipe")
    train, dev, digest = load_records(cfg, verbose=False)
    data = prepare_data(cfg, model.base, model.tools, train, dev, digest, verbose=False)
    tr, dv = (v.load() for v in split_features(cfg, model.base, model.tools, data))  # in memory
    record_of = np.asarray(data.labelled.record_index)
    return tr, dv, record_of, data.records, cfg


def seq_tools(feats, K):
    """(seq ids, tool of each seq): one call per KAMEL question record."""
    V = feats.vocab_size
    pos = (feats.label >= V).nonzero().squeeze(1)
    return feats.seq[pos], feats.label[pos] - V, pos


def train_rows(feats, w0: torch.Tensor, trainable: torch.Tensor, epochs, batch, lr, seed=0):
    """Train rows ``trainable`` (bool (K,)) of w0 (K, d) on feats (labels V + i over these K
    rows) with AdamW and a cosine schedule, as the trainer does; the others stay fixed."""
    w = w0.clone()
    p = torch.nn.Parameter(w0[trainable].clone())
    opt = torch.optim.AdamW([p], lr=lr, weight_decay=0.0)
    n = len(feats)
    steps = math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps * epochs) / (steps * epochs))))
    g = torch.Generator().manual_seed(seed)
    idx_t = trainable.nonzero().squeeze(1)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            full = w.index_put((idx_t,), p)  # (K, d)
            z = feats.h[idx].float() @ full.T
            loss = toolken_loss(z, feats.lse[idx], feats.zt[idx], feats.label[idx],
                                feats.vocab_size).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return w.index_put((idx_t,), p.detach())


def remap(feats, keep_tools: torch.Tensor, K: int):
    """Features of the records whose tool is in keep_tools, toolken labels renumbered to the
    order of keep_tools (so the head has only those rows)."""
    V = feats.vocab_size
    seqs, tools, _ = seq_tools(feats, K)
    keep_seq = seqs[torch.isin(tools, keep_tools)]
    sub = feats.subset(torch.isin(feats.seq, keep_seq))
    new_index = torch.full((K,), -1, dtype=torch.long)
    new_index[keep_tools] = torch.arange(len(keep_tools))
    is_t = sub.label >= V
    sub.label = torch.where(is_t, V + new_index[(sub.label - V).clamp(min=0)], sub.label)
    return sub


def accuracy(w: torch.Tensor, feats, pos: torch.Tensor, chunk=4096,
             bias: torch.Tensor | None = None) -> tuple[float, float]:
    """(tool accuracy: argmax over [vocab ; rows] is the gold toolken, toolken choice: argmax
    over the rows alone is the gold row) at toolken positions ``pos``; ``bias``: (K,) added to
    the rows' logits."""
    V, hit, choice = feats.vocab_size, 0, 0
    for s in range(0, len(pos), chunk):
        p = pos[s:s + chunk]
        z = feats.h[p].float() @ w.T
        if bias is not None:
            z = z + bias
        pred = predict(z, feats.vmax[p], feats.vargmax[p], V)
        hit += int((pred == feats.label[p]).sum())
        choice += int((z.argmax(-1) + V == feats.label[p]).sum())
    n = max(1, len(pos))
    return hit / n, choice / n


def embedding_rows(model, tools, idx, seed):
    head = ToolkenHead(len(idx), model.base.hidden_size)
    init_from_embeddings(head, model.base, [name_description(tools[i]) for i in idx.tolist()])
    return head.weight.detach()


def name_description(t) -> str:
    """The text ``init: embedding`` reads (``toolken.training.pipeline.tool_list``)."""
    if isinstance(t, str):
        return t
    name, desc = (t["name"], t.get("description", "")) if isinstance(t, dict) else (t.name, t.description)
    return f"{name}: {desc}"


def random_rows(n, d, seed):
    torch.manual_seed(seed)
    return ToolkenHead(n, d).weight.detach()


def eval_positions(dv, unseen, mined_seq):
    seqs, tools, pos = seq_tools(dv, None)
    u = torch.isin(tools, unseen)
    return {"unseen": pos[u], "unseen_mined": pos[u & torch.isin(seqs, mined_seq)],
            "seen": pos[~u]}


def shots(tr, unseen, k, seed):
    """Features of k train-split records per unseen tool (labels over all K rows)."""
    seqs, tools, _ = seq_tools(tr, None)
    rng = np.random.default_rng(seed)
    pick = []
    for t in unseen.tolist():
        mine = seqs[tools == t].numpy()
        pick += rng.choice(mine, size=min(k, len(mine)), replace=False).tolist()
    return tr.subset(torch.isin(tr.seq, torch.tensor(pick)))


def run_fold(ctx, unseen: torch.Tensor, args) -> dict:
    tr, dv, x, tools, model = ctx["tr"], ctx["dv"], ctx["x"], ctx["tools"], ctx["model"]
    K, d = x.shape[0], model.base.hidden_size
    is_unseen = torch.zeros(K, dtype=torch.bool)
    is_unseen[unseen] = True
    seen = (~is_unseen).nonzero().squeeze(1)
    t0 = time.perf_counter()
    tr_seen = remap(tr, seen, K)
    w_seen = train_rows(tr_seen, random_rows(len(seen), d, args.seed), torch.ones(len(seen), dtype=torch.bool),
                        args.epochs, args.batch_size, args.lr, args.seed)
    t_seen = time.perf_counter() - t0
    ridge, extra = fit_ridge(x[seen], w_seen), {}
    xp = ctx["x_prompted"]
    proto = fit_prototype(xp[seen], w_seen, tr_seen, args.layout, seed=args.seed)
    proto_loss = fit_prototype(xp[seen], w_seen, tr_seen, args.layout, seed=args.seed)
    if args.loss_epochs:
        fit_loss(proto_loss, xp[seen], w_seen, tr_seen, LossFit(args.loss_epochs, args.batch_size, args.loss_lr,
                                                                 predicted_fraction=args.predicted_fraction,
                                                                 seed=args.seed))
    with torch.no_grad():
        starts = {"random": random_rows(len(unseen), d, args.seed + 1),
                  "embedding": embedding_rows(model, tools, unseen, args.seed),
                  "predicted (ridge on the description)": ridge(x[unseen]),
                  "predicted (prototype)": proto(xp[unseen])}
        if args.loss_epochs:
            starts["predicted (prototype + loss)"] = proto_loss(xp[unseen])
    for subset in args.feature_sets:  # ridge on fewer of the description features (no + texts)
        cols = torch.cat([torch.arange(FEATURES.index(f) * d, (FEATURES.index(f) + 1) * d)
                          for f in subset.split("+")])
        extra[f"predicted (ridge, {subset})"] = fit_ridge(x[seen][:, cols], w_seen)(x[unseen][:, cols])
    pos = eval_positions(dv, unseen, ctx["mined_seq"])
    shot_f = shots(tr, unseen, args.shots, args.seed)
    if args.replay:  # the unseen relations' texts plus `replay` texts of each seen relation
        keep = torch.isin(tr.seq, torch.cat([shot_f.seq.unique(), shots(tr, seen, args.replay, args.seed).seq.unique()]))
        replay_f = tr.subset(keep)
    out = {"unseen_tools": [name_description(tools[i]).split(":")[0] for i in unseen.tolist()], "seen_rows_seconds": t_seen,
           "ridge_alpha": ridge.meta["alpha"], "prototype": proto.meta, "n": {k: len(v) for k, v in pos.items()}, "rows": {}}
    dv_seen = remap(dv, seen, K)
    _, _, seen_only_pos = seq_tools(dv_seen, None)
    out["seen_only_head"] = accuracy(w_seen, dv_seen, seen_only_pos)
    for name, rows in starts.items():
        w = torch.zeros(K, d)
        w[seen], w[unseen] = w_seen, rows
        out["rows"][name] = {k: accuracy(w, dv, p) for k, p in pos.items()}
        w5 = train_rows(shot_f, w, is_unseen, args.shot_epochs, args.shot_batch, args.lr, args.seed)
        out["rows"][f"{name} + {args.shots} texts"] = {k: accuracy(w5, dv, p) for k, p in pos.items()}
        if args.replay:  # the same, with a few texts of every seen relation among the new ones
            w5 = train_rows(replay_f, w, is_unseen, args.shot_epochs, args.shot_batch, args.lr, args.seed)
            out["rows"][f"{name} + {args.shots} texts, {args.replay} seen each"] = {
                k: accuracy(w5, dv, p) for k, p in pos.items()}
    for off in args.offsets:  # the predicted rows' logits lowered by a constant (a row bias)
        name = next(n for n in ("predicted (prototype + loss)", "predicted (prototype)") if n in starts)
        w = torch.zeros(K, d)
        w[seen], w[unseen] = w_seen, starts[name]
        b = torch.zeros(K)
        b[unseen] = -off
        out["rows"][f"{name}, offset -{off:g}"] = {k: accuracy(w, dv, p, bias=b) for k, p in pos.items()}
    guard_bias = {}
    if args.guard_shares:  # the library's guard: a bias per predicted row (toolken.core.predictor)
        name = next(n for n in ("predicted (prototype + loss)", "predicted (prototype)") if n in starts)
        guard = ToolkenPredictor(1, d)
        guard.set_guard(*guard_sample(tr_seen.h, tr_seen.vmax, tr_seen.label, tr_seen.vocab_size, seed=args.seed))
        head = ToolkenHead(len(seen), d)
        head.weight.data = w_seen.clone()
        w = torch.zeros(K, d)
        w[seen], w[unseen] = w_seen, starts[name]
        for share in args.guard_shares:
            b = torch.zeros(K)
            b[unseen] = guard.guard_offsets(starts[name], head, 0.0, share)
            out["rows"][f"{name}, guard {share:g}"] = {k: accuracy(w, dv, p, bias=b) for k, p in pos.items()}
            out.setdefault("mean_guard_bias", {})[f"{share:g}"] = float(b[unseen].mean())
            guard_bias[share] = b
    for name, rows in extra.items():
        w = torch.zeros(K, d)
        w[seen], w[unseen] = w_seen, rows.detach()
        out["rows"][name] = {k: accuracy(w, dv, p) for k, p in pos.items()}
    if args.save_fold:  # a checkpoint to generate with: seen rows trained here, unseen predicted
        w = torch.zeros(K, d)
        w[seen], w[unseen] = w_seen, starts.get("predicted (prototype + loss)", starts["predicted (prototype)"])
        bias = guard_bias[args.guard_shares[0]] if args.guard_shares else None
        save_fold(model, w, out["unseen_tools"], Path(args.save_fold), bias)
        args.save_fold = None  # the first fold run only
    full = model.head.weight.detach().float()
    out["rows"]["trained on all data (upper bound)"] = {k: accuracy(full, dv, p) for k, p in pos.items()}
    return out


def save_fold(model, w: torch.Tensor, unseen_tools: list[str], directory: Path,
              bias: torch.Tensor | None = None) -> None:
    """The checkpoint with rows ``w`` (and head bias ``bias``: the guard's; the rest of it as
    it is), and the unseen relations' names in ``unseen_tools.json`` beside it, to run
    ``toolken eval`` on those relations."""
    trained, trained_bias = model.head.weight.detach().clone(), model.head.bias
    with torch.no_grad():
        model.head.weight.copy_(w.to(trained.dtype))
        if bias is not None:
            model.head.bias = torch.nn.Parameter(bias.to(trained.dtype))
    try:
        model.save_pretrained(directory)
    finally:
        with torch.no_grad():
            model.head.weight.copy_(trained)
            model.head.bias = trained_bias
    (directory / "unseen_tools.json").write_text(json.dumps(unseen_tools))
    print(f"saved {directory}: seen rows trained on the other folds, {len(unseen_tools)} predicted")


def summarise(folds: list[dict]) -> dict:
    """Accuracies over all folds' questions (weighted by each fold's question counts)."""
    total = {}
    for f in folds:
        for name, sets in f["rows"].items():
            for k, (acc, choice) in sets.items():
                t = total.setdefault(name, {}).setdefault(k, [0.0, 0.0, 0])
                n = f["n"][k]
                t[0] += acc * n
                t[1] += choice * n
                t[2] += n
    return {name: {k: {"accuracy": a / max(1, n), "choice": c / max(1, n), "n": n}
                   for k, (a, c, n) in sets.items()} for name, sets in total.items()}


def subsample(src: str, dst: str, per_relation: int, mined: int, seed: int = 0) -> None:
    """At most ``per_relation`` records per relation: up to ``mined`` of the questions mined
    from the story texts, then template questions (drawn by seed); file order kept."""
    lines = Path(src).read_text().splitlines()
    by_tool: dict[str, tuple[list[int], list[int]]] = {}
    for i, line in enumerate(lines):
        r = json.loads(line)
        by_tool.setdefault(r["calls"][0]["tool"], ([], []))["mined" not in r.get("source", "")].append(i)
    rng = np.random.default_rng(seed)
    keep = []
    for m, t in by_tool.values():
        m = rng.permutation(m)[:mined].tolist()
        keep += m + rng.permutation(t)[:per_relation - len(m)].tolist()
    Path(dst).write_text("\n".join(lines[i] for i in sorted(keep)) + "\n")
    print(f"wrote {len(keep)} of {len(lines)} records ({len(by_tool)} relations) to {dst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subsample", nargs=2, metavar=("IN", "OUT"),
                    help="only write a subsample of the question data (--per-relation, --mined) and exit")
    ap.add_argument("--per-relation", type=int, default=36)
    ap.add_argument("--mined", type=int, default=24)
    ap.add_argument("--toolkens", default="outputs/kamel")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="epochs for the seen rows (default: the recipe's)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--shot-epochs", type=int, default=20)
    ap.add_argument("--replay", type=int, default=2, help="'+ texts' also with this many texts of "
                    "each seen relation (the old tools' rows stay fixed; 0: off)")
    ap.add_argument("--shot-batch", type=int, default=256)
    ap.add_argument("--loss-epochs", type=int, default=2)
    ap.add_argument("--loss-lr", type=float, default=1e-3)
    ap.add_argument("--predicted-fraction", type=float, default=0.25)
    ap.add_argument("--layout", default="Question: {description}\nAnswer: The answer is",
                    help="the prototype predictor reads each tool's text in this layout")
    ap.add_argument("--feature-sets", nargs="*", default=[],
                    help="also ridge on these subsets of the description features")
    ap.add_argument("--max-minutes", type=float, default=float("inf"),
                    help="start no new fold after this many minutes (a shared machine's lock)")
    ap.add_argument("--offsets", type=float, nargs="*", default=[],
                    help="also score the predicted rows with their logits lowered by each of these")
    ap.add_argument("--guard-shares", type=float, nargs="*", default=[],
                    help="also score the predicted rows with the guard's bias per row (the least "
                         "that lets a row win on at most this share of the seen tools' training "
                         "positions, 8,192 sampled; toolken fit-predictor --guard-share)")
    ap.add_argument("--out", default="outputs/unseen_kamel.json")
    ap.add_argument("--save-fold", metavar="DIR", help="save the first fold's checkpoint (seen rows "
                    "trained, unseen rows predicted by the prototype map, trained end to end "
                    "with --loss-epochs; with --guard-shares, the first share's guard bias) and "
                    "its unseen relations")
    args = ap.parse_args()
    if args.subsample:
        return subsample(*args.subsample, args.per_relation, args.mined, args.seed)
    torch.manual_seed(args.seed)
    model = ToolkenModel.from_pretrained(args.toolkens)
    tr, dv, record_of, records, cfg = load_features(model, args.toolkens)
    args.epochs = args.epochs or cfg.epochs
    args.batch_size, args.lr = cfg.batch_size, cfg.lr
    tools = checkpoint_tools(model)
    texts = [tool_text(t) for t in tools]
    describe(model.base, texts[:1])  # warm-up
    t0 = time.perf_counter()
    x = describe(model.base, texts)
    t_describe = (time.perf_counter() - t0) / len(tools)  # the map itself is one (d, 3d) product
    mined = [s for s in range(len(record_of)) if "mined" in (records[record_of[s]].source or "")]
    x_prompted = describe(model.base, [reading_text(t, args.layout) for t in tools], ("last",))
    ctx = {"tr": tr, "dv": dv, "x": x, "x_prompted": x_prompted, "tools": tools, "model": model,
           "mined_seq": torch.tensor(mined, dtype=torch.long)}
    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(tools)))
    folds = [order[i::args.folds].sort().values for i in range(args.folds)]
    results, start = [], time.perf_counter()
    for i in args.only_folds if args.only_folds is not None else range(args.folds):
        if results and time.perf_counter() - start > 60 * args.max_minutes:
            print(f"stopping after {args.max_minutes} min: folds {[r['fold'] for r in results]} done")
            break
        t = time.perf_counter()
        results.append({"fold": i, **run_fold(ctx, folds[i], args)})
        print(f"fold {i}: {len(folds[i])} unseen relations, {time.perf_counter() - t:.0f} s", flush=True)
        report(results, t_describe, args)  # after every fold: a partial run keeps its folds


def report(results: list[dict], t_describe: float, args) -> None:
    out = {"folds": results, "summary": summarise(results), "describe_seconds_per_tool": t_describe,
           "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"description features: {t_describe:.3f} s per tool; folds {[r['fold'] for r in results]}")
    print(f"{'rows for the unseen relations':44s} {'unseen acc':>10s} {'choice':>7s} {'mined':>6s} {'seen acc':>9s}")
    for name, s in out["summary"].items():
        print(f"{name:44s} {s['unseen']['accuracy']:10.3f} {s['unseen']['choice']:7.3f} "
              f"{s['unseen_mined']['accuracy']:6.3f} {s['seen']['accuracy']:9.3f}")
    print("\n| rows for the unseen relations | unseen: tool accuracy | unseen: toolken choice | "
          "unseen, mined questions | seen: tool accuracy |\n|---|---:|---:|---:|---:|")
    for name, s in out["summary"].items():
        print(f"| {name} | {s['unseen']['accuracy']:.3f} | {s['unseen']['choice']:.3f} | "
              f"{s['unseen_mined']['accuracy']:.3f} | {s['seen']['accuracy']:.3f} |")
    n_seen = sum(r["n"]["seen"] for r in results)
    seen_only = sum(r["seen_only_head"][0] * r["n"]["seen"] for r in results) / max(1, n_seen)
    print(f"seen relations with the seen rows alone: {seen_only:.3f}; questions: "
          f"{out['summary']['random']['unseen']['n']} unseen ({out['summary']['random']['unseen_mined']['n']} "
          f"mined), {n_seen} seen", flush=True)

if __name__ == "__main__":
    main()
