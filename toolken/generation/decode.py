"""Generation with tools: reasoning mode, tool mode, and back (ToolkenGPT sec. 3.3).

Reasoning mode is a manual decode loop over the frozen model with a KV cache; the next token
is chosen among ``[vocab ; toolkens + bias]``. When a toolken wins, tool mode writes that
tool's arguments: the tool's own prompt (its description and demos, the question, the answer
so far and ``<name>(``) is prefilled on a per-tool cache that holds the tool's fixed prefix,
decoding is constrained to the argument schema, and the per-tool cache is rolled back to its
prefix afterwards. The tool runs with a timeout; only its result tokens are appended to the
reasoning cache, which is never re-encoded. If anything in tool mode fails, the trace records
the error and reasoning continues with the best non-toolken token (the paper's fallback).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

from ..core.data import result_join
from .constrain import context_numbers, make_constraint, parse_arguments


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


@dataclass
class Generation:
    text: str
    calls: list[CallTrace] = field(default_factory=list)
    prefilled_tokens: int = 0  # prompt + tool-mode prompts + inserted results
    decoded_tokens: int = 0  # tokens chosen by the model (reasoning + arguments)
    drafted_tokens: int = 0  # prompt_lookup: draft tokens verified ...
    accepted_drafts: int = 0  # ... and how many of them the model chose
    seconds: float = 0.0
    stop_reason: str = ""
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


class GenerationError(ValueError):
    pass


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.base.model.config)


def _step(model, ids: list[int], cache) -> torch.Tensor:
    """Feed ids onto the cache; return the last position's (V + K) logits."""
    return _step_all(model, ids, cache, 1)[0]


def _step_all(model, ids: list[int], cache, n: int) -> torch.Tensor:
    """Feed ids onto the cache; return the (n, V + K) logits of the last n positions."""
    x = torch.tensor([ids], device=model.base.device)
    out = model.decode(x, cache)
    return model.logits_from_hidden(out.last_hidden_state[0, -n:])


def lookup_draft(ids: list[int], k: int, max_ngram: int = 3, min_ngram: int = 2) -> list[int]:
    """Prompt-lookup drafting: the k tokens that followed the latest earlier occurrence of the
    context's last n-gram (longest n first), or [] when the context has no such repeat."""
    for n in range(max_ngram, min_ngram - 1, -1):
        if len(ids) <= n:
            continue
        tail = ids[-n:]
        for start in range(len(ids) - n - 1, -1, -1):
            if ids[start:start + n] == tail:
                return ids[start + n:start + n + k]
    return []


def _pick(z: torch.Tensor, do_sample: bool, temperature: float, top_p: float, gen) -> int:
    if not do_sample:
        return int(z.argmax())
    p = torch.softmax(z / max(temperature, 1e-6), dim=-1)
    if top_p < 1.0:
        sp, si = p.sort(descending=True)
        keep = sp.cumsum(0) - sp < top_p
        p = torch.zeros_like(p).scatter(0, si[keep], sp[keep])
    return int(torch.multinomial(p / p.sum(), 1, generator=gen))


def stop_at(before: str, text: str, stop: list[str] | None) -> int | None:
    """Where the first stop string that the newest text completed begins, or None."""
    hits = [text.index(s, max(0, len(before) - len(s))) for s in stop or ()
            if s in text[max(0, len(before) - len(s)):]]
    return min(hits) if hits else None


def _held(text: str, stop: list[str] | None) -> int:
    """Length of the longest end of text that is a proper beginning of a stop string."""
    return max((n for s in stop or () for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])),
               default=0)


