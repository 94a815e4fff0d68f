"""The frozen feature pass on APIBench texts: every token vs texts cut after their last label.

    toolken synth --tools tools/apibench.py --only 'hf.*,tfhub.*' --per-tool 5 --out outputs/apibench_synth.jsonl
    python benchmarks/feature_pass.py [--sample 600] [--out BENCHMARKS.md]

An APIBench training text is ``###Instruction: ...\\n###Output: <<<api_call>>>: <api_call>``:
the toolken is the label at the call's first token and the rest of the call is masked, so no
feature depends on the call's tokens (the model is causal). ``toolken.training.features``
cuts every sequence after its last labelled position before the pass. This script labels
``configs/apibench.yaml``'s data exactly as training does, counts the tokens of the whole run
both ways, and times the pass over a seeded sample of the texts both ways in one process
(``trim=False``: every token, the reference; then the default), checking that the features
are the same. Prints a table and appends it, with this command, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from benchutil import append_report, command_line, machine, prepare

REPO = Path(__file__).resolve().parents[1]


def run(base, ids, labels, trim: bool) -> tuple[float, dict]:
    from toolken.training.features import iter_features

    t0 = time.perf_counter()
    out: dict[str, list] = {}
    for batch in iter_features(base, ids, labels, progress=False, trim=trim):
        for k, v in batch.items():
            out.setdefault(k, []).append(v.float().numpy() if k == "h" else v)
    return time.perf_counter() - t0, {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs/apibench.yaml"))
    ap.add_argument("--sample", type=int, default=600, help="texts timed both ways")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()

    from toolken.training.config import load_config

    cfg = load_config(args.config, {"progress": False})
    base, _, data = prepare(cfg)
    ids, labels = data.labelled.input_ids, data.labelled.labels
    last = [max((k + 1 for k, y in enumerate(lab) if y != -100), default=0) for lab in labels]
    full_tokens, cut_tokens = sum(map(len, ids)), sum(last)
    pick = sorted(random.Random(args.seed).sample(range(len(ids)), min(args.sample, len(ids))))
    s_ids, s_lab = [ids[i] for i in pick], [labels[i] for i in pick]
    run(base, s_ids[:8], s_lab[:8], True)  # warm-up
    t_full, f_full = run(base, s_ids, s_lab, False)
    t_cut, f_cut = run(base, s_ids, s_lab, True)
    key = lambda f: np.lexsort((f["pos"], f["seq"]))  # noqa: E731
    a, b = key(f_full), key(f_cut)
    same_rows = np.array_equal(f_full["seq"][a], f_cut["seq"][b]) and \
        np.array_equal(f_full["pos"][a], f_cut["pos"][b])
    dh = float(np.abs(f_full["h"][a] - f_cut["h"][b]).max()) if same_rows else float("nan")
    dl = float(np.abs(f_full["lse"][a] - f_cut["lse"][b]).max()) if same_rows else float("nan")
    n_full, n_cut = sum(map(len, s_ids)), sum(last[i] for i in pick)
    rows = len(f_cut["label"])
    text = "\n".join([
        f"## Feature pass: APIBench texts cut after their last label — {time.strftime('%Y-%m-%d')}",
        "",
        f"`{command_line()}` ({machine()}); recipe `{Path(args.config).name}`, base "
        f"{cfg.base_model}, {len(ids)} texts, {rows} labelled positions in the sample of {len(pick)}.",
        "",
        "| pass | tokens run (sample) | seconds | labelled positions / s | tokens of the whole run |",
        "|---|---:|---:|---:|---:|",
        f"| every token (reference) | {n_full} | {t_full:.1f} | {rows / t_full:.0f} | {full_tokens} |",
        f"| cut after the last label (default) | {n_cut} | {t_cut:.1f} | {rows / t_cut:.0f} | {cut_tokens} |",
        "",
        f"Speed-up on the sample: {t_full / t_cut:.2f}x; the whole run reads "
        f"{cut_tokens / full_tokens:.1%} of its tokens. Same rows (seq, pos): {same_rows}; largest "
        f"difference in h {dh:.2e}, in the vocabulary log-sum-exp {dl:.2e} (batches differ in "
        f"padding width, nothing else).",
    ])
    append_report(args.out, text)


if __name__ == "__main__":
    main()
