"""Write FuncQA one-hop dev questions from the records a training run held out.

    python data/make_funcqa_dev.py [--config configs/funcqa.yaml] [--out outputs/funcqa_dev_oh.json]

Takes exactly the dev split of `toolken train CONFIG` (same converter, dev_fraction and seed;
with `extra_train_files`, the split is drawn over all records and only train_file's are kept),
so toolken, in-context and no-tool baselines can be compared on questions no toolken was
trained on. Each training text "Q: ...\\nA: ..." becomes {"question", "answer", "func"} in the
published one-hop format; the gold answer is the last call's result.
"""

import argparse
import json
import os
import re

from toolken.training.config import load_config
from toolken.training.convert import convert
from toolken.training.pipeline import dev_indices, load_records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/funcqa.yaml")
    p.add_argument("--out", default="outputs/funcqa_dev_oh.json")
    a = p.parse_args()
    cfg = load_config(a.config)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    records = load_records(cfg, verbose=False)[0]  # train_file's, then extra_train_files'
    n_main = len(convert(cfg.train_file, cfg.data_format).records)
    out, skipped = [], []
    for i in sorted(dev_indices(len(records), cfg.dev_fraction, cfg.seed).tolist()):
        if i >= n_main:  # held out from an extra file: not a record of train_file
            continue
        r = records[i]
        m = re.match(r"\s*Q:\s*(.*?)\s*\nA:", r.text, re.S)
        if not m or not r.calls:
            skipped.append(i)
            continue
        c = r.calls[-1]
        args = ", ".join(map(str, c.args or []))
        out.append({"question": m.group(1), "answer": float(c.result),
                    "func": f"<{c.tool}>({args})={c.result}", "record": i})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {len(out)} dev questions to {a.out}; skipped records without Q/A or call: {skipped}")


if __name__ == "__main__":
    main()
