"""Text retrieval without a model: BM25 (Robertson and Zaragoza, 2009) over lower-cased word
tokens, with an inverted index. Used to pick demos per question (generation, training in the
prompt's layout) and documentation per instruction (evaluation)."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _bm25_postings(docs: list[str]):
    """(idf, postings) of BM25 (k1=1.5, b=0.75) over ``docs``: postings[word] = [(doc, tf part)]."""
    toks = [words(d) for d in docs]
    avg = sum(map(len, toks)) / max(1, len(toks))
    n = len(docs)
    df = Counter(w for t in toks for w in set(t))
    idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
    postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for i, t in enumerate(toks):
        if not t:
            continue
        norm = 1.5 * (0.25 + 0.75 * len(t) / avg)
        for w, c in Counter(t).items():
            postings[w].append((i, c * 2.5 / (c + norm)))
    return idf, postings


def _bm25_scores(query: str, idf, postings) -> dict[int, float]:
    scores: dict[int, float] = defaultdict(float)
    for w in words(query):  # a repeated query word counts each time
        for i, v in postings.get(w, ()):
            scores[i] += idf[w] * v
    return scores


def bm25_scores(query: str, docs: list[str]) -> list[float]:
    """The BM25 score of ``query`` against each of ``docs`` (statistics over ``docs`` alone)."""
    scores = _bm25_scores(query, *_bm25_postings(docs))
    return [scores.get(i, 0.0) for i in range(len(docs))]


def bm25_index(docs: list[str]):
    """A small BM25 (k1=1.5, b=0.75) over whitespace/punctuation tokens; returns a search fn
    ``search(query, k)``: the k best document indices, ties and unmatched documents in index
    order. An inverted index: a query costs the postings of its words, not a pass over all."""
    idf, postings = _bm25_postings(docs)
    n = len(docs)

    def search(query: str, k: int = 1) -> list[int]:
        scores = _bm25_scores(query, idf, postings)
        ranked = sorted(scores, key=lambda i: (-scores[i], i))
        if k > len(ranked):
            ranked += [i for i in range(n) if i not in scores]
        return ranked[:k]

    return search
