"""Scale: what K = 100, 1,700 and 10,000 toolkens cost on the default base model.

    python benchmarks/scale.py [--ks 100,1700,10000] [--per-tool 1] [--out BENCHMARKS.md]

For each K, tools ``t0 .. t{K-1}`` and a generated canonical training file with the same
number of calls for every tool (``--per-tool``, default 1), ``--calls-per-record`` calls per
text (``t42 = 58.``, the result span marked). A fixed number of calls *per tool* rather
than a fixed total: a tool added brings its own examples, so this is what a user pays per
tool, and it is the only way every one of 10,000 tools gets a call without 100 copies of
each of 100 tools at the small end. Every call has the same few-token shape at every K, so
only the amount of data and K change. (Real texts spend more tokens per call: KAMEL's about
26; the cache grows with the tokens, so its bytes per position are given.)

Per K, each step in its own child process (peak memory = that process's RSS high-water
mark, ``ru_maxrss``: base model, data, cache and head together):
(1) the frozen pass: ``toolken.training.pipeline.split_features`` into an empty cache folder; its
    time, and the bytes of the Arrow cache it writes;
(2) ``toolken.training.trainer.train`` on that cache (reused, not rebuilt): time per epoch (the
    trainer's ``epoch_seconds``: the optimisation steps over every training position);
then (3) one process decodes with K = 0 and every K (``generate_speed``'s loop, toolkens
masked, interleaved rounds): median ms per decoded token, and the overhead against K = 0.
Prints a table and appends it, with this command, to BENCHMARKS.md.

    python benchmarks/scale.py --memory [--memory-gb 1] [--memory-mb 512]

The memory row instead: a synthetic feature cache at d = 4,096 (h in bf16, 8 KB per position;
K = 8 toolkens, labels 2 % toolkens) of 8 parts of ``--memory-gb`` each, written once; then
``toolken.training.trainer.fit`` (the training loop, no base model) in a child process per
run, with ``feature_memory_mb = --memory-mb`` and one compute thread: one epoch on 1, 2, 4 and
8 parts (the 1x to 8x caches: peak RSS and time per epoch); the 1x cache with its pages
dropped from the page cache first (``posix_fadvise``: the disk read rate); and two epochs on
the 1x cache both streamed and in memory (a budget that holds it), for the time per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchutil import append_report, child_result, machine, prepare, run_child

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "SmolLM2-135M-Instruct"


def write_data(path: Path, k: int, per_tool: int, per_record: int, seed: int = 0) -> int:
    """Canonical JSONL with ``per_tool`` calls of each of the k tools; returns the records."""
    rng = random.Random(seed)
    calls = [i for i in range(k) for _ in range(per_tool)]
    rng.shuffle(calls)
    n = 0
    with open(path, "w") as f:
        for s in range(0, len(calls), per_record):
            text, spans = "", []
            for i in calls[s:s + per_record]:
                r = str(rng.randint(2, 99))
                text += f"t{i} = "
                spans.append({"tool": f"t{i}", "start": len(text),
                              "end": len(text) + len(r), "result": r})
                text += r + ". "
            f.write(json.dumps({"text": text.rstrip(), "calls": spans}) + "\n")
            n += 1
    return n


def config(args, work: Path):
    from toolken.training.config import load_config

    data = work / "train.jsonl"
    if not data.exists():
        write_data(data, args.k, args.per_tool, args.calls_per_record)
    return load_config(None, {
        "base_model": args.base_model, "train_file": str(data), "tools": [f"t{i}" for i in range(args.k)],
        "dev_fraction": 0.0, "epochs": args.epochs, "batch_size": 256, "lr": 1e-3,
        "output_dir": str(work / "out"), "cache_dir": str(work / "cache"), "resume": False,
        "progress": False})


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_features(args, work: Path) -> dict:
    from toolken.training.pipeline import split_features

    cfg = config(args, work)
    base, model, data = prepare(cfg)
    t = time.perf_counter()
    feats, _ = split_features(cfg, base, model.tools, data)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "positions": len(feats), "records": len(data.records),
            "tokens": sum(map(len, data.labelled.input_ids)),
            "toolken_labels": feats.toolken_labels(),
            "cache_bytes": folder_bytes(Path(cfg.cache_dir))}


def run_train(args, work: Path) -> dict:
    from toolken.training.trainer import train

    res = train(config(args, work))
    return {"epoch_seconds": [h["epoch_seconds"] for h in res.history]}


def run_decode(args, work: Path) -> dict:
    from generate_speed import PLAIN_PROMPTS, per_token_ours, with_k
    from toolken.core.base import load_base
    from toolken.model import ToolkenModel
    from toolken.tools.registry import ToolRegistry

    holder = ToolkenModel(load_base(args.base_model), [])
    holder.registry = ToolRegistry()  # no tool ever runs: toolkens are masked
    variants = {k: with_k(holder, k) for k in [0, *args.ks]}
    per_token_ours(variants[0], PLAIN_PROMPTS[:1], 8)  # warm-up
    times: dict[int, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleaved, so that drift in machine speed hits all alike
        for k, m in variants.items():
            times[k].append(per_token_ours(m, PLAIN_PROMPTS, args.tokens))
    return {"ms_per_token": {str(k): 1e3 * statistics.median(v) for k, v in times.items()}}


D, K_MEM, SEQ = 4096, 8, 128  # the memory row: hidden size, toolkens, rows per sequence


def write_synthetic(args, work: Path) -> dict:
    """8 parts of ``--memory-gb`` of random positions (h bf16, d = 4,096), and a cache folder
    ``x{k}`` for k = 1, 2, 4, 8 whose meta.json names the first k parts (symlinked)."""
    import numpy as np
    import torch
    from toolken.core.base import build_tiny_tokenizer
    from toolken.training.feature_store import ROW, PartWriter, write_meta

    V = len(build_tiny_tokenizer())  # the vocabulary of run_memtrain's base
    rows = int(args.memory_gb * 2**30 // (D * 2 + ROW.itemsize)) // SEQ * SEQ
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(8 * SEQ * 8, D, generator=g).to(torch.bfloat16) for _ in range(4)]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for p in range(8):
        w = PartWriter(work / f"part-{p:05d}", D, torch.bfloat16)
        for i, a in enumerate(range(0, rows, len(pool[0]))):
            n = min(len(pool[0]), rows - a)
            label = rng.integers(0, V, n)
            tool = rng.random(n) < 0.02
            label[tool] = V + rng.integers(0, K_MEM, int(tool.sum()))
            w.write({"h": pool[(p + i) % 4][:n], "lse": rng.normal(8, 1, n), "zt": rng.normal(0, 2, n),
                     "vmax": rng.normal(4, 1, n), "vargmax": rng.integers(0, V, n).astype(np.int32),
                     "label": label, "seq": (p * rows + a + np.arange(n)) // SEQ,
                     "pos": np.arange(a, a + n) % SEQ})
        w.close()
    seconds = time.perf_counter() - t
    for k in (1, 2, 4, 8):
        (work / f"x{k}").mkdir()
        for p in range(k):
            (work / f"x{k}" / f"part-{p:05d}").symlink_to(work / f"part-{p:05d}")
        write_meta(work / f"x{k}", "synthetic", [f"part-{p:05d}" for p in range(k)], D,
                   torch.bfloat16, 2)
    return {"rows_per_part": rows, "part_bytes": folder_bytes(work / "part-00000"),
            "write_seconds": seconds}


def drop_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the cache's pages (clean pages of our own files)."""
    for f in folder.rglob("*.bin"):
        fd = os.open(f.resolve(), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_memtrain(args, work: Path) -> dict:
    """``fit`` on the synthetic cache ``work`` (the last sequence held out for dev)."""
    import numpy as np
    from toolken.core.base import Base, build_tiny
    from toolken.training.config import load_config
    from toolken.training.feature_store import FeatureView
    from toolken.model import ToolkenModel
    from toolken.training.trainer import fit

    import torch

    torch.set_num_threads(1)  # the head's products are small: on a shared CPU one thread is fastest
    if args.cold:
        drop_page_cache(work)
    model, tok = build_tiny(hidden_size=D, layers=0)  # the LM head's shape only: no forward runs
    base = Base(model.eval().requires_grad_(False), tok, f"synthetic-d{D}", "synthetic")
    toolkens = ToolkenModel(base, [f"t{i}" for i in range(K_MEM)])
    view = FeatureView.open(work, base.vocab_size)
    seqs = np.unique(view.runs[:, 0])
    cfg = load_config(None, {"train_file": "synthetic", "epochs": args.epochs, "batch_size": 256,
                             "lr": 1e-3, "output_dir": str(work.parent / f"out-{work.name}"),
                             "resume": False, "progress": False, "log_every": 100,
                             "feature_memory_mb": args.memory_mb})
    res = fit(cfg, toolkens, 0, view.select(seqs[:-1]), view.select(seqs[-1:]))
    return {"positions": len(view), "cache_bytes": len(view) * view.row_bytes,
            "epochs": [{k: h[k] for k in ("epoch_seconds", "read_mb", "read_seconds", "train_loss")}
                       for h in res.history]}


PHASES = {"features": run_features, "train": run_train, "decode": run_decode,
          "memwrite": write_synthetic, "memtrain": run_memtrain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="100,1700,10000", help="numbers of toolkens, comma-separated")
    p.add_argument("--per-tool", type=int, default=1, help="training calls per tool")
    p.add_argument("--calls-per-record", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--tokens", type=int, default=32, help="decoded tokens per prompt")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the decode prompts")
    p.add_argument("--base-model", default=DEFAULT)
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--memory", action="store_true", help="the memory row instead (see above)")
    p.add_argument("--memory-gb", type=float, default=1.0, help="size of the 1x synthetic cache")
    p.add_argument("--memory-mb", type=float, default=512, help="feature_memory_mb of the runs")
    p.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    if min(args.ks) <= 0 or args.per_tool <= 0 or args.calls_per_record <= 0:
        p.error("--ks, --per-tool and --calls-per-record must be positive")
    if args.phase:
        return child_result(PHASES[args.phase](args, Path(args.work or ".")))
    if args.memory:
        return memory(args)
    common = ["--per-tool", str(args.per_tool), "--calls-per-record", str(args.calls_per_record),
              "--epochs", str(args.epochs), "--base-model", args.base_model]
    t0 = time.perf_counter()
    results = {}
    for k in args.ks:
        with tempfile.TemporaryDirectory() as work:
            kw = [*common, "--k", str(k), "--work", work]
            results[k] = {ph: run_child(__file__, ["--phase", ph, *kw], f"K={k} {ph}")
                          for ph in ("features", "train")}
    decode = run_child(__file__, ["--phase", "decode", "--ks", ",".join(map(str, args.ks)),
                                  "--tokens", str(args.tokens), "--rounds", str(args.rounds),
                                  "--base-model", args.base_model], "decode")
    report(args, results, decode, time.perf_counter() - t0)


def report(args, results: dict, decode: dict, wall: float) -> None:
    ms = decode["ms_per_token"]
    cmd = "python benchmarks/scale.py" + (f" --ks {','.join(map(str, args.ks))}"
                                          if args.ks != [100, 1700, 10000] else "") \
        + (f" --per-tool {args.per_tool}" if args.per_tool != 1 else "") \
        + (f" --base-model {args.base_model}" if args.base_model != DEFAULT else "")
    lines = [f"## Scale: K toolkens — {time.strftime('%Y-%m-%d')}", "",
             f"`{cmd}` on {machine()}; base {args.base_model}, fp32; {args.per_tool} training "
             f"call(s) per tool, {args.calls_per_record} calls per text (`t42 = 58.`); "
             f"whole script {wall / 60:.1f} min.", "",
             "| K | texts | tokens | cached positions | feature cache (MB) | frozen pass (s) "
             "| peak RSS, frozen pass (MB) | train time / epoch (s) | peak RSS, training (MB) "
             "| decode ms / token | vs K = 0 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, r in results.items():
        f, t = r["features"], r["train"]
        lines.append(f"| {k:,} | {f['records']:,} | {f['tokens']:,} | {f['positions']:,} | "
                     f"{f['cache_bytes'] / 2**20:.1f} | {f['seconds']:.1f} | {f['peak_rss_mb']:.0f} | "
                     f"{statistics.mean(t['epoch_seconds']):.2f} | {t['peak_rss_mb']:.0f} | "
                     f"{ms[str(k)]:.2f} | {100 * (ms[str(k)] / ms['0'] - 1):+.1f} % |")
    per_pos = [r["features"]["cache_bytes"] / r["features"]["positions"] for r in results.values()]
    lines += ["", f"K = 0 decodes at {ms['0']:.2f} ms / token (median of {args.rounds} rounds x 4 "
              f"prompts x {args.tokens} tokens). The cache holds {min(per_pos):,.0f}-"
              f"{max(per_pos):,.0f} bytes per labelled position (h in fp32 plus six scalars), "
              "whatever K is; it grows with the training tokens only."]
    append_report(args.out, "\n".join(lines))


def memory(args) -> None:
    """The memory row: write the synthetic cache, train on 1x..8x of it, compare with in-memory."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        w = Path(work)
        wrote = run_child(__file__, ["--phase", "memwrite", "--work", work,
                                     "--memory-gb", str(args.memory_gb)], "write synthetic cache")

        def fit_on(k: int, mb: float, epochs: int = 1, cold: bool = False) -> dict:
            extra = ["--cold"] if cold else []
            return run_child(__file__, ["--phase", "memtrain", "--work", str(w / f"x{k}"),
                                        "--memory-mb", str(mb), "--epochs", str(epochs), *extra],
                             f"{k}x, feature_memory_mb={mb:g}{', cold' if cold else ''}")

        runs = {k: fit_on(k, args.memory_mb) for k in (1, 2, 4, 8)}
        cold = fit_on(1, args.memory_mb, cold=True)
        in_memory = 1.5 * wrote["part_bytes"] / 2**20  # a budget that holds the 1x cache
        both = {"streamed": fit_on(1, args.memory_mb, 2), "in memory": fit_on(1, in_memory, 2)}
    memory_report(args, wrote, runs, cold, both, time.perf_counter() - t0)


def memory_report(args, wrote: dict, runs: dict, cold: dict, both: dict, wall: float) -> None:
    gb = 2**30
    rss = [r["peak_rss_mb"] for r in runs.values()]
    cmd = "python benchmarks/scale.py --memory" + (
        f" --memory-gb {args.memory_gb:g}" if args.memory_gb != 1.0 else "") + (
        f" --memory-mb {args.memory_mb:g}" if args.memory_mb != 512 else "")
    lines = [f"## Scale: training on a feature cache larger than memory — {time.strftime('%Y-%m-%d')}", "",
             f"`{cmd}` on {machine()}; synthetic cache, d = {D:,}, h in bf16 "
             f"({D * 2 + 28:,} bytes per position), K = {K_MEM}, batch 256, "
             f"`feature_memory_mb={args.memory_mb:g}`; the 8 parts written in "
             f"{wrote['write_seconds']:.0f} s; whole script {wall / 60:.1f} min.", "",
             "| cache | positions | cache size (GB) | peak RSS (MB) | cache / peak RSS | epoch (s) "
             "| read (GB) | read rate (MB/s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, r: dict, e: dict) -> str:
        return (f"| {name} | {r['positions']:,} | {r['cache_bytes'] / gb:.2f} | {r['peak_rss_mb']:,.0f} | "
                f"{r['cache_bytes'] / 2**20 / r['peak_rss_mb']:.1f}x | {e['epoch_seconds']:.1f} | "
                f"{e['read_mb'] / 1024:.2f} | {e['read_mb'] / max(e['read_seconds'], 1e-9):,.0f} |")

    lines += [row(f"{k}x", r, r["epochs"][0]) for k, r in runs.items()]
    lines.append(row("1x, page cache dropped first", cold, cold["epochs"][0]))
    for name, r in both.items():
        lines += [row(f"1x, {name}, epoch {i + 1}", r, e) for i, e in enumerate(r["epochs"])]
    ratio = both["streamed"]["epochs"][1]["epoch_seconds"] / both["in memory"]["epochs"][1]["epoch_seconds"]
    lines += ["", f"Peak RSS from 1x to 8x: {min(rss):,.0f} to {max(rss):,.0f} MB "
              f"({100 * (max(rss) / min(rss) - 1):+.1f} %). Streamed / in-memory time for the second "
              f"epoch on the 1x cache: {ratio:.2f}x (the in-memory run reads the cache once, in its "
              "first epoch). Read rate: bytes over the read-ahead thread's time in `preadv`, from the "
              "page cache except in the row where it was dropped (the disk)."]
    append_report(args.out, "\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