@dataclass(frozen=True)
class ToolModeOptions:
    """How tool mode writes arguments (the levers of issue 6); the defaults are the paper's
    tool mode: the tool's fixed demos, one greedy argument set, any number."""

    arg_demos: int = 0  # k demos of the chosen tool retrieved from the training data; 0 = fixed
    arg_retriever: str = "bm25"  # bm25 | hidden (the base model's mean-pooled hidden states) | minilm
    arg_candidates: int = 1  # n argument sets (greedy + n-1 sampled); the majority result wins
    arg_temperature: float = 0.7  # sampling temperature of the extra candidates
    arg_numbers: str = "any"  # any | context: numbers copied or derived from the question/answer

    def __post_init__(self):
        from .demos import RETRIEVERS

        if not isinstance(self.arg_demos, int) or self.arg_demos < 0:
            raise ValueError(f"arg_demos must be an int >= 0, got {self.arg_demos!r}")
        if not isinstance(self.arg_candidates, int) or self.arg_candidates < 1:
            raise ValueError(f"arg_candidates must be an int >= 1, got {self.arg_candidates!r}")
        if not self.arg_temperature > 0:
            raise ValueError(f"arg_temperature must be > 0, got {self.arg_temperature!r}")
        if self.arg_numbers not in ("any", "context"):
            raise ValueError(f"arg_numbers={self.arg_numbers!r} is not one of ['any', 'context']")
        if self.arg_retriever not in RETRIEVERS:
            raise ValueError(f"arg_retriever={self.arg_retriever!r} is not one of {list(RETRIEVERS)}")

    @classmethod
    def of(cls, value) -> "ToolModeOptions":
        """From options, a dict of them (unknown keys are an error) or None (the defaults)."""
        if isinstance(value, cls):
            return value
        names = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(value or {}) - set(names))
        if unknown:
            raise ValueError(f"unknown tool-mode option(s) {unknown}; valid: {names}")
        return cls(**(value or {}))


class ToolMode:
    """Per-tool prefix caches and constrained argument decoding."""

    def __init__(self, model, registry, backend: str = "xgrammar", max_arg_tokens: int = 48,
                 reuse_prefix: bool = True, options: ToolModeOptions | dict | None = None):
        self.model, self.registry, self.backend = model, registry, backend
        self.max_arg_tokens = max_arg_tokens
        self.reuse_prefix = reuse_prefix  # False: encode the whole tool prompt at every call
        self.options = ToolModeOptions.of(options)
        self.prefix: dict[tuple, tuple[object, int]] = {}  # (tool, prompt head) -> (cache, length)

    def split_prompt(self, tool, question: str | None = None) -> tuple[str, str]:
        """(prefix, text after the question) of the tool's tool-mode prompt; with arg_demos,
        the prefix shows the training examples of the tool most similar to ``question``."""
        k = self.options.arg_demos
        demos = []
        if k and question is not None:
            from .demos import checkpoint_pool

            demos = checkpoint_pool(self.model, self.registry,
                                    self.options.arg_retriever).tool_demos(tool.name, question, k)
        if tool.prompt and "[QUESTION]" in tool.prompt:
            head, tail = tool.prompt.split("[QUESTION]", 1)
            if demos:  # the prompt's header (a block that is not a demo) is kept
                first = head.split("\n\n", 1)[0]
                header = "" if first.lstrip().startswith("Q:") else first + "\n\n"
                head = header + "\n\n".join(demos) + "\n\nQ: "
            return head, tail
        shown = "\n\n".join(demos or tool.demos)
        return f"{tool.description}\n\n{shown}\n\nQ: ".lstrip(), "\nA:"

    def _prefix_cache(self, tool, question: str | None = None):
        head, _ = self.split_prompt(tool, question)
        key = (tool.name, head)
        if key not in self.prefix or not self.reuse_prefix:
            if len(self.prefix) >= 64:  # retrieved demos: one head per question; keep it bounded
                del self.prefix[next(iter(self.prefix))]
            ids = self.model.tokenizer(head, add_special_tokens=True)["input_ids"]
            cache = _new_cache(self.model)
            with torch.no_grad():
                _step(self.model, ids, cache)
            self.prefix[key] = (cache, len(ids))
        return self.prefix[key]

    @torch.no_grad()
    def candidates(self, tool, question: str, answer_so_far: str, sample, stats) -> list[tuple[str, float]]:
        """arg_candidates argument texts with their log-likelihoods under the constraint: the
        first chosen by ``sample``, the others sampled at arg_temperature (seeded, so the
        same question gives the same candidates)."""
        cache, n_prefix = self._prefix_cache(tool, question)
        _, tail = self.split_prompt(tool)
        answer = answer_so_far if answer_so_far.startswith((" ", "\n")) else " " + answer_so_far
        text = f"{question}{tail}{answer}<{tool.name}>("
        ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
        V = self.model.vocab_size
        numbers = context_numbers(question + answer) if self.options.arg_numbers == "context" else None
        out = []
        try:
            z0 = _step(self.model, ids, cache)
            stats["prefilled"] += len(ids)
            n_context = cache.get_seq_length()
            for i in range(self.options.arg_candidates):
                gen = torch.Generator().manual_seed(i)
                pick = sample if i == 0 else (lambda z: _pick(z, True, self.options.arg_temperature, 1.0, gen))
                constraint = make_constraint(tool.parameters, self.model.tokenizer, vocab_size=V,
                                             backend=self.backend, numbers=numbers)
                cache.crop(n_context - cache.get_seq_length())  # back to the question
                out.append(self._decode(constraint, z0, cache, pick, stats))
        finally:
            cache.crop(n_prefix - cache.get_seq_length())  # roll back to the tool's prefix
        return out

    def _decode(self, constraint, z, cache, pick, stats) -> tuple[str, float]:
        V, written, logp = self.model.vocab_size, [], 0.0
        while not constraint.is_done():
            if len(written) >= self.max_arg_tokens:
                raise GenerationError(f"arguments longer than {self.max_arg_tokens} tokens")
            z = constraint.apply(z[:V].clone())
            tok = pick(z)
            logp += float(torch.log_softmax(z, -1)[tok])
            constraint.advance(tok)
            written.append(tok)
            stats["decoded"] += 1
            if not constraint.is_done():
                z = _step(self.model, [tok], cache)
        return self.model.tokenizer.decode(written), logp

    def call(self, tool, question: str, answer_so_far: str, sample, stats, trace,
             timeout: float, max_chars: int):
        """Write the arguments and run the tool; with several candidates, each runs and the
        result most of them give wins (ties: the likelier candidate). Returns the ToolResult."""
        cands = self.candidates(tool, question, answer_so_far, sample, stats)
        runs = []  # (text, args or None, ToolResult or error, logp)
        for text, logp in cands:
            try:
                args = parse_arguments(text, tool.parameters)
            except ValueError as e:
                runs.append((text, None, f"arguments: {e}", logp))
                continue
            runs.append((text, args, tool.call(args, timeout=timeout, max_chars=max_chars), logp))
        ok = [r for r in runs if r[1] is not None and r[2].ok]
        if len(cands) > 1:
            trace.candidates = [{"argument_text": t, "logprob": round(lp, 4),
                                 "result": res.text if a is not None and res.ok else None}
                                for t, a, res, lp in runs]
        if ok:
            votes = {}
            for r in ok:
                votes[r[2].text] = votes.get(r[2].text, 0) + 1
            best = max(ok, key=lambda r: (votes[r[2].text], r[3]))
        else:
            best = runs[0]
        trace.argument_text, trace.arguments = best[0], best[1]
        if best[1] is None:
            raise GenerationError(best[2])
        return best[2]


