"""The methods ``toolken eval`` compares, all on the same frozen base model.

Each method takes the model (a ``ToolkenModel`` with a tool registry attached; for the
prompting baselines it may have no toolken rows), the examples and the options, and returns
one prediction dict per example: ``{"id", "prediction", "text", "calls"}``.

- ``toolken``: this project's generation (reasoning mode with toolkens, tool mode, results).
- ``cot``: the same prompt, toolkens masked: reasoning without tools.
- ``icl``: the paper's in-context baseline: the prompt lists every tool's syntax with demos;
  the model writes ``<op>(args)=`` itself; the call is parsed (never evaluated), run with the
  same tool runtime, and its result inserted before decoding goes on.
- ``zero-shot`` / ``retrieval`` (APIBench): the model is asked for the ``api_call``; with
  retrieval, the most similar API document (BM25) is put in the prompt first (Gorilla's setting).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..core.prompts import fill
from ..generation.config import GenerationConfig
from ..generation.decode import CallTrace, generate, generate_batch

OPEN_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_.\-]*)>\(([^()<>]*)$")  # "<add>(3, 4" before ")="


def _record(ex, text: str, calls: list, prediction, reranks: list | None = None) -> dict:
    out = {"id": ex.id, "prediction": prediction, "text": text,
           "calls": [c.__dict__ if isinstance(c, CallTrace) else c for c in calls]}
    if reranks:
        out["reranks"] = [r.__dict__ for r in reranks]
    return out


def run_toolken(model, examples, template: str, read, config: GenerationConfig) -> list[dict]:
    """toolken (and cot, with ``max_tool_calls=0``): batched generation of the template for
    every question (``prompt_demos`` retrieves its demos per question); ``read(text, calls)``
    gives the prediction (a final number, the first tool chosen, ...)."""
    gens = generate_batch(model, [template] * len(examples), config,
                          questions=[ex.question for ex in examples], progress=True)
    return [_record(ex, g.text, g.calls, read(g.text, g.calls), g.reranks) for ex, g in zip(examples, gens)]


def vote(answers: list) -> int:
    """Index of the path whose answer wins the majority vote (self-consistency, Wang et al.
    2023): answers equal to 6 significant digits count together; None never wins unless
    every path has it; a tie goes to the earliest path among the tied answers (path 0, the
    greedy one, first)."""
    keys = [None if a is None else float(f"{float(a):.6g}") for a in answers]
    counts: dict = {}
    for k in keys:
        if k is not None:
            counts[k] = counts.get(k, 0) + 1
    if not counts:
        return 0
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)


def run_paths(model, examples, template: str, read, config: GenerationConfig, paths: int,
              temperature: float = 0.7) -> list[dict]:
    """Self-consistency: the greedy generation and ``paths - 1`` sampled ones (``temperature``,
    top_p 0.95, seeds ``config.seed`` + 1, + 2, ... or 1, 2, ...) of every question; the answer
    that most paths reach wins (``vote``). The record is the winning path's (text, calls), with
    every path's answer and text under ``paths``."""
    greedy = config.replace(do_sample=False)
    runs = [run_toolken(model, examples, template, read, greedy)]
    for k in range(1, paths):
        sampled = config.replace(do_sample=True, temperature=temperature, top_p=0.95,
                                 seed=(config.seed or 0) + k)
        runs.append(run_toolken(model, examples, template, read, sampled))
    out = []
    for i in range(len(examples)):
        options = [r[i] for r in runs]
        win = options[vote([o["prediction"] for o in options])]
        out.append({**win, "paths": [{"prediction": o["prediction"], "text": o["text"]}
                                     for o in options]})
    return out


def run_icl(model, examples, template: str, read, config: GenerationConfig,
            max_calls: int = 4) -> list[dict]:
    """The in-context baseline: the model writes ``<op>(args)=``; we run the call and insert it."""
    from tqdm.auto import tqdm

    registry = model.registry
    out = []
    for ex in tqdm(examples, desc="icl", unit="question"):
        prompt = fill(template, ex.question)
        text, calls, budget = "", [], config.max_new_tokens
        while budget > 0:
            g = generate(model, prompt + text, config, question=ex.question, max_new_tokens=budget,
                         stop=[*config.stop, ")="], max_tool_calls=0)
            budget -= max(1, g.decoded_tokens)
            text += g.text
            m = OPEN_RE.search(text) if g.stop_reason == "stop" else None
            if m is None or len(calls) >= max_calls:
                break
            trace = CallTrace(tool=m.group(1), argument_text=m.group(2))
            calls.append(trace)
            text += ")="
            if trace.tool not in registry:
                trace.error = f"unknown tool {trace.tool!r}"
                continue
            res = registry[trace.tool].call(m.group(2), timeout=config.tool_timeout,
                                            max_chars=config.max_result_chars)
            if not res.ok:
                trace.error = res.error
                continue
            trace.result = res.text
            trace.start, trace.end = len(text), len(text) + len(res.text)
            text += res.text
        out.append(_record(ex, text, calls, read(text, calls)))
    return out


def template_path(shared: Path, bench: str, method: str) -> Path:
    """The paper's prompt for (benchmark, method)."""
    tk = shared / "toolkengpt"
    name = {"icl": "llama_func.txt", "cot": "llama_general.txt", "toolken": "llama_general.txt"}
    if bench == "funcqa-oh":
        return tk / "funcqa" / "template_oh" / name[method]
    if bench == "funcqa-mh":
        return tk / "funcqa" / "template_mh" / name[method]
    if bench == "gsm8k-xl":
        return tk / "gsm8k-xl" / "template" / name[method]
    if bench == "kamel":
        return tk / "kamel" / "template" / ("kamel_first_30.txt" if method == "icl" else "kamel_general.txt")
    raise ValueError(f"no paper prompt for {bench} / {method}")
