"""The feature cache's dtype: dev toolken F1 with h stored in fp32, bf16 and fp16.

    python benchmarks/feature_dtype.py [--recipes tiny,funcqa] [--out RESULTS.md]

For each recipe, ``toolken.training.trainer.train`` three times with ``feature_dtype`` = float32,
bfloat16 and float16 (each its own feature cache in a temporary folder; the loss always
accumulates in fp32); the best epoch's dev loss and toolken P / R / F1 and the cache's size.
``tiny`` is configs/tiny.yaml; ``funcqa`` is configs/funcqa.yaml on the bare texts (no prompt,
as README "Train toolkens" measures: ten epochs, dev = 65 held-out records). On a CPU the base
runs in fp32, so bf16 and fp16 are roundings of fp32 states; on a GPU the base's own bf16 is
what ``auto`` stores, and nothing is rounded. Appends a table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchutil import append_report, machine

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "tiny": ("configs/tiny.yaml", {}),
    "funcqa": ("configs/funcqa.yaml", {"train_prompt": None, "train_prompt_demos": 0,
                                       "max_length": 512}),
}
DTYPES = ("float32", "bfloat16", "float16")


def run(recipe: str, dtype: str, work: Path) -> dict:
    from toolken.training.config import load_config
    from toolken.training.trainer import train

    path, over = RECIPES[recipe]
    cfg = load_config(REPO / path, {**over, "feature_dtype": dtype, "output_dir": str(work / "out"),
                                    "cache_dir": str(work / "cache"), "resume": False,
                                    "progress": False})
    t = time.perf_counter()
    res = train(cfg)
    cache = sum(f.stat().st_size for f in (work / "cache").rglob("*.bin"))
    return {**res.best, "seconds": time.perf_counter() - t, "cache_mb": cache / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="tiny,funcqa")
    p.add_argument("--out", default=str(REPO / "RESULTS.md"))
    args = p.parse_args()
    recipes = args.recipes.split(",")
    if set(recipes) - set(RECIPES):
        p.error(f"--recipes: {sorted(set(recipes) - set(RECIPES))} not in {sorted(RECIPES)}")
    t0 = time.perf_counter()
    rows = []
    for recipe in recipes:
        for dtype in DTYPES:
            with tempfile.TemporaryDirectory() as work:
                r = run(recipe, dtype, Path(work))
            print(f"{recipe} {dtype}: {r}", flush=True)
            rows.append(f"| {recipe} | {dtype} | {r['cache_mb']:.1f} | {r['epoch']} | {r['dev_loss']:.4f} | "
                        f"{r['dev_precision']:.3f} | {r['dev_recall']:.3f} | {r['dev_f1']:.4f} |")
    cmd = "python benchmarks/feature_dtype.py" + (f" --recipes {args.recipes}"
                                                   if args.recipes != "tiny,funcqa" else "")
    append_report(args.out, "\n".join([
        f"## Feature cache dtype: dev toolken F1 — {time.strftime('%Y-%m-%d')}", "",
        f"`{cmd}` on {machine()}; base in fp32 (CPU), so bf16 / fp16 round the stored h; "
        f"the best epoch by dev F1; whole script {(time.perf_counter() - t0) / 60:.1f} min.", "",
        "| recipe | h stored as | cache h + scalars (MB) | best epoch | dev loss | dev P | dev R | dev F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *rows]))


if __name__ == "__main__":
    main()
