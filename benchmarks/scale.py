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
            "toolken_labels": int((feats.label >= base.vocab_size).sum()),
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


PHASES = {"features": run_features, "train": run_train, "decode": run_decode}


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
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    if min(args.ks) <= 0 or args.per_tool <= 0 or args.calls_per_record <= 0:
        p.error("--ks, --per-tool and --calls-per-record must be positive")
    if args.phase:
        return child_result(PHASES[args.phase](args, Path(args.work or ".")))
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


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
