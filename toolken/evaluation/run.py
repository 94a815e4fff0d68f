"""``toolken eval``: one benchmark x one method on the frozen base model, scored with the
papers' metrics and written as the JSON contract of ``metrics.write_report``."""

from __future__ import annotations

import fnmatch
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.prompts import api_prompt
from ..core.text import bm25_index
from .loaders import BENCHMARKS, EXPECTED, load_benchmark, load_warnings
from ..generation.decode import generate_batch
from ..generation.demos import has_demos
from .methods import _record, run_icl, run_paths, run_toolken, template_path
from .metrics import aggregate, final_number, first_tool, score, write_report

METHODS = {"funcqa-oh": ("toolken", "icl", "cot"), "funcqa-mh": ("toolken", "icl", "cot"),
           "gsm8k-xl": ("toolken", "icl", "cot"), "kamel": ("toolken", "icl"),
           **{f"apibench-{p}": ("toolken", "zero-shot", "retrieval")
              for p in ("torchhub", "huggingface", "tensorflowhub")}}
STOPS = {"kamel": ["\nQuestion:", "\n"], "apibench": ["\n###", "\n\n"]}
SELF_CONSISTENT = ("funcqa-oh", "funcqa-mh", "gsm8k-xl")
FORCED_CALL_BIAS = 1e4  # APIBench toolken: added to every toolken logit, so one wins at once


@dataclass
class EvalConfig:
    bench: str
    data: str
    method: str = "toolken"
    toolkens: str | None = None
    tools: str | None = None
    base_model: str | None = None
    limit: int | None = None
    out: str | None = None
    template: str | None = None
    shared: str = "../shared/benchmarks"
    api_docs: str | None = None  # <provider>_api.jsonl for APIBench scoring / retrieval
    generation: dict = field(default_factory=dict)  # GenerationConfig fields over the
    # checkpoint's generation_config.json (baselines: over the defaults)
    dtype: str | None = None  # the base model's dtype (None: auto, fp32 on CPU, bf16 on CUDA)
    device: str | None = None  # None: auto (CUDA when present)