def stream(model, prompt, *, registry=None, question: str | None = None, max_new_tokens: int = 128,
           do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
           toolken_bias: float | None = None, max_tool_calls: int = 8, tool_timeout: float = 5.0,
           stop: list[str] | None = None, max_result_chars: int = 200, backend: str = "xgrammar",
           seed: int | None = None, tool_mode: ToolMode | None = None,
           reencode: bool = False, ignore_eos: bool = False, reuse_prompt: bool = True,
           prompt_lookup: int = 0, rerank_top_k: int = 0, rerank_none_bias: float = 0.0,
           rerank_method: str = "pmi", tool_options: ToolModeOptions | dict | None = None,
           close_results: bool | None = None) -> Iterator[Event | Generation]:
    """Yield events as they happen; the last item is the finished ``Generation``.

    ``prompt_lookup=k`` (greedy only): speculative decoding with drafts looked up in the
    context (the k tokens that followed the latest earlier occurrence of its last 2-3 tokens),
    verified in one forward pass against ``[vocab ; toolkens + bias]``; a draft token is kept
    only where it is the argmax, so the text is that of plain greedy decoding.

    ``reuse_prompt``: start from the model's stored cache of the longest prompt prefix seen
    before (``model.prefix_store``), so a shared few-shot template is encoded once.
    ``reencode=True`` is the paper's strategy, kept for comparison: no prefix is reused, after
    every tool call the whole context is encoded again, and every tool prompt in full.
    ``rerank_top_k=k`` (0: off): when a toolken wins, the base model chooses among the top k
    tools' descriptions or "none" (``toolken.generation.rerank``: ``rerank_method`` "pmi" or "choice";
    ``rerank_none_bias`` favours "none").
    """
    t0 = time.perf_counter()
    registry = registry if registry is not None else model.registry
    if registry is None:
        raise GenerationError("no tools attached: pass registry= or model.attach_tools(pack)")
    tok = model.tokenizer
    prompt_text, question = _prompt_text(tok, prompt, question)
    prompt_ids = tok(prompt_text, add_special_tokens=True)["input_ids"]
    limit = getattr(model.base.model.config, "max_position_embeddings", None)
    if limit and len(prompt_ids) + max_new_tokens > limit:
        raise GenerationError(f"prompt of {len(prompt_ids)} tokens + max_new_tokens={max_new_tokens} "
                              f"exceeds the model's context of {limit} tokens")
    V = model.vocab_size
    bias = model.toolken_bias if toolken_bias is None else toolken_bias
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    digits = digit_tokens(model, close_results)

    def sample(z):
        return _pick(z, do_sample, temperature, top_p, gen)

    eos = {i for i in [tok.eos_token_id, *(_list(model.base.model.generation_config.eos_token_id))]
           if i is not None}
    if tool_mode is None:
        tool_mode = (ToolMode(model, registry, backend, reuse_prefix=False, options=tool_options)
                     if reencode else model.tool_mode(registry, backend, tool_options))
    reranker = make_reranker(model, registry, rerank_top_k, rerank_none_bias, rerank_method)
    reranks: list = []
    store = model.prefix_store if reuse_prompt and not reencode else None
    cache, reused = store.start(model, prompt_ids) if store else (_new_cache(model), 0)
    stats = {"prefilled": len(prompt_ids) - reused, "decoded": 0, "drafted": 0, "accepted": 0}
    out_ids: list[int] = []
    text = ""
    calls: list[CallTrace] = []
    stop_reason = "max_new_tokens"
    z = None
    lookahead = prompt_lookup if not do_sample and not reencode else 0
    drafts: list[tuple[int, torch.Tensor]] = []  # fed ahead on the cache, not yet accepted
    emitted = 0  # characters of text streamed so far
    with torch.no_grad():
        z = _step(model, prompt_ids[reused:], cache)
        if store:
            store.remember(model, prompt_ids, cache)
        for _ in range(max_new_tokens):
            zz = z.clone()
            zz[V:] += bias
            if len(calls) >= max_tool_calls:
                zz[V:] = float("-inf")
            if digits is not None and calls and calls[-1].end == len(text):
                zz[digits] = float("-inf")  # a result is a whole number
            choice = sample(zz)
            if choice >= V and reranker is not None:
                choice = reranker.choose(zz, question, text, sample, reranks, stats)
            new_ids = [choice]
            accepted = None
            if drafts and choice == drafts[0][0]:
                accepted = drafts.pop(0)[1]  # the logits after this token are already there
                stats["accepted"] += 1
            elif drafts:  # a draft token lost: forget it and those after it
                cache.crop(-len(drafts))
                drafts = []
            if choice >= V:  # a toolken: tool mode
                trace = CallTrace(tool=registry[choice - V].name)
                yield Event("tool_call", call=trace)
                result = _call_tool(tool_mode, registry[choice - V], question, text, sample, stats,
                                    trace, tool_timeout, max_result_chars)
                calls.append(trace)
                if result is None:  # the paper's fallback: best non-toolken token
                    new_ids = [sample(zz[:V])]
                    stats["decoded"] += 1
                else:
                    inserted = result_join(text, result)
                    new_ids = tok(inserted, add_special_tokens=False)["input_ids"]
                    stats["prefilled"] += len(new_ids)
            else:
                stats["decoded"] += 1
            out_ids += new_ids
            new_text = tok.decode(out_ids, skip_special_tokens=True)
            hit = stop_at(text, new_text, stop)
            if hit is not None:  # a stop string: cut it, and never stream it
                new_text, stop_reason = new_text[:hit], "stop"
            if choice >= V and trace.result is not None and hit is None:
                trace.start, trace.end = len(new_text) - len(trace.result), len(new_text)
                yield Event("tool_result", text=new_text[emitted:], call=trace)
                emitted = len(new_text)
            else:  # hold back what may be the start of a stop string
                safe = len(new_text) - (0 if hit is not None else _held(new_text, stop))
                if safe > emitted:
                    yield Event("text", text=new_text[emitted:safe])
                    emitted = safe
            text = new_text
            if hit is not None:
                break
            if new_ids[-1] in eos and not ignore_eos:
                stop_reason = "eos"
                break
            if reencode and choice >= V:  # the paper: encode everything again after a call
                cache = _new_cache(model)
                z = _step(model, prompt_ids + out_ids, cache)
                stats["prefilled"] += len(prompt_ids) + len(out_ids) - len(new_ids)
            elif accepted is not None:
                z = accepted
            else:
                room = (limit or float("inf")) - len(prompt_ids) - len(out_ids) - 1
                draft = lookup_draft(prompt_ids + out_ids, int(min(lookahead, room))) if lookahead else []
                zs = _step_all(model, new_ids + draft, cache, 1 + len(draft))
                z, drafts = zs[0], list(zip(draft, zs[1:]))
                stats["drafted"] += len(draft)
            if len(prompt_ids) + len(out_ids) >= (limit or float("inf")):
                stop_reason = "context"
                break
    if len(text) > emitted:
        yield Event("text", text=text[emitted:])
    yield Generation(text=text, calls=calls, prefilled_tokens=stats["prefilled"],
                     decoded_tokens=stats["decoded"], drafted_tokens=stats["drafted"],
                     accepted_drafts=stats["accepted"], seconds=time.perf_counter() - t0,
                     stop_reason=stop_reason, token_ids=prompt_ids + out_ids,
                     next_logits=z if stop_reason in ("max_new_tokens", "context") else None,
                     reranks=reranks)


