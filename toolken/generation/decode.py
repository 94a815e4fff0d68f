"""Generation with tools: reasoning mode, tool mode, and back (ToolkenGPT sec. 3.3).

One decode core serves single, batched and streamed generation: ``stream`` and ``generate``
run it on a batch of one, ``generate_batch`` on many prompts at once. Reasoning mode is a manual
decode loop over the frozen model with one KV cache for the whole batch; at every step each
row's next token is chosen among ``[vocab ; toolkens + bias]``. When a toolken wins, tool mode
(``tool_mode.ToolMode``) writes that tool's arguments under its schema on a per-tool cache, the
tool runs, and only the result's tokens are fed to the reasoning cache, which is never
re-encoded. If tool mode fails, the trace records the error and reasoning continues with the
best non-toolken token (the paper's fallback).
With ``inline_calls``, a call the answer has just written in one of
its tool's forms (``toolken.tools.forms``: ``1260 * 12 =``) runs as written, without tool mode.

Each step feeds a block of tokens per row (the chosen token, a tool's whole result, or the
token plus prompt-lookup drafts); rows that feed fewer tokens are padded and the padding is
masked, with explicit position ids, so a row sees exactly the tokens it would see alone.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

from ..core.data import result_join
from ..tools.forms import read_written_call
from .config import GenerationConfig
from .steps import GenerationError, held, lookup_draft, new_cache, pick, stop_at
from .tool_mode import run_arguments

__all__ = ["CallTrace", "Event", "Generation", "GenerationError", "generate", "generate_batch",
           "resolve_config", "stream"]


@dataclass
class CallTrace:
    tool: str
    arguments: list | None = None  # parsed, typed arguments
    argument_text: str = ""  # what the model wrote in tool mode
    result: str | None = None  # the text inserted into the answer
    error: str | None = None
    start: int | None = None  # character offsets of the result in Generation.text
    end: int | None = None
    seconds_arguments: float = 0.0
    seconds_tool: float = 0.0
    candidates: list | None = None  # arg_candidates > 1: [{"argument_text", "result", "logprob"}]
    output: str = ""  # what the tool printed (stdout and stderr), captured by its worker
    written: str | None = None  # inline_calls: the call as the answer wrote it (no tool mode)


@dataclass
class Generation:
    text: str
    calls: list[CallTrace] = field(default_factory=list)
    prefilled_tokens: int = 0  # prompt + tool-mode prompts + inserted results
    decoded_tokens: int = 0  # tokens chosen by the model (reasoning + arguments)
    drafted_tokens: int = 0  # prompt_lookup: draft tokens verified ...
    accepted_drafts: int = 0  # ... and how many of them the model chose
    seconds: float = 0.0
    stop_reason: str = ""  # eos | stop | max_new_tokens | context | toolken (call_tools=False)
    token_ids: list[int] = field(default_factory=list)  # prompt + answer, as the cache holds them
    next_logits: torch.Tensor | None = field(default=None, repr=False)  # (V + K) after the last token
    reranks: list = field(default_factory=list)  # rerank decisions (toolken.generation.rerank.RerankTrace)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("next_logits")
        return d


@dataclass
class Event:
    """A streaming event: kind is "text", "tool_call" (tool chosen) or "tool_result"."""

    kind: str
    text: str = ""
    call: CallTrace | None = None


# ---------------------------------------------------------------------------- public API
def resolve_config(model, config: GenerationConfig | None = None, overrides: dict | None = None
                   ) -> GenerationConfig:
    """The options of one call: ``config`` (default: the checkpoint's ``generation_config``)
    with ``overrides`` (field names) replacing their fields."""
    base = config if config is not None else model.generation_config
    if not isinstance(base, GenerationConfig):
        raise TypeError(f"config must be a GenerationConfig, got {type(base).__name__}")
    return base.replace(**overrides) if overrides else base


def stream(model, prompt, config: GenerationConfig | None = None, *, question: str | None = None,
           **overrides) -> Iterator[Event | Generation]:
    """Yield events as they happen; the last item is the finished ``Generation``.

    ``prompt``: text, a template with ``[QUESTION]`` (filled with ``question``; with
    ``prompt_demos`` its demos are retrieved per question), or chat messages. ``question``:
    what tool mode shows the tool (default: the prompt, or the last user message)."""
    cfg = resolve_config(model, config, overrides)
    run = _run(model, [prompt], [question], cfg, seeds=[cfg.seed])
    while True:
        try:
            _, event = next(run)
        except StopIteration as done:
            yield done.value[0]
            return
        yield event


def generate(model, prompt, config: GenerationConfig | None = None, *, question: str | None = None,
             **overrides) -> Generation:
    """Run ``stream`` to the end and return the ``Generation`` (text and trace)."""
    item = None
    for item in stream(model, prompt, config, question=question, **overrides):
        pass
    return item


def generate_batch(model, prompts: list, config: GenerationConfig | None = None, *,
                   questions: list | None = None, progress: bool = False,
                   **overrides) -> list[Generation]:
    """Generate for every prompt, ``batch_size`` rows at a time, in lockstep on one cache;
    each row's text is the one ``generate`` gives for it alone (prompt i samples with seed
    ``seed + i``)."""
    from tqdm.auto import tqdm

    cfg = resolve_config(model, config, overrides)
    questions = list(questions) if questions is not None else [None] * len(prompts)
    if len(questions) != len(prompts):
        raise GenerationError(f"{len(prompts)} prompts but {len(questions)} questions")
    out: list[Generation] = []
    n = cfg.batch_size
    with tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress) as bar:
        for s in range(0, len(prompts), n):
            seeds = [None if cfg.seed is None else cfg.seed + i for i in range(s, s + n)]
            run = _run(model, prompts[s:s + n], questions[s:s + n], cfg, seeds)
            while True:
                try:
                    next(run)
                except StopIteration as done:
                    out += done.value
                    break
            bar.update(len(prompts[s:s + n]))
    return out


# ---------------------------------------------------------------------------- the core
@dataclass
class _Row:
    """One prompt's state in the decode loop."""

    ids: list[int]  # the prompt's tokens
    question: str
    gen: torch.Generator | None
    out: list[int] = field(default_factory=list)
    text: str = ""
    calls: list = field(default_factory=list)
    reranks: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: {"prefilled": 0, "decoded": 0, "drafted": 0,
                                                 "accepted": 0})
    z: torch.Tensor | None = None  # (V + K) logits after what the cache holds for this row
    pos: int = 0  # position id of the next token
    steps: int = 0
    emitted: int = 0  # characters of text streamed so far
    drafts: list = field(default_factory=list)  # (token, logits) fed ahead, not yet accepted
    written_at: int = -1  # inline_calls: where the last written call read ended in the text
    prompt_tail: str = ""  # inline_calls: the prompt's last characters (a call it ends with counts)
    best_gap: float = float("-inf")  # tool_choice required: the best toolken's logit - the best
    best_at: int = -1  # token's, at its highest before any call, and the step it was at
    force: bool = False  # tool_choice required: this step chooses the best toolken
    numbers: tuple = ()  # unused_number_rewinds: the question's numbers, each as its values
    marks: list = field(default_factory=list)  # len(out) after each step
    rewinds: int = 0  # unused_number_rewinds taken
    back_to: int = -1  # the token this row goes back to (unused_number_rewinds)
    barred: tuple = ()  # tokens that may not follow out[:barred_at]
    barred_at: int = -1
    reason: str = "max_new_tokens"
    done: bool = False