def check(cfg: EvalConfig) -> None:
    if cfg.bench not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {cfg.bench!r}; choose one of: {', '.join(BENCHMARKS)}")
    if cfg.method not in METHODS[cfg.bench]:
        raise ValueError(f"method {cfg.method!r} does not apply to {cfg.bench}; "
                         f"choose one of: {', '.join(METHODS[cfg.bench])}")
    if cfg.method == "toolken" and not cfg.toolkens:
        raise ValueError("method toolken needs --toolkens CHECKPOINT_DIR")
    if cfg.limit is not None and (not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise ValueError(f"--limit {cfg.limit}: give a positive number of examples (omit it for all)")
    paths = cfg.generation.get("paths", 1)
    if isinstance(paths, bool) or not isinstance(paths, int) or paths < 1:
        raise ValueError(f"--paths {paths!r}: give a positive number of reasoning paths")
    if paths > 1 and not _self_consistent(cfg):
        raise ValueError(f"--paths {paths}: self-consistency votes on a final number: it applies "
                         f"to {', '.join(SELF_CONSISTENT)} with method toolken or cot, not "
                         f"{cfg.bench} / {cfg.method}")
    t = cfg.generation.get("path_temperature", 0.7)
    if isinstance(t, bool) or not (isinstance(t, (int, float)) and 0 < t < float("inf")):
        raise ValueError(f"--path-temperature {t!r}: give a positive number")


def _self_consistent(cfg: EvalConfig) -> bool:
    return cfg.bench in SELF_CONSISTENT and cfg.method in ("toolken", "cot")


def no_examples(cfg: EvalConfig, skipped: list) -> str:
    """Why a benchmark file gave no example: its problems by reason, with the first places."""
    from ..core.data import _grouped

    shown = "\n".join(_grouped(skipped)[:5])
    first = f"\n  first: {skipped[0].detail}" if skipped else ""
    return (f"{cfg.data}: no usable {cfg.bench} examples ({len(skipped)} records skipped):\n"
            f"{shown}{first}\n  a {cfg.bench} record is {EXPECTED[cfg.bench]}")


def load_model(cfg: EvalConfig):
    """The checkpoint's model (toolken) or the bare base model with the pack (baselines)."""
    from ..core.base import DEFAULT_BASE_MODEL, load_base
    from ..core.checkpoint import pack_argument
    from ..model import ToolkenModel
    from ..tools.registry import ToolRegistry, load_pack

    if cfg.toolkens:
        model = ToolkenModel.from_pretrained(cfg.toolkens, base=cfg.base_model, dtype=cfg.dtype,
                                             device=cfg.device)
        pack = pack_argument(cfg.tools, cfg.toolkens)
        if cfg.method == "toolken":
            if not pack:
                raise ValueError(model.missing_pack(cfg.toolkens))
            return model.attach_tools(pack)
        base = model.base
    else:
        base = load_base(cfg.base_model or DEFAULT_BASE_MODEL, dtype=cfg.dtype, device=cfg.device)
        pack = cfg.tools
    if cfg.method == "icl" and not pack:
        raise ValueError("method icl runs the tools the model writes: give --tools PACK.py")
    model = ToolkenModel(base, [])
    model.registry = load_pack(pack) if pack else ToolRegistry([])
    return model


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    check(cfg)
    t0 = time.perf_counter()
    examples, skipped = load_benchmark(cfg.bench, cfg.data)
    if cfg.limit:
        examples = examples[: cfg.limit]
    if not examples:
        raise ValueError(no_examples(cfg, skipped))
    notes = load_warnings(examples)
    if notes:
        print(f"toolken eval: {len(notes)} record(s) scored without tool metadata; first: {notes[0]}")
    model = load_model(cfg)
    family = "apibench" if cfg.bench.startswith("apibench") else cfg.bench
    apis = None
    if family == "apibench":
        from .api_match import ApiIndex

        provider = cfg.bench.removeprefix("apibench-")
        docs = cfg.api_docs or str(Path(cfg.shared) / "apibench" / "api" / f"{provider}_api.jsonl")
        apis = ApiIndex.from_file(docs, provider)
    gen = model.generation_config.replace(**cfg.generation)
    scope = catalogue_filter(cfg, model)
    notes += _demo_notes(cfg, family, gen)
    if gen.paths > 1 and not _self_consistent(cfg):  # the checkpoint's stored default
        note = (f"paths={gen.paths} skipped: self-consistency votes on a final number "
                f"({', '.join(SELF_CONSISTENT)}, method toolken or cot), not {cfg.bench} / {cfg.method}")
        print(f"toolken eval: {note}")
        notes.append(note)
        gen = gen.replace(paths=1)
    elif gen.paths > 1 and "paths" not in cfg.generation:
        print(f"toolken eval: {gen.paths} reasoning paths per question, the checkpoint's stored "
              f"paths (self-consistency; --paths 1: greedy only)")
    preds = _predict(cfg, family, model, examples, apis, gen.replace(**scope), progress)
    records = _scored(cfg, family, examples, preds, apis)
    report = {"benchmark": cfg.bench, "method": cfg.method, "n": len(records),
              "metrics": aggregate(cfg.bench, records), "base_model": model.base.name,
              "toolkens": _fingerprint(cfg.toolkens) if cfg.method == "toolken" else None,
              "config": {**asdict(cfg), "notes": notes}, "predictions": records,
              "skipped": skipped}
    if scope:  # the same questions with every catalogue's toolkens, reported beside
        everywhere = _scored(cfg, family, examples,
                             _predict(cfg, family, model, examples, apis, gen.replace(tool_filter=()), progress), apis)
        report["metrics"]["all_catalogues"] = {
            **aggregate(cfg.bench, everywhere),
            "other_catalogue": round(sum(_elsewhere(r, scope) for r in everywhere) / len(everywhere), 4)}
        for r, e in zip(records, everywhere):
            r["all_catalogues_prediction"] = e["prediction"]
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)
    report["tool_filter"] = list(scope.get("tool_filter", gen.tool_filter))
    report["paths"] = gen.paths
    if cfg.out:
        write_report(cfg.out, report)
    return report


def _demo_notes(cfg: EvalConfig, family: str, gen) -> list[str]:
    """A note (printed, kept in the report's ``config.notes``) when ``prompt_demos`` -- the
    checkpoint's stored default or --prompt-demos -- does not apply to the template (no
    ``Q: ...`` or ``Question: ...`` demo block): generation skips it."""
    if cfg.method != "toolken" or family == "apibench" or not gen.prompt_demos:
        return []
    template = Path(cfg.template or template_path(Path(cfg.shared), cfg.bench, cfg.method))
    if has_demos(template.read_text()):
        return []
    note = (f"prompt_demos={gen.prompt_demos} skipped: the template {template.name} has no "
            f"'Q: ...' or 'Question: ...' demo block to replace (its own prompt is used)")
    print(f"toolken eval: {note}")
    return [note]


def catalogue_filter(cfg: EvalConfig, model) -> dict:
    """``{"tool_filter": ("hf.*",)}`` for ``toolken`` on ``apibench-huggingface`` (the
    benchmark's own catalogue: Gorilla's user knows which hub they ask about) unless the run
    names its own ``tool_filter`` (``--tool-filter '*'``: every catalogue); ``{}`` otherwise."""
    if cfg.method != "toolken" or not cfg.bench.startswith("apibench") or "tool_filter" in cfg.generation:
        return {}
    from ..tools.catalog import PROVIDERS

    pattern = f"{PROVIDERS[cfg.bench.removeprefix('apibench-')]}.*"
    if not any(fnmatch.fnmatchcase(t, pattern) for t in model.tools):
        raise ValueError(f"{cfg.bench}: the checkpoint {cfg.toolkens} has no {pattern} toolken "
                         f"(e.g. {model.tools[:3]}); give --tool-filter PATTERN ('*' for all)")
    return {"tool_filter": (pattern,)}


