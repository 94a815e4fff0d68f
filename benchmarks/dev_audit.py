"""Near-duplicate audit of dev sets against training texts: for each dev question, its highest
token-set Jaccard and its highest BM25 score over the training texts; prints the distribution
(quantiles, max, the closest pairs) and fails (exit 1) if any dev question reaches Jaccard
>= --max-jaccard (default 0.6) with a training text.

    python benchmarks/dev_audit.py --dev funcqa-oh=data/dev/funcqa_oh_dev.json \\
        --dev funcqa-mh=data/dev/funcqa_mh_dev.json --dev gsm8k-xl=data/dev/gsm8k_xl_dev.jsonl \\
        --train ../shared/benchmarks/toolkengpt/funcqa/train.json --format toolkengpt-funcqa \\
        --results RESULTS.md
    python benchmarks/dev_audit.py --dev kamel=DEV.json \\
        --train ../shared/benchmarks/toolkengpt/kamel/train_clean.json --format toolkengpt-kamel
    python benchmarks/dev_audit.py --dev apibench-torchhub=DEV.jsonl \\
        --train ../shared/benchmarks/apibench/apibench/torchhub_train.json --format apibench \\
        --tools tools/apibench.py

Dev files: any benchmark format ``toolken eval`` reads (``BENCH=PATH``; the question is what
is compared). Training files: any format ``toolken train`` reads (``--format``, one of
``toolken.data.FORMATS``; ``--tools PACK`` for formats that map calls to tools). A training
text is compared by its question part: the text before its first answer line (``\\nA:`` or
``\\nAnswer:``), with a leading ``Q:`` / ``Question:`` dropped; a text without one whole.

Tokens: lower-cased runs of letters and digits (as toolken's BM25). Jaccard = |A & B| / |A | B|
of the token sets. BM25: k1=1.5, b=0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5)) over the
training texts; a repeated query word counts each time. Both are computed for all pairs at
once with sparse matrices (scipy).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolken.core.data import FORMATS  # noqa: E402
from toolken.evaluation import BENCHMARKS, load_benchmark  # noqa: E402

_TOKEN = re.compile(r"[a-z0-9]+")
_ANSWER_LINE = re.compile(r"\n\s*(?:A|Answer)\s*:")
_QUESTION_HEAD = re.compile(r"^\s*(?:Q|Question)\s*:\s*")
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def question_part(text: str) -> str:
    """A training text's question: before its first answer line, without a 'Q:' head."""
    m = _ANSWER_LINE.search(text)
    return _QUESTION_HEAD.sub("", text[: m.start()] if m else text)