@dataclass
class _Context:
    """What every row's step shares: the model, the options and the per-call helpers."""

    model: object
    cfg: GenerationConfig
    registry: object
    tool_mode: object
    reranker: object
    allowed: torch.Tensor | None  # (K,) bool: toolkens that may win (tool_filter)
    digits: torch.Tensor | None  # vocabulary ids starting with a digit (close_results)
    forms: list  # inline_calls: the written forms of the tools that may win
    eos: set
    limit: float  # the model's context length


def _run(model, prompts: list, questions: list, cfg: GenerationConfig, seeds: list):
    """The decode loop over a batch; yields ``(row, Event)``, returns the Generations."""
    t0 = time.perf_counter()
    ctx = _context(model, cfg)
    rows = [_new_row(model, p, q, cfg, ctx, s) for p, q, s in zip(prompts, questions, seeds)]
    yield from _decode(ctx, rows, list(range(len(rows))))
    if cfg.tool_choice == "required":  # no call: again from where a toolken came closest
        rows = yield from _again(ctx, rows, _rewound, lambda c, r: not r.calls and r.best_at >= 0,
                                 once=True)
    rows = yield from _again(ctx, rows, _taken_back, _goes_back)  # unused_number_rewinds
    wall = time.perf_counter() - t0
    gens = []
    for b, r in enumerate(rows):
        if r.emitted < len(r.text):
            yield b, Event("text", text=r.text[r.emitted:])
        s = r.stats
        gens.append(Generation(
            text=r.text, calls=r.calls, prefilled_tokens=s["prefilled"], decoded_tokens=s["decoded"],
            drafted_tokens=s["drafted"], accepted_drafts=s["accepted"], seconds=wall,
            stop_reason=r.reason, token_ids=r.ids + r.out, reranks=r.reranks,
            next_logits=r.z if r.reason in ("max_new_tokens", "context") else None))
    return gens


