"""Write the Torch Hub records an APIBench training run held out, as a `toolken eval` file.

    python data/make_apibench_dev.py [--config configs/apibench.yaml] [--out outputs/apibench_torchhub_dev.json]

Takes exactly the dev split of `toolken train CONFIG` (the same files in the same order,
dev_fraction and seed; toolken.training.pipeline.dev_indices) and keeps the held-out records that came
from train_file (Gorilla's torchhub_train.json), written as JSON lines: the layout
`toolken eval apibench-torchhub` reads. The synthetic HuggingFace / TF Hub records of the split
are not benchmark records and are left out.
"""

import argparse
import json
import os
import re
import warnings

from toolken.training.config import load_config
from toolken.training.convert import _json_records
from toolken.training.pipeline import dev_indices, load_records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/apibench.yaml")
    p.add_argument("--out", default="outputs/apibench_torchhub_dev.json")
    a = p.parse_args()
    cfg = load_config(a.config)
    if cfg.data_format != "apibench" or cfg.dev_file:
        raise SystemExit(f"{a.config}: expects data_format apibench and no dev_file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the catalogue's repeated api_names
        records = load_records(cfg, verbose=False)[0]
    held = sorted(dev_indices(len(records), cfg.dev_fraction, cfg.seed).tolist())
    # converted Torch Hub records carry "apibench#<line index in train_file>"
    lines = [int(m.group(1)) for i in held
             if (m := re.fullmatch(r"apibench#(\d+)", records[i].source or ""))]
    raw = _json_records(cfg.train_file)  # the converter's own indexing of the file
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(raw[i][1], ensure_ascii=False) + "\n" for i in lines)
    print(f"wrote {len(lines)} held-out Torch Hub records to {a.out} "
          f"({len(held) - len(lines)} held-out synthetic records left out)")


if __name__ == "__main__":
    main()
