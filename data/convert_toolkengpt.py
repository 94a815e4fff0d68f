"""Convert ToolkenGPT's released training data to the canonical JSONL format.

    B=../shared/benchmarks/toolkengpt
    python data/convert_toolkengpt.py funcqa $B/funcqa/train.json funcqa_train.jsonl
    python data/convert_toolkengpt.py kamel $B/kamel/train_clean.json kamel_train.jsonl

Prints what was converted and every record that could not be (with its index and reason).
The rules live in toolken.training.convert (convert_funcqa, convert_kamel).
"""

import argparse

from toolken.training.convert import convert
from toolken.core.data import save_jsonl

FORMATS = {"funcqa": "toolkengpt-funcqa", "kamel": "toolkengpt-kamel"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=sorted(FORMATS),
                        help="funcqa: FuncQA train.json; kamel: KAMEL train_clean.json")
    parser.add_argument("input", help="the released JSON file")
    parser.add_argument("output", help="canonical JSONL to write (replaced atomically)")
    args = parser.parse_args(argv)
    conversion = convert(args.input, FORMATS[args.dataset])
    save_jsonl(conversion.records, args.output)
    print(conversion.summary())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