def _decode(ctx: _Context, rows: list[_Row], index: list[int]):
    """Prefill the rows, then step them in lockstep until each is done; events carry
    ``index[b]``, the row's place in the caller's batch."""
    model, cfg = ctx.model, ctx.cfg
    cache, mask = _prefill(model, rows, cfg)
    lookahead = cfg.prompt_lookup if not cfg.do_sample and len(rows) == 1 else 0
    with torch.no_grad():
        while any(not r.done for r in rows):
            feeds = {}
            for b, r in enumerate(rows):
                if not r.done:
                    feeds[b] = yield from _advance(ctx, r, index[b], cache, lookahead)
            if any(feeds.values()):
                mask = _feed(model, rows, feeds, cache, mask)
            for b, r in enumerate(rows):
                if not r.done and r.steps >= cfg.max_new_tokens:
                    r.done = True
                elif not r.done and len(r.ids) + len(r.out) >= ctx.limit:
                    r.reason, r.done = "context", True


def _again(ctx: _Context, rows: list[_Row], restart, which, once: bool = False):
    """Decode again the rows ``which`` picks, each as ``restart`` makes it, until none is
    picked (or ``once``); returns the batch's rows."""
    while again := {b: restart(ctx.model, r) for b, r in enumerate(rows) if which(ctx, r)}:
        yield from _decode(ctx, list(again.values()), list(again))
        rows = [again.get(b, r) for b, r in enumerate(rows)]
        if once:
            break
    return rows


def _rewound(model, r: _Row) -> _Row:
    """A row that ended without a call, back at the step where a toolken came closest to
    winning (``tool_choice`` required); that step will choose the best toolken. The work of
    the first pass stays counted."""
    out = r.out[:r.best_at]
    return _Row(ids=r.ids, question=r.question, gen=r.gen, out=out, stats=dict(r.stats),
                marks=[m for m in r.marks if m <= r.best_at],
                text=model.tokenizer.decode(out, skip_special_tokens=True), steps=r.best_at,
                prompt_tail=r.prompt_tail, force=True, numbers=r.numbers, rewinds=r.rewinds)


def _taken_back(model, r: _Row) -> _Row:
    """A row whose answer gave its final answer with a number of the question unused
    (``unused_number_rewinds``), back at the start of that sentence, whose first token is now
    barred there (with those barred before, when it comes back to the same token)."""
    k = r.back_to
    barred = (*r.barred, r.out[k]) if r.barred_at == k else (r.out[k],)
    best = r.best_at < k
    return dataclasses.replace(
        r, out=r.out[:k], text=model.tokenizer.decode(r.out[:k], skip_special_tokens=True),
        marks=[m for m in r.marks if m <= k], steps=sum(m <= k for m in r.marks), z=None, pos=0,
        drafts=[], reason="max_new_tokens", done=False, rewinds=r.rewinds + 1, back_to=-1,
        barred=barred, barred_at=k, best_gap=r.best_gap if best else float("-inf"),
        best_at=r.best_at if best else -1)


