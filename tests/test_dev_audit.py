"""benchmarks/dev_audit.py: Jaccard and BM25 against a plain reference on random texts, and
the exit code that flags a near-duplicate dev question."""

import importlib.util
import json
import math
import random
from collections import Counter

from toolken.core.data import Record, save_jsonl
from conftest import REPO

spec = importlib.util.spec_from_file_location("dev_audit", REPO / "benchmarks" / "dev_audit.py")
dev_audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dev_audit)

WORDS = [f"w{i}" for i in range(40)] + ["apples", "crates", "Sum", "7", "12.5"]


def ref_jaccard(a: str, b: str) -> float:
    sa, sb = set(dev_audit.tokens(a)), set(dev_audit.tokens(b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def ref_bm25(query: str, docs: list[str], k1=1.5, b=0.75) -> list[float]:
    toks = [dev_audit.tokens(d) for d in docs]
    avg, n = sum(map(len, toks)) / len(toks), len(toks)
    out = []
    for t in toks:
        tf, s = Counter(t), 0.0
        for w in dev_audit.tokens(query):
            df = sum(w in set(u) for u in toks)
            if tf[w]:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(t) / avg))
        out.append(s)
    return out


def test_index_matches_plain_reference_on_random_texts():
    rng = random.Random()
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(60)]
    index = dev_audit.Index(docs)
    for _ in range(30):
        q = " ".join(rng.choices(WORDS + ["unseen"], k=rng.randint(1, 10)))
        jac, j, bm, k = index.best(q)
        jacs, bms = [ref_jaccard(q, d) for d in docs], ref_bm25(q, docs)
        assert math.isclose(jac, max(jacs)) and math.isclose(jacs[j], jac)
        assert math.isclose(bm, max(bms), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(bms[k], bm, rel_tol=1e-9, abs_tol=1e-12)


def test_question_part_drops_the_answer():
    assert dev_audit.question_part("Q: What is 2+3?\nA: 2+3=5") == "What is 2+3?"
    assert dev_audit.question_part("Question: Who?\nAnswer: me") == "Who?"
    assert dev_audit.question_part("plain text") == "plain text"


def test_exit_code_flags_a_near_duplicate(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    save_jsonl([Record("Q: A farm packs 120 apples into crates of 12. How many crates?\nA: 10", []),
                Record("Q: What is the sum of 4 and 9?\nA: 13", [])], train)
    dev = tmp_path / "dev.json"
    far = {"question": "Seven trains leave every hour; how long until they meet?", "answer": 1,
           "func": "<lcm>(1, 1)=1"}
    dev.write_text(json.dumps([far]))
    res = tmp_path / "R.md"
    args = ["--dev", f"funcqa-oh={dev}", "--train", str(train), "--format", "canonical"]
    assert dev_audit.main(args + ["--results", str(res)]) == 0
    assert "0 of 1 dev questions at Jaccard >= 0.6" in res.read_text()
    near = {**far, "question": "A farm packs 150 apples into crates of 12. How many crates?"}
    dev.write_text(json.dumps([far, near]))
    assert dev_audit.main(args) == 1
    assert "1 of 2 dev questions at Jaccard >= 0.6" in capsys.readouterr().out
