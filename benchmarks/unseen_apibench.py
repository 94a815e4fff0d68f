"""HuggingFace APIs never trained: rows predicted from Torch Hub and TF Hub ones (issue 15).

    toolken synth --tools tools/apibench.py --only 'hf.*,tfhub.*' --per-tool 5 --out outputs/apibench_synth_v1.jsonl
    python -c "..."   # outputs/apibench_synth_tfhub.jsonl: the tfhub.* records of it (RESULTS.md)
    toolken train configs/apibench.yaml output_dir=outputs/apibench \
        'extra_train_files=[outputs/apibench_synth_v1.jsonl]'                 # every row: the upper bound

(The figures in RESULTS.md use this synth file, the recipe's data before it added
``--needs data/apibench_needs.yaml --per-tool 8``; "+ 5 texts" trains the new rows on the
``hf.*`` records of the same file, RESULTS.md.)
    toolken train configs/apibench.yaml output_dir=outputs/apibench_seen \\
        'tool_options={catalogues: [torchhub, tensorflowhub]}' \\
        'extra_train_files=[outputs/apibench_synth_tfhub.jsonl]'               # no HuggingFace at all
    python data/make_apibench_testdev.py
    python benchmarks/unseen_apibench.py --seen outputs/apibench_seen --full outputs/apibench

The seen checkpoint has never seen a HuggingFace API (no row, no text). Its description ->
toolken map is fitted on its own rows (``toolken fit-predictor``'s prototype map, read in the
layout the toolkens fire in, then ``--loss-epochs`` end to end on its cached features); the 936
HuggingFace rows are then added with each init compared (random, ``init: embedding``,
predicted), the rows put back in the pack's order (hf.* first) and the checkpoint saved; each is
scored by ``toolken eval apibench-huggingface`` on the test-style HuggingFace dev instructions
(``--tool-filter 'hf.*'``: the user knows the hub), beside the checkpoint that trained every
row. The seen catalogues' own accuracy (Torch Hub dev, every row allowed to win) is measured
before the predicted rows are added (they are masked: exactly the seen checkpoint's choice) and
after. Printed as a table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolken.model import ToolkenModel  # noqa: E402
from toolken.tools.registry import load_pack  # noqa: E402
from toolken.training.predict import LossFit, fit_checkpoint  # noqa: E402

PACK = str(REPO / "tools" / "apibench.py")


def in_pack_order(model: ToolkenModel, names: list[str]) -> ToolkenModel:
    """The model's rows permuted into ``names``' order (a permutation of its tools)."""
    index = {n: i for i, n in enumerate(model.tools)}
    perm = torch.tensor([index[n] for n in names])
    with torch.no_grad():
        model.head.weight.data = model.head.weight.data[perm].clone()
        if model.head.bias is not None:
            model.head.bias.data = model.head.bias.data[perm].clone()
    model.tools = list(names)
    return model


def evaluate(bench: str, data: str, toolkens: str, out: Path, *tool_filter: str) -> dict:
    cmd = ["toolken", "eval", bench, "--data", data, "--toolkens", toolkens, "--tools", PACK,
           *[a for f in tool_filter for a in ("--tool-filter", f)], "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seen", default="outputs/apibench_seen", help="checkpoint of Torch Hub + TF Hub rows")
    ap.add_argument("--full", default="outputs/apibench", help="checkpoint with every row trained")
    ap.add_argument("--data", default="outputs/apibench_testdev/huggingface.json")
    ap.add_argument("--seen-data", default="outputs/apibench_testdev/torchhub.json",
                    help="a seen catalogue's dev file, scored with every row allowed")
    ap.add_argument("--layout", default="###Instruction: {description}\n###Output: <<<api_call>>>:",
                    help="how the predictor reads a tool's text (the prompt its toolken fires in)")
    ap.add_argument("--loss-epochs", type=int, default=1)
    ap.add_argument("--loss-lr", type=float, default=1e-4)
    ap.add_argument("--inits", nargs="+", default=["random", "embedding", "predicted"])
    ap.add_argument("--work", default="outputs/unseen_apibench")
    ap.add_argument("--out", default="outputs/unseen_apibench.json")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the catalogue's duplicate-name notes
        full_pack = load_pack(PACK)
    order = full_pack.names
    hf = [t for t in full_pack if t.name.startswith("hf.")]
    report = {"seen": args.seen, "full": args.full, "data": args.data, "layout": args.layout,
              "loss_epochs": args.loss_epochs, "loss_lr": args.loss_lr, "rows": {}}

    t0 = time.perf_counter()
    p = fit_checkpoint(args.seen, "prototype", None, args.layout,
                       LossFit(epochs=args.loss_epochs, lr=args.loss_lr) if args.loss_epochs else None)
    report["fit_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"predictor fitted in {report['fit_seconds']} s ({p.meta})", flush=True)

    for init in args.inits:
        model = ToolkenModel.from_pretrained(args.seen)
        t0 = time.perf_counter()
        model.add_tools(hf, init=init)
        seconds = time.perf_counter() - t0
        in_pack_order(model, order)
        model.manifest = full_pack.manifest()
        cfg = model.extra_config.setdefault("training", {}).setdefault("config", {})
        cfg["tool_options"] = {}  # the pack's default: every catalogue, hf.* first
        folder = work / init
        model.save_pretrained(folder)
        row = {"seconds_per_row": round(seconds / len(hf), 4),
               "huggingface": evaluate("apibench-huggingface", args.data, str(folder),
                                       folder / "eval_hf.json", "hf.*")}
        if init == "predicted" and args.seen_data:
            # before: the new rows masked, which is exactly the seen checkpoint's decision
            report["seen_before"] = evaluate("apibench-torchhub", args.seen_data, str(folder),
                                             folder / "eval_seen_before.json", "torchhub.*", "tfhub.*")
            row["seen_all_rows"] = evaluate("apibench-torchhub", args.seen_data, str(folder),
                                            folder / "eval_seen.json", "*")
        report["rows"][init] = row
        print(init, json.dumps(row), flush=True)
    if args.full:
        report["rows"]["trained on all data"] = {"huggingface": evaluate(
            "apibench-huggingface", args.data, args.full, work / "eval_full_hf.json", "hf.*")}

    print(f"\nHuggingFace dev ({args.data}), rows of the {len(hf)} HF APIs never trained:")
    print(f"{'rows':24} {'domain':>7} {'halluc.':>8} {'exact':>7} {'s/row':>7}")
    for name, row in report["rows"].items():
        m = row["huggingface"]
        print(f"{name:24} {m['domain_accuracy']:7.3f} {m['hallucination']:8.3f} "
              f"{m['exact_api_accuracy']:7.3f} {row.get('seconds_per_row', float('nan')):7.3f}")
    if "seen_before" in report and "seen_all_rows" in report["rows"].get("predicted", {}):
        b, a = report["seen_before"], report["rows"]["predicted"]["seen_all_rows"]
        print(f"seen catalogue ({args.seen_data}, every row may win): domain "
              f"{b['domain_accuracy']:.3f} -> {a['domain_accuracy']:.3f}, exact "
              f"{b['exact_api_accuracy']:.3f} -> {a['exact_api_accuracy']:.3f}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