# a number in digits (its % sign kept apart), not the 10 of base-10 nor the 3 of 3rd
_NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)-?\d[\d,]*(?:\.\d+)?(%?)(?!\d|\.\d|(?:st|nd|rd|th)\b)")
_SENTENCE_END = re.compile(r"[.!?:](?=\s)|\n")


def question_numbers(question: str) -> tuple[tuple[float, ...], ...]:
    """The numbers written in digits in ``question``, each as the values that count as using
    it in an answer (``6%``: 6 and 0.06; ``1,234``: 1234); not ``3rd`` or ``base-10``."""
    values = [(_value(m), m.group(1)) for m in _NUMBER.finditer(question)]
    return tuple((v, v / 100) if pct else (v,) for v, pct in values)


def _value(m: re.Match) -> float:
    return float(m.group().rstrip("%").replace(",", ""))


def unused_numbers(numbers, answer: str) -> list[tuple[float, ...]]:
    """The numbers (as ``question_numbers`` gives them) none of whose values the answer writes
    (either sign: ``-14`` is used in ``9-14``)."""
    written = [abs(_value(m)) for m in _NUMBER.finditer(answer)]
    return [n for n in numbers if not any(abs(abs(v) - w) <= 1e-9 * max(1.0, abs(v))
                                          for v in n for w in written)]


def _may_go_back(cfg: GenerationConfig, r: _Row) -> bool:
    """unused_number_rewinds: the row has question numbers and rewinds left (its text after
    the last call's result is held back from the stream meanwhile)."""
    return bool(r.numbers) and r.rewinds < cfg.unused_number_rewinds


def _goes_back(ctx: _Context, r: _Row) -> bool:
    """unused_number_rewinds: the finished answer wrote the answer marker, and a number of the
    question appears neither in its text nor in its calls' arguments: it will go back to the
    start of the marker's sentence (``r.back_to``), where that is after the text streamed."""
    if not _may_go_back(ctx.cfg, r) or r.reason not in ("eos", "stop", "max_new_tokens"):
        return False
    at = r.text.lower().rfind(ctx.cfg.answer_marker.lower())
    used = " ".join([r.text] + [c.argument_text or "" for c in r.calls])
    if at < r.emitted or not unused_numbers(r.numbers, used):
        return False
    start = max([m.end() for m in _SENTENCE_END.finditer(r.text, 0, at)] + [r.emitted])
    decode = ctx.model.tokenizer.decode
    r.back_to = max(k for k in range(len(r.out) + 1)
                    if len(decode(r.out[:k], skip_special_tokens=True)) <= start)
    return r.back_to < len(r.out)


def _context(model, cfg: GenerationConfig) -> _Context:
    registry = model.registry
    if registry is None:
        raise GenerationError("no tools attached: model.attach_tools(pack) first")
    if cfg.arg_demos and model.demo_records is None:
        raise GenerationError(f"arg_demos={cfg.arg_demos} needs the checkpoint's demo pool "
                              f"(toolken_demos.jsonl), and this model has none: arg_demos=0 uses "
                              f"the tools' own demos")
    allowed = None
    if cfg.tool_filter:
        allowed = torch.tensor([any(fnmatch.fnmatchcase(t, p) for p in cfg.tool_filter)
                                for t in model.tools], dtype=torch.bool)
        if model.tools and not allowed.any():
            raise GenerationError(f"tool_filter {list(cfg.tool_filter)} matches none of the "
                                  f"{len(model.tools)} tools (e.g. {model.tools[:3]})")
    reranker = None
    if cfg.rerank_top_k:
        from .rerank import EmbedWeights, Reranker

        reranker = Reranker(model, registry, cfg.rerank_top_k, cfg.rerank_none_bias, cfg.rerank_method,
                            cfg.rerank_temperature, EmbedWeights(cfg.rerank_lexical, cfg.rerank_requests))
    tok = model.tokenizer
    eos = {i for i in [tok.eos_token_id, *_list(model.base.model.generation_config.eos_token_id)]
           if i is not None}
    limit = getattr(model.base.model.config, "max_position_embeddings", None) or float("inf")
    forms = []
    if cfg.inline_calls != "off" and cfg.call_tools:
        forms = [f for i, t in enumerate(registry) if allowed is None or allowed[i]
                 for f in t.compiled_forms]
    return _Context(model, cfg, registry, model.tool_mode(registry, cfg), reranker, allowed,
                    model.digit_token_ids() if cfg.close_results else None, forms, eos, limit)


