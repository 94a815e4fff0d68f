"""The serving engine: one worker thread owns the model and runs the queued requests, batching
the ones that can share a decode loop (``model.generate_batch``) and streaming the others
(``model.stream``).

Client-side tools (the request's ``tools``): the tool's function is replaced by one that
returns a sentinel, and the sentinel is a stop string; so when the toolken wins, tool mode
writes the arguments as usual, the "result" stops the row at once, and the call goes back to
the client. The reasoning cache of a request run alone holds exactly the conversation up to
the call; it is kept in ``model.prefix_store`` under its token ids, so the next request (the
same conversation plus the tool's result) starts from it and encodes only the result. (A
request decoded in a batch keeps only the prompt prefix its batch shared.)
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field

from ..core.data import result_join
from ..generation.decode import Generation, GenerationError
from ..generation.prefix import PrefixStore
from ..tools import ToolRegistry
from .protocol import APIError, ChatRequest

SENTINEL = "@@toolken-call@@"  # the "result" of a client-side tool: a stop string


def _client_side(*args, **kwargs) -> str:
    return SENTINEL


class KeepingStore(PrefixStore):
    """The model's prefix store, also holding on to the live cache ``start`` hands out, so
    the engine can keep a conversation's cache where a client-side call stopped it."""

    live = None

    def start(self, model, ids, limit=None):
        cache, n = super().start(model, ids, limit)
        self.live = cache
        return cache, n


@dataclass
class Job:
    req: ChatRequest
    prompt: str
    question: str
    out: queue.Queue = field(default_factory=queue.Queue)  # ("delta", str) | ("done", dict) | ("error", APIError)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0