def make_reranker(model, registry, top_k: int, none_bias: float = 0.0, method: str = "pmi"):
    """The ``Reranker`` for ``rerank_top_k`` (None when it is 0)."""
    if not isinstance(top_k, int) or top_k < 0:
        raise GenerationError(f"rerank_top_k must be an integer >= 0 (0: off), got {top_k!r}")
    if not top_k:
        return None
    from .rerank import Reranker

    return Reranker(model, registry, top_k, none_bias, method)


def generate(model, prompt, **kw) -> Generation:
    """Run ``stream`` to the end and return the ``Generation`` (text and trace)."""
    for item in stream(model, prompt, **kw):
        if isinstance(item, Generation):
            return item
    raise AssertionError("stream ended without a Generation")


def digit_tokens(model, close_results: bool | None) -> torch.Tensor | None:
    """The ids of the vocabulary tokens that start with a digit, if results are closed."""
    if close_results is None:
        close_results = bool(model.generation_defaults().get("close_results", False))
    if not close_results:
        return None
    if "_digit_tokens" not in model.__dict__:
        pieces = model.tokenizer.convert_ids_to_tokens(list(range(min(len(model.tokenizer), model.vocab_size))))
        model._digit_tokens = torch.tensor([i for i, p in enumerate(pieces) if p and p[0].isdigit()],
                                           dtype=torch.long)
    return model._digit_tokens


def _call_tool(tool_mode, tool, question, text, sample, stats, trace, timeout, max_chars) -> str | None:
    t = time.perf_counter()
    try:
        res = tool_mode.call(tool, question, text, sample, stats, trace, timeout, max_chars)
    except Exception as e:  # noqa: BLE001 — a tool never crashes a generation
        trace.error = str(e) if str(e).startswith("arguments: ") else f"arguments: {e}"
        return None
    finally:
        trace.seconds_arguments = time.perf_counter() - t
    trace.seconds_tool = res.seconds
    trace.seconds_arguments -= res.seconds
    if not res.ok:
        trace.error = res.error
        return None
    trace.result = res.text
    return res.text


def _prompt_text(tok, prompt, question: str | None) -> tuple[str, str]:
    if isinstance(prompt, list):  # chat messages
        if not prompt:
            raise GenerationError("empty message list")
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return text, question or (users[-1] if users else "")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError("the prompt is empty")
    return prompt, question or prompt


def _list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]