def _new_row(model, prompt, question, cfg: GenerationConfig, ctx: _Context, seed) -> _Row:
    text, question = _prompt_text(model, prompt, question, cfg)
    ids = model.tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) + cfg.max_new_tokens > ctx.limit:
        raise GenerationError(f"prompt of {len(ids)} tokens + max_new_tokens={cfg.max_new_tokens} "
                              f"exceeds the model's context of {ctx.limit} tokens")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    numbers = question_numbers(question) if cfg.unused_number_rewinds and question != text else ()
    return _Row(ids=ids, question=question, gen=gen, prompt_tail=text[-200:] if ctx.forms else "",
                numbers=numbers)


def _prefill(model, rows: list[_Row], cfg: GenerationConfig):
    """Encode the prompts and any answer a row has already (left-padded; a prefix all rows
    share comes from the model's prefix store when ``reuse_prompt``); set each row's logits.
    Returns (cache, attention mask)."""
    ids = [r.ids + r.out for r in rows]
    dev = model.base.device
    cache, P, computed = _shared_prefix(model, ids) if cfg.reuse_prompt else (new_cache(model), 0, 0)
    W = max(len(r) - P for r in ids)
    pad = model.tokenizer.pad_token_id or 0
    x = torch.tensor([[pad] * (W - len(r) + P) + r[P:] for r in ids], device=dev)
    mask = torch.tensor([[1] * P + [0] * (W - len(r) + P) + [1] * (len(r) - P) for r in ids], device=dev)
    if len(rows) == 1:
        out = model.decode(x, cache)
    else:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, P:]
        out = model.decode(x, cache, attention_mask=mask, position_ids=pos)
    z = model.logits_from_hidden(out.last_hidden_state[:, -1])  # (B, V + K)
    for b, r in enumerate(rows):
        r.z, r.pos = z[b], len(ids[b])
        r.stats["prefilled"] += len(ids[b]) - P + (computed if b == 0 else 0)
    return cache, mask


def _shared_prefix(model, ids: list[list[int]]):
    """(cache, P, computed): a cache holding the rows' common first P tokens for every row,
    taken from ``model.prefix_store`` where it has them; ``computed`` of them were encoded now."""
    P = min(len(r) for r in ids) - 1
    for r in ids[1:]:
        P = next((i for i in range(P) if r[i] != ids[0][i]), P)
    store = model.prefix_store
    if P < store.min_reuse:
        return new_cache(model), 0, 0
    cache, n = store.start(model, ids[0][:P + 1], limit=P)
    if n < P:
        model.decode(torch.tensor([ids[0][n:P]], device=model.base.device), cache)
        store.remember(model, ids[0][:P], cache)
    if len(ids) > 1:
        cache.batch_repeat_interleave(len(ids))
    return cache, P, P - n


def _feed(model, rows: list[_Row], feeds: dict, cache, mask):
    """Feed each row's block (right-padded, padding masked) and set its logits; drafts after a
    row's token get their logits kept for verification. Returns the grown attention mask."""
    B, L = len(rows), max(len(f) for f in feeds.values())
    dev = model.base.device
    if B == 1:  # nothing to pad: the plain forward
        h = model.decode(torch.tensor([feeds[0]], device=dev), cache).last_hidden_state
    else:
        pad = model.tokenizer.pad_token_id or 0
        x = torch.full((B, L), pad, dtype=torch.long)
        m = torch.zeros((B, L), dtype=mask.dtype)
        pos = torch.zeros((B, L), dtype=torch.long)
        for b, r in enumerate(rows):
            f = feeds.get(b) or []
            x[b, :len(f)] = torch.tensor(f, dtype=torch.long)
            m[b, :len(f)] = 1
            pos[b] = r.pos + torch.arange(L).clamp(max=max(len(f) - 1, 0))
        mask = torch.cat([mask, m.to(dev)], dim=1)
        h = model.decode(x.to(dev), cache, attention_mask=mask, position_ids=pos.to(dev)).last_hidden_state
    fed = [(b, f) for b, f in feeds.items() if f]
    spans = [(b, len(f) - 1 - len(rows[b].drafts), len(f)) for b, f in fed]
    zs = model.logits_from_hidden(torch.cat([h[b, lo:hi] for b, lo, hi in spans]))  # one LM-head pass
    at = 0
    for (b, f), (_, lo, hi) in zip(fed, spans):
        r, z = rows[b], zs[at:at + hi - lo]  # (1 + drafts, V + K)
        at += hi - lo
        r.z = z[0]
        r.drafts = [(tok, zd) for (tok, _), zd in zip(r.drafts, z[1:])]
        r.pos += len(f)
    return mask


