"""Write data/tiny/train.jsonl: small arithmetic texts in the canonical format, for smoke runs.

    python data/make_tiny.py [--n 120] [--seed 0] [--out data/tiny/train.jsonl]
"""

import argparse
import json
import random

OPS = {"add": ("+", lambda a, b: a + b), "subtract": ("-", lambda a, b: a - b),
       "multiply": ("*", lambda a, b: a * b)}
NOUNS = ["apples", "books", "cars", "coins", "boxes", "trees"]


def record(rng: random.Random) -> dict:
    tool = rng.choice(sorted(OPS))
    sym, fn = OPS[tool]
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    noun = rng.choice(NOUNS)
    result = str(fn(a, b))
    text = f"Q: {a} {noun} and {b} {noun}. A: {a}{sym}{b}="
    start = len(text)
    text += f"{result} {noun}."
    return {"text": text, "calls": [{"tool": tool, "args": [a, b], "start": start,
                                      "end": start + len(result), "result": result}],
            "source": "data/make_tiny.py"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/tiny/train.jsonl")
    a = p.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for _ in range(a.n):
            f.write(json.dumps(record(rng)) + "\n")
    print(f"wrote {a.n} records to {a.out}")


if __name__ == "__main__":
    main()