class Index:
    """Training texts as a binary (Jaccard) and a BM25-weighted sparse matrix."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        toks = [tokens(t) for t in texts]
        self.vocab: dict[str, int] = {}
        rows, cols, counts = [], [], []
        for i, t in enumerate(toks):
            ids, c = np.unique([self.vocab.setdefault(w, len(self.vocab)) for w in t],
                               return_counts=True)
            rows += [i] * len(ids)
            cols += ids.tolist()
            counts += c.tolist()
        shape = (len(texts), max(len(self.vocab), 1))
        tf = sparse.csr_matrix((np.array(counts, float), (rows, cols)), shape=shape)
        self.binary = (tf > 0).astype(float).tocsr()
        self.sizes = np.asarray(self.binary.sum(axis=1)).ravel()
        n, lengths = len(texts), np.array([len(t) for t in toks], float)
        df = np.asarray(self.binary.sum(axis=0)).ravel()
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))
        tf = tf.tocoo()
        w = idf[tf.col] * tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.bm25 = sparse.csr_matrix((w, (tf.row, tf.col)), shape=shape)

    def best(self, question: str) -> tuple[float, int, float, int]:
        """(best Jaccard, its training index, best BM25, its training index)."""
        t = tokens(question)
        known = [self.vocab[w] for w in t if w in self.vocab]
        q = np.zeros(self.binary.shape[1])
        np.add.at(q, known, 1.0)
        inter = self.binary @ (q > 0).astype(float)
        union = len(set(t)) + self.sizes - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        bm = self.bm25 @ q
        j, k = int(jac.argmax()), int(bm.argmax())
        return float(jac[j]), j, float(bm[k]), k


def training_texts(paths: list[str], fmt: str, tools: str | None) -> list[str]:
    from toolken.training.convert import convert

    registry = None
    if tools:
        from toolken.tools import load_pack

        registry = load_pack(tools)
    texts = []
    for p in paths:
        conv = convert(p, fmt, registry)
        texts += [question_part(r.text) for r in conv.records]
    return texts


def dev_questions(specs: list[str]) -> list[tuple[str, str, str]]:
    """(set name, record id, question) for each ``BENCH=PATH``."""
    out = []
    for spec in specs:
        bench, sep, path = spec.partition("=")
        if not sep or bench not in BENCHMARKS:
            raise SystemExit(f"--dev {spec!r}: expected BENCH=PATH, BENCH one of {', '.join(BENCHMARKS)}")
        examples, skipped = load_benchmark(bench, path)
        if skipped:
            print(f"{path}: {len(skipped)} record(s) not loaded ({skipped[0].detail})")
        out += [(Path(path).name, ex.id, ex.question) for ex in examples]
    return out


def distribution(values: list[float]) -> list[str]:
    v = np.array(values)
    return [f"{np.quantile(v, q):.3f}" for q in QUANTILES] + [f"{v.max():.3f}"]


def report(rows: list[dict], train_desc: str, limit: float, top: int = 5) -> str:
    head = "| dev set | n | " + " | ".join(f"q{int(q * 100)}" for q in QUANTILES) + " | max |"
    lines = [f"Near-duplicate audit (`benchmarks/dev_audit.py`) against {train_desc}: per dev "
             f"question, the highest token-set Jaccard and BM25 score over the training texts "
             f"(question parts). Limit: Jaccard < {limit}.", ""]
    for metric in ("jaccard", "bm25"):
        lines += [f"**{metric}**", "", head, "|---|---:|" + "---:|" * (len(QUANTILES) + 1)]
        for name in dict.fromkeys(r["set"] for r in rows):
            vals = [r[metric] for r in rows if r["set"] == name]
            lines.append(f"| {name} | {len(vals)} | " + " | ".join(distribution(vals)) + " |")
        lines.append("")
    lines.append(f"Closest pairs by Jaccard (top {top}):")
    lines.append("")
    for r in sorted(rows, key=lambda r: -r["jaccard"])[:top]:
        lines.append(f"- {r['jaccard']:.3f} {r['set']}#{r['id']}: \"{r['question'][:90]}\" ~ "
                     f"\"{r['train'][:90]}\"")
    over = sum(r["jaccard"] >= limit for r in rows)
    lines += ["", f"{over} of {len(rows)} dev questions at Jaccard >= {limit}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev", action="append", required=True, metavar="BENCH=PATH")
    p.add_argument("--train", action="append", required=True, metavar="PATH")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--tools", help="tool pack, for training formats that need one (apibench)")
    p.add_argument("--max-jaccard", type=float, default=0.6)
    p.add_argument("--results", help="append the report to this file (RESULTS.md)")
    a = p.parse_args(argv)
    texts = training_texts(a.train, a.format, a.tools)
    if not texts:
        raise SystemExit("no training texts read")
    index = Index(texts)
    rows = []
    for name, rid, q in dev_questions(a.dev):
        jac, j, bm, _ = index.best(q)
        rows.append({"set": name, "id": rid, "question": q, "jaccard": jac, "bm25": bm,
                     "train": texts[j]})
    desc = ", ".join(f"`{Path(t).name}`" for t in a.train) + f" ({len(texts)} texts)"
    text = report(rows, desc, a.max_jaccard)
    print(text)
    if a.results:
        with open(a.results, "a") as fh:
            fh.write(text.rstrip("\n") + "\n\n")
    return 1 if any(r["jaccard"] >= a.max_jaccard for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