def _advance(ctx: _Context, r: _Row, b: int, cache, lookahead: int):
    """Choose the row's next token (or call a tool), update its text; yields ``(b, Event)``;
    returns the tokens to feed (the token or the result's, then any drafts; [] when the
    logits after them are known already)."""
    model, cfg, V = ctx.model, ctx.cfg, ctx.model.vocab_size
    zz = r.z.clone()
    zz[V:] += cfg.toolken_bias
    if ctx.allowed is not None:
        zz[V:][~ctx.allowed] = float("-inf")
    if len(r.calls) >= cfg.max_tool_calls:
        zz[V:] = float("-inf")
    if r.barred and len(r.out) == r.barred_at:  # unused_number_rewinds: another first token
        zz[list(r.barred)] = float("-inf")
    if ctx.digits is not None and r.calls and (r.calls[-1].end == len(r.text) or (
            r.calls[-1].end == len(r.text) - 1 and r.text[-1] in ".,")):
        zz[ctx.digits] = float("-inf")  # a result is a whole number: not 45 -> 450, 45.5, 45,5

    def sample(z):
        return pick(z, cfg.do_sample, cfg.temperature, cfg.top_p, r.gen)

    required = cfg.tool_choice == "required" and not r.calls
    can_call = required and bool(torch.isfinite(zz[V:]).any())
    forced, r.force = r.force and can_call, False
    if can_call and not forced:
        gap = float(zz[V:].max() - zz[:V].max())  # how close a toolken came to winning
        if gap > r.best_gap:
            r.best_gap, r.best_at = gap, len(r.out)
    choice = V + sample(zz[V:]) if forced else sample(zz)
    if choice >= V and ctx.reranker is not None:
        choice = ctx.reranker.choose(zz, r.question, r.text, sample, r.reranks, r.stats)
    written = None
    if ctx.forms and (choice >= V or cfg.inline_calls == "always") \
            and len(r.calls) < cfg.max_tool_calls:
        written = read_written_call(r.prompt_tail + r.text, ctx.forms)
        end = len(r.text.rstrip().rstrip("="))
        if written is not None and end != r.written_at:  # a call written there is read once
            choice, r.written_at = V + ctx.registry.index(written.tool), end
        else:
            written = None
    new_ids, accepted, trace = [choice], False, None
    if choice >= V and required:  # the first call: release the held text
        yield from _stream_to(r, b, len(r.text) - held(r.text, cfg.stop))
    if r.drafts and choice == r.drafts[0][0]:
        r.z, accepted = r.drafts.pop(0)[1], True  # the logits after this token are known
        r.stats["accepted"] += 1
    elif r.drafts:  # a draft token lost: forget it and those after it (batch of one)
        cache.crop(-len(r.drafts))
        r.pos -= len(r.drafts)
        r.drafts = []
    if choice >= V and not cfg.call_tools:  # the choice is the answer: no arguments, no run
        trace = CallTrace(tool=ctx.registry[choice - V].name)
        yield b, Event("tool_call", call=trace)
        r.calls.append(trace)
        r.steps += 1
        r.reason, r.done = "toolken", True
        return []
    if choice >= V:  # a toolken: tool mode
        trace = CallTrace(tool=ctx.registry[choice - V].name)
        yield b, Event("tool_call", call=trace)
        result = _call_tool(ctx, ctx.registry[choice - V], r, sample, trace, written)
        r.calls.append(trace)
        if result is None:  # the paper's fallback: the best non-toolken token
            new_ids = [sample(zz[:V])]
            r.stats["decoded"] += 1
        else:
            new_ids = model.tokenizer(result_join(r.text, result), add_special_tokens=False)["input_ids"]
            r.stats["prefilled"] += len(new_ids)
    else:
        r.stats["decoded"] += 1
    r.out += new_ids
    r.steps += 1
    r.marks.append(len(r.out))
    yield from _update_text(ctx, r, b, trace)
    if r.done or accepted:
        return []
    room = ctx.limit - len(r.ids) - len(r.out) - 1
    draft = lookup_draft(r.ids + r.out, int(min(lookahead, room))) if lookahead else []
    r.drafts = [(t, None) for t in draft]
    r.stats["drafted"] += len(draft)
    return new_ids + draft


