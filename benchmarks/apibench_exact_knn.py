"""Issue 16, offline: the exact HuggingFace API chosen within the gold domain (an oracle), by
MiniLM similarity of the question to each API's documentation (``doc_text``, what the
``embed`` rerank reads) or to its nearest synthetic instruction (kNN), or the documentation's
similarity plus 0.1 x BM25 (scaled to the domain's best) over the API's identity (model id
words, its reported performance, its description), on the two HF test-style dev sets.

    toolken synth --tools tools/apibench.py --only 'hf.*' --per-tool 8 \
        --needs data/apibench_needs.yaml --out outputs/hf_synth.jsonl
    python benchmarks/apibench_exact_knn.py [--synth outputs/hf_synth.jsonl]

Prints the number of questions whose exact API each choice finds (RESULTS.md).
"""
import argparse
import collections
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--synth", default="outputs/hf_synth.jsonl")
args = ap.parse_args()
from toolken.tools import load_pack  # noqa: E402
from toolken.generation.demos import minilm_embed  # noqa: E402
from toolken.generation.rerank import doc_text, identity_text  # noqa: E402
from toolken.core.text import bm25_scores  # noqa: E402
reg = load_pack(str(REPO / "tools/apibench.py"))
hf = [t for t in reg if t.name.startswith("hf.")]
def ident(t):
    rec = t.meta.get("record", {})
    return rec.get("api_call", "")
qs = []
for f in ["apibench_huggingface.tsv", "apibench_huggingface_b.tsv"]:
    for line in open(REPO / "data/dev" / f):
        if line.startswith("#") or not line.strip(): continue
        i, q = line.rstrip("\n").split("\t", 1)
        gold = [t for t in hf if f"'{i}'" in ident(t) or f'"{i}"' in ident(t)]
        qs.append((f, i, q, gold))
print(len(qs), sum(1 for q in qs if q[3]), "with a gold tool")
docs = minilm_embed([doc_text(t) for t in hf])
syn = collections.defaultdict(list)
for l in open(args.synth):
    r = json.loads(l)
    instr = r["text"].split("\n###Output")[0].replace("###Instruction: ", "")
    syn[r["calls"][0]["tool"]].append(instr)
names = [t.name for t in hf]


flat = [(n, s) for n in names for s in syn.get(n, [])]
E = minilm_embed([s for _, s in flat])
owner = torch.tensor([names.index(n) for n, _ in flat])
Q = minilm_embed([q for _, _, q, _ in qs])
res = collections.Counter()
for k, (f, i, q, gold) in enumerate(qs):
    if not gold: continue
    dom = gold[0].meta.get("domain")
    cand = [j for j, t in enumerate(hf) if t.meta.get("domain") == dom]
    gold_idx = {names.index(g.name) for g in gold}
    doc_s = docs[cand] @ Q[k]
    sims = E @ Q[k]
    knn_max = torch.full((len(hf),), -1.0).scatter_reduce(0, owner, sims, "amax")
    knn_s = knn_max[cand]
    b = torch.tensor(bm25_scores(q, [identity_text(hf[j]) for j in cand]))
    id_s = doc_s + 0.1 * b / (b.max() + 1e-9)
    for name, s in [("doc", doc_s), ("knn", knn_s), ("doc+knn", doc_s + knn_s), ("doc+0.1 id-bm25", id_s)]:
        res[(f, name)] += int(cand[int(s.argmax())] in gold_idx)
    res[(f, "n")] += 1
for key in sorted(res): print(key, res[key])