class Engine:
    """Runs jobs on one worker thread; ``submit`` is safe from any thread."""

    def __init__(self, model, max_batch: int = 16, batch_wait: float = 0.01):
        self.model = model
        self.server_side = model.registry is not None  # a pack is attached: its tools run here
        self.base_registry = model.registry or ToolRegistry.from_manifest(model.manifest or [
            {"name": n} for n in model.tools])
        self.tools = {t.name: t for t in self.base_registry}
        self.max_batch, self.batch_wait = max_batch, batch_wait
        self._registries: dict[frozenset, ToolRegistry] = {}
        self.cancelled = 0  # requests stopped because their client went away
        store = model.prefix_store
        model.prefix_store = KeepingStore(store.max_tokens, store.min_reuse)
        self.limit = getattr(model.base.model.config, "max_position_embeddings", None) or 10**9
        self._queue: queue.Queue = queue.Queue()
        self._later: deque = deque()
        self._thread = threading.Thread(target=self._loop, name="toolken-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    # ------------------------------------------------------------------ the worker
    def _loop(self) -> None:
        while True:
            job = self._later.popleft() if self._later else self._queue.get()
            if job is None:
                return
            group = [job] if job.req.stream or not self._batchable(job) else self._gather(job)
            try:
                self._run(group)
            except Exception as e:  # noqa: BLE001 - a bad request never stops the server
                traceback.print_exc()
                for j in group:
                    j.out.put(("error", APIError(500, f"generation failed: {type(e).__name__}: {e}",
                                                 kind="server_error")))

    def _batchable(self, job: Job) -> bool:
        return not (job.req.temperature > 0 and job.req.seed is not None)  # batch rows reseed

    def _gather(self, first: Job) -> list[Job]:
        """``first`` and the queued jobs with the same options: more are awaited while they
        keep coming ``batch_wait`` apart, for at most 5 x ``batch_wait`` in all."""
        group, key = [first], self._key(first)
        start = time.perf_counter()
        deadline = start + self.batch_wait
        while len(group) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
            except queue.Empty:
                break
            deadline = min(time.perf_counter() + self.batch_wait, start + 5 * self.batch_wait)
            if job is not None and not job.req.stream and self._batchable(job) and self._key(job) == key:
                group.append(job)
            else:
                self._later.append(job)
                if job is None:
                    break
        return group

    def _key(self, job: Job):
        return frozenset(job.req.client_tools), self.config(job.req)

    def _run(self, jobs: list[Job]) -> None:
        tok = self.model.tokenizer
        ready = []
        for j in jobs:
            j.prompt_tokens = len(tok(j.prompt, add_special_tokens=True)["input_ids"])
            if j.prompt_tokens + j.req.max_tokens > self.limit:
                j.out.put(("error", APIError(400, f"the prompt has {j.prompt_tokens} tokens; with "
                                                  f"max_tokens={j.req.max_tokens} it exceeds the "
                                                  f"model's context of {self.limit}", "messages",
                                             "context_length_exceeded")))
            elif not j.cancelled.is_set():
                ready.append(j)
        if not ready:
            return
        self.model.registry = self.registry(ready[0].req.client_tools)
        cfg = self.config(ready[0].req)
        try:
            if len(ready) == 1:
                self._run_one(ready[0], cfg)
            else:
                gens = self.model.generate_batch([j.prompt for j in ready], cfg.replace(batch_size=len(ready)),
                                                 questions=[j.question for j in ready])
                self.model.prefix_store.live = None  # a batch's cache is not kept
                for j, g in zip(ready, gens):
                    j.out.put(("done", self.result(j, g, None)))
        except GenerationError as e:
            for j in ready:
                j.out.put(("error", APIError(400, str(e))))

    def _run_one(self, job: Job, cfg) -> None:
        """Stream one request; keep its cache where a client-side call stopped it."""
        store = self.model.prefix_store
        store.live = None
        events = self.model.stream(job.prompt, cfg, question=job.question)
        client_call, streamed = False, []
        for item in events:
            if job.cancelled.is_set():
                events.close()
                self.cancelled += 1
                return
            if isinstance(item, Generation):
                if client_call and item.stop_reason == "stop" and store.live is not None:
                    n = store.live.get_seq_length()  # the cache holds the tokens before the call
                    if n <= len(item.token_ids):
                        store.remember(self.model, item.token_ids[:n], store.live)
                store.live = None
                job.out.put(("done", self.result(job, item, "".join(streamed) if job.req.stream else None)))
                return
            if item.kind == "tool_call" and item.call.tool in job.req.client_tools:
                client_call = True
            elif item.text and not client_call:
                streamed.append(item.text)
                if job.req.stream:
                    job.out.put(("delta", item.text))

    # ------------------------------------------------------------------ options and results
    def registry(self, client_tools) -> ToolRegistry:
        """The pack (or manifest) with the client's tools answering the sentinel; one per set
        of client tools, kept (the model keeps tool-mode caches per registry)."""
        key = frozenset(client_tools)
        if key not in self._registries:
            if len(self._registries) >= 32:
                self._registries.pop(next(iter(self._registries)))
            self._registries[key] = ToolRegistry(
                dataclasses.replace(t, fn=_client_side, render=None, isolation="thread") if t.name in key else t
                for t in self.base_registry)
        return self._registries[key]

    def config(self, req: ChatRequest):
        """The request's GenerationConfig: the checkpoint's, with the request's options."""
        allowed = set(req.client_tools) | (set(self.tools) if self.server_side else set())
        if req.tool_choice == "none":
            allowed = set()
        stop = req.stop + ((SENTINEL,) if req.client_tools else ())
        gen = self.model.generation_config
        return gen.replace(
            tool_choice=req.tool_choice if req.tool_choice in ("auto", "required") else gen.tool_choice,
            max_new_tokens=req.max_tokens, do_sample=req.temperature > 0,
            temperature=req.temperature or 1.0, top_p=req.top_p, seed=req.seed, stop=stop,
            tool_filter=tuple(sorted(allowed)) if allowed and allowed != set(self.tools) else (),
            max_tool_calls=gen.max_tool_calls if allowed else 0)

    def result(self, job: Job, g: Generation, streamed: str | None) -> dict:
        """What the HTTP layer answers: content, finish reason, the client's call, usage, trace."""
        last = g.calls[-1] if g.calls else None
        client = last is not None and last.result == SENTINEL and g.stop_reason == "stop"
        content = g.text if streamed is None else streamed
        if client and streamed is None and content.endswith(" ") \
                and result_join(content[:-1], "x") == " x":
            content = content[:-1]  # the space toolken put before the result
        call = None
        if client:
            tool = self.tools[last.tool]
            call = {"id": "call_" + uuid.uuid4().hex[:24], "name": last.tool,
                    "arguments": named_arguments(tool, last.arguments or [])}
        server_calls = [dataclasses.asdict(c) for c in (g.calls[:-1] if client else g.calls)]
        return {"content": content, "call": call, "stop_reason": g.stop_reason,
                "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": g.decoded_tokens,
                          "total_tokens": job.prompt_tokens + g.decoded_tokens},
                "toolken": {"calls": server_calls, "stop_reason": g.stop_reason,
                            "seconds": round(g.seconds, 4)}}


def named_arguments(tool, values: list) -> dict:
    """Positional values (as tool mode parses them) -> {argument: value}; a variadic last
    argument collects the rest as a list."""
    names = tool.param_names
    props = tool.parameters.get("properties", {})
    variadic = names and props.get(names[-1], {}).get("x-variadic")
    fixed = names[:-1] if variadic else names
    out = dict(zip(fixed, values))
    if variadic:
        out[names[-1]] = list(values[len(fixed):])
    return out