def _update_text(ctx: _Context, r: _Row, b: int, trace: CallTrace | None):
    """Decode the row's text; cut a stop string; stream what cannot begin one."""
    before = r.text
    new_text = ctx.model.tokenizer.decode(r.out, skip_special_tokens=True)
    hit = stop_at(before, new_text, ctx.cfg.stop)
    if hit is not None:  # a stop string: cut it, and never stream it
        new_text, r.reason, r.done = new_text[:hit], "stop", True
    r.text = new_text
    if ctx.cfg.tool_choice == "required" and not r.calls:
        pass  # held: this text may be decoded again (tool_choice required)
    elif trace is not None and trace.result is not None and hit is None:
        trace.start, trace.end = len(new_text) - len(trace.result), len(new_text)
        yield b, Event("tool_result", text=new_text[r.emitted:], call=trace)
        r.emitted = len(new_text)
    elif _may_go_back(ctx.cfg, r):
        pass  # held after the last call's result: the answer may go back to a sentence start
    else:  # hold back what may be the start of a stop string
        yield from _stream_to(r, b, len(new_text) - (0 if hit is not None else held(new_text, ctx.cfg.stop)))
    if not r.done and r.out[-1] in ctx.eos and not ctx.cfg.ignore_eos:
        r.reason, r.done = "eos", True


def _stream_to(r: _Row, b: int, end: int):
    """Stream the row's text up to character ``end``, from where streaming left off."""
    if end > r.emitted:
        yield b, Event("text", text=r.text[r.emitted:end])
        r.emitted = end


def _call_tool(ctx: _Context, tool, r: _Row, sample, trace: CallTrace, written=None) -> str | None:
    """Tool mode writes the arguments (or, for a ``written`` call, they are read from the
    text) and the tool runs; returns the result text, or None with ``trace.error`` set."""
    t = time.perf_counter()
    try:
        if written is not None:
            trace.written, trace.argument_text = written.expression, written.argument_text + ")"
            trace.arguments, res = run_arguments(tool, trace.argument_text, ctx.cfg)
        else:
            res = ctx.tool_mode.call(tool, r.question, r.text, sample, r.stats, trace, ctx.cfg)
    except Exception as e:  # noqa: BLE001 — a tool never crashes a generation
        trace.error = str(e) if str(e).startswith("arguments: ") else f"arguments: {e}"
        return None
    finally:
        trace.seconds_arguments = time.perf_counter() - t
    trace.seconds_tool = res.seconds
    trace.seconds_arguments -= res.seconds
    trace.output = res.output
    if not res.ok:
        trace.error = res.error
        return None
    trace.result = res.text
    return res.text


def _prompt_text(model, prompt, question: str | None, cfg: GenerationConfig) -> tuple[str, str]:
    """(the text to encode, the question tool mode shows)."""
    if isinstance(prompt, list):  # chat messages
        if not prompt:
            raise GenerationError("empty message list")
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = model.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return text, question or (users[-1] if users else "")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError("the prompt is empty")
    if "[QUESTION]" in prompt:  # a template
        if not question:
            raise GenerationError("the prompt is a template ([QUESTION]): pass question=...")
        from .demos import prompt_for

        return prompt_for(model, prompt, question, cfg.prompt_demos, cfg.arg_retriever), question
    return prompt, question or prompt


def _list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]