def _elsewhere(record: dict, scope: dict) -> bool:
    """Whether the record's first call chose a toolken outside ``scope``'s filter."""
    calls = record["calls"]
    return bool(calls) and not any(fnmatch.fnmatchcase(calls[0]["tool"], p) for p in scope["tool_filter"])


def _scored(cfg, family, examples, preds, apis) -> list[dict]:
    records = []
    for ex, p in zip(examples, preds):
        if family == "apibench":
            s = score(cfg.bench, p["prediction"], ex.gold, apis=apis)
        else:
            s = score(cfg.bench, p["text"], ex.gold, calls=p["calls"])
        records.append({"id": ex.id, "prediction": p["prediction"], "gold": ex.gold,
                        **s, "calls": p["calls"], "text": p["text"],
                        **{k: p[k] for k in ("reranks", "paths") if k in p}})
    return records


def _predict(cfg, family, model, examples, apis, gen, progress: bool = True) -> list[dict]:
    if family == "apibench":
        return _apibench(cfg, model, examples, apis, gen, progress)
    template = Path(cfg.template or template_path(Path(cfg.shared), cfg.bench, cfg.method)).read_text()
    if family == "kamel":
        read = lambda text, calls: first_tool(calls, text)  # noqa: E731
        gen = gen.replace(stop=STOPS["kamel"], max_new_tokens=min(gen.max_new_tokens, 32),
                          max_tool_calls=1)
    else:
        read = lambda text, calls: final_number(text)  # noqa: E731
        gen = gen.replace(stop=["\nQ:", "\nQuestion:", "\n\n"])
    if cfg.method == "icl":
        return run_icl(model, examples, template, read, gen)
    gen = gen.replace(max_tool_calls=0) if cfg.method == "cot" else gen
    if gen.paths > 1:
        return run_paths(model, examples, template, read, gen, gen.paths, gen.path_temperature)
    return run_toolken(model, examples, template, read, gen)


def _apibench(cfg, model, examples, apis, gen, progress: bool = True) -> list[dict]:
    """toolken: the first toolken chosen stands for its documented api_call (it cannot name
    an API that does not exist; generation ends at that choice, ``call_tools=False``: no tool
    mode); zero-shot / retrieval: the model writes the api_call."""
    if cfg.method == "toolken":
        prompts = [api_prompt(ex.question) for ex in examples]
        # an APIBench instruction always asks for an API: unless --toolken-bias is given, the
        # best toolken (inside the catalogue filter) is the answer at the call's position
        bias = gen.toolken_bias if "toolken_bias" in cfg.generation else FORCED_CALL_BIAS
        gens = generate_batch(model, prompts, gen.replace(max_new_tokens=8, max_tool_calls=1,
                                                          call_tools=False, toolken_bias=bias),
                              questions=[ex.question for ex in examples], progress=progress)
        return [_record(ex, g.text, g.calls,
                        model.registry[g.calls[0].tool].meta.get("api_call", "") if g.calls else "",
                        g.reranks) for ex, g in zip(examples, gens)]
    docs = [f"{r.get('api_name', '')} {r.get('functionality', '')} {r.get('description', '')} "
            f"{r.get('api_call', '')}" for r in apis.records]
    search = bm25_index(docs) if cfg.method == "retrieval" else None
    prompts = []
    for ex in examples:
        head = ""
        if search:
            r = apis.records[search(ex.question, 1)[0]]
            head = (f"Use this API documentation for reference: api_call: {r.get('api_call')}; "
                    f"{r.get('description', '')}\n")
        prompts.append(head + api_prompt(ex.question))
    gens = generate_batch(model, prompts, gen.replace(max_new_tokens=min(gen.max_new_tokens, 64),
                                                      max_tool_calls=0, stop=STOPS["apibench"]),
                          progress=progress)
    return [{"id": ex.id, "prediction": g.text.strip(), "text": g.text, "calls": []}
            for ex, g in zip(examples, gens)]


def _fingerprint(directory: str | None) -> str | None:
    if not directory:
        return None
    from ..training.features import file_digest

    return file_digest(Path(directory) / "toolken_model.safetensors")[:16]


def summary(report: dict) -> str:
    m = ", ".join(f"{k}={v}" for k, v in report["metrics"].items() if not isinstance(v, dict))
    for k, v in report["metrics"].items():
        if isinstance(v, dict):  # all_catalogues: the same questions with every catalogue
            m += f"; {k}: " + ", ".join(f"{a}={b}" for a, b in v.items())
    scope = f" [tool_filter {' '.join(report['tool_filter'])}]" if report.get("tool_filter") else ""
    scope += f" [paths {report['paths']}]" if report.get("paths", 1) > 1 else ""
    return (f"{report['benchmark']} / {report['method']}{scope}: n={report['n']} "
            f"(skipped {len(report['skipped'])}): {m} in {report['wall_seconds']} s")
