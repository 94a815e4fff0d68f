"""The ``toolken`` command line: ``toolken train|... --help``."""

from __future__ import annotations

import argparse
import os
import sys

from .core.predictor import GUARD_POSITIONS, GUARD_SHARE
from .generation import config as G
from .training import config as C


def _train(args) -> int:
    from .training.trainer import train

    cfg = C.load_config(args.config, args.overrides + _placement_overrides(args))
    result = train(cfg)
    if result.best:
        shown = {k: round(v, 4) for k, v in result.best.items() if isinstance(v, float)}
        print(f"toolken: best epoch {result.best['epoch']}: {shown}")
    print(f"toolken: checkpoint in {result.output_dir}")
    return 0


def _calibrate(args) -> int:
    from .training.calibrate import calibrate

    calibrate(args.toolkens, C.parse_overrides(args.overrides + _placement_overrides(args)))
    return 0


def _load_for_generation(args):
    from .core.checkpoint import pack_argument
    from .model import ToolkenModel

    model = ToolkenModel.from_pretrained(args.toolkens, dtype=args.dtype, device=args.device)
    if not args.tools:
        raise ValueError(model.missing_pack(args.toolkens))
    return model.attach_tools(pack_argument(args.tools, args.toolkens))


def _config(model, args, stop_default: list[str] | None):
    """The checkpoint's generation config with the flags given on the command line (each flag
    replaces only its field); ``stop_default`` when neither names stop strings."""
    given = G.overrides_from(args)
    if "stop" not in given and not model.generation_config.stop and stop_default:
        given["stop"] = stop_default
    return model.generation_config.replace(**given)


def _show_stream(model, prompt, cfg, question: str):
    """Print the answer as it comes, tool calls marked; return the finished Generation."""
    from .generation.decode import Generation

    for item in model.stream(prompt, cfg, question=question):
        if isinstance(item, Generation):
            print(f"\n  [{len(item.calls)} tool call(s), {item.decoded_tokens} decoded tokens, "
                  f"{item.seconds:.2f} s]")
            for c in item.calls:
                if c.error:
                    print(f"  [{c.tool}: {c.error}]")
            return item
        if item.kind == "text":
            print(item.text, end="", flush=True)
        elif item.kind == "tool_result":
            c = item.call
            print(f"\u27e8{c.tool}({', '.join(map(str, c.arguments))}) = {c.result}\u27e9", end="", flush=True)
    raise AssertionError("stream ended without a Generation")


def _generate(args) -> int:
    import json

    model = _load_for_generation(args)
    from .generation.demos import template_stops

    template = open(args.template).read() if args.template else "Q: [QUESTION]\nA:"
    cfg = _config(model, args, template_stops(template))
    for question in args.question:
        if args.json:
            g = model.generate(template, cfg, question=question)
            print(json.dumps({"question": question, **g.to_dict()}))
            continue
        print(f"Q: {question}\nA:", end="", flush=True)
        _show_stream(model, template, cfg, question)
    return 0


def _chat(args) -> int:
    from .generation.demos import template_stops

    model = _load_for_generation(args)
    template = open(args.template).read() if args.template else None
    interactive = sys.stdin.isatty()
    if interactive:
        print("toolken chat: a question per line; /reset forgets the conversation, /quit or Ctrl-D ends.")
    history: list[dict] = []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        question = line.strip()
        if not question:
            continue
        if question == "/reset":
            history = []
            print("(conversation forgotten)")
            continue
        if template:  # every question on its own, in the template
            prompt, stop = template, template_stops(template)
        else:  # a conversation in the base model's chat template
            prompt, stop = history + [{"role": "user", "content": question}], None
        g = _show_stream(model, prompt, _config(model, args, stop), question)
        if not template:
            history = prompt + [{"role": "assistant", "content": g.text.strip()}]


def _eval(args) -> int:
    from .evaluation.run import EvalConfig, evaluate, summary

    cfg = EvalConfig(bench=args.bench, data=args.data, method=args.method, toolkens=args.toolkens,
                     tools=args.tools, base_model=args.base_model, limit=args.limit, out=args.out,
                     template=args.template, shared=args.shared, api_docs=args.api_docs,
                     generation=G.overrides_from(args), dtype=args.dtype, device=args.device)
    report = evaluate(cfg)
    print(summary(report))
    if args.out:
        print(f"toolken: report in {args.out}")
    return 0


def _synth(args) -> int:
    import fnmatch

    from .core.data import load_jsonl, save_jsonl
    from .tools.synth import SynthSettings, load_needs, synthesize
    from .tools.registry import load_pack

    pack = load_pack(args.tools, **C.parse_overrides(args.tool_option or []))
    tools = list(pack)
    if args.only:
        patterns = [p.strip() for p in args.only.split(",") if p.strip()]
        unmatched = [p for p in patterns if not fnmatch.filter(pack.names, p)]
        if unmatched:
            raise ValueError(f"--only {unmatched} match no tool of {args.tools}")
        tools = [t for t in pack if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]
    base = None
    if args.method != "template":
        from .core.base import load_base

        base = load_base(args.base_model, dtype=args.dtype, device=args.device)
    avoid = [r for path in args.avoid or [] for r in load_jsonl(path)]
    records, report = synthesize(tools, args.per_tool, method=args.method, base=base,
                                 seed=args.seed, avoid=avoid, settings=SynthSettings(
                                     lead=args.lead, needs=load_needs(args.needs) if args.needs else {}))
    print(report.summary(), file=sys.stderr)
    if not records:
        raise ValueError(f"no record was kept for any of the {len(tools)} tools; nothing written")
    save_jsonl(records, args.out)
    print(f"toolken: wrote {len(records)} records to {args.out}")
    return 1 if report.empty else 0


def _fit_predictor(args) -> int:
    from .training.predict import LossFit, fit_checkpoint

    loss = LossFit(epochs=args.loss_epochs, lr=args.lr) if args.loss_epochs else None
    p = fit_checkpoint(args.toolkens, args.method, args.tools, args.layout, loss, dtype=args.dtype,
                       device=args.device, guard_share=None if args.no_guard else args.guard_share)
    print(f"toolken: predictor fitted ({p.meta}) and saved in {args.toolkens}")
    return 0


def _add_tools(args) -> int:
    from .training.predict import add_tools_to_checkpoint

    init = "predicted" if args.zero_shot else args.init
    model = add_tools_to_checkpoint(args.toolkens, args.tools, args.out, init, dtype=args.dtype,
                                    device=args.device, guard=not args.no_guard,
                                    tool_options=C.parse_overrides(args.tool_option or []))
    added = model.extra_config["added_tools"]["tools"]
    print(f"toolken: {len(added)} tools added ({init}): {', '.join(added)}; checkpoint in {args.out}")
    return 0


def _export(args) -> int:
    from .core.checkpoint import pack_argument
    from .export import export
    from .model import ToolkenModel

    model = ToolkenModel.from_pretrained(args.toolkens, dtype=args.dtype, device="cpu")
    if args.tools:  # a checkpoint never chooses which code runs: without --tools, its manifest
        model.attach_tools(pack_argument(args.tools, args.toolkens))
    out = export(model, args.out)
    print(f"toolken: exported {len(model.tools)} toolken(s) as <tool:NAME> tokens "
          f"{model.vocab_size}..{model.vocab_size + len(model.tools) - 1} to {out}")
    return 0


def _serve(args) -> int:
    from .core.checkpoint import pack_argument
    from .model import ToolkenModel
    from .server import make_server

    model = ToolkenModel.from_pretrained(args.toolkens, dtype=args.dtype, device=args.device)
    if args.tools:
        model.attach_tools(pack_argument(args.tools, args.toolkens))
    name = args.model_name or os.path.basename(os.path.normpath(args.toolkens))
    server = make_server(model, args.host, args.port, args.api_key, name, args.max_tokens,
                         args.max_batch, args.verbose)
    host, port = server.server_address[:2]
    side = f"server-side tools from {args.tools}" if args.tools else "client-side tools only"
    print(f"toolken: serving {name!r} ({len(model.tools)} toolkens, {side}) on "
          f"http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.engine.stop()
    return 0


def _placement_arguments(p) -> None:
    """--dtype / --device: on every command that loads a model."""
    from .core.base import DTYPES

    p.add_argument("--dtype", choices=("auto", *DTYPES), help="the base model's dtype (default "
                   "auto: fp32 on CPU, bf16 on CUDA); a checkpoint made in one loads in any")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps, ... (default auto: CUDA when present)")


def _placement_overrides(args) -> list[str]:
    """--dtype / --device as the training config's key=value overrides (they win)."""
    return [f"{k}={getattr(args, k)}" for k in ("dtype", "device") if getattr(args, k) is not None]


def _generation_arguments(g, template_help: str) -> None:
    g.add_argument("--toolkens", required=True, help="checkpoint folder")
    _placement_arguments(g)
    g.add_argument("--tools", help="tool pack (.py file or module), required: Python code, "
                   "run as such; a checkpoint never chooses it. 'checkpoint': the copy of its "
                   "pack saved in the checkpoint folder (toolken_tools.py), if you trust it")
    g.add_argument("--template", help=template_help)
    G.add_arguments(g, skip=G.EVAL_ONLY)
    _tool_runner_arguments(g)


def _tool_runner_arguments(g) -> None:
    """Where tools run (toolken.tools.workers); applied by main() before the command."""
    g.add_argument("--tool-isolation", choices=("process", "thread"), default="process",
                   help="process (default): persistent worker processes, killed on timeout, "
                   "memory-capped, output captured; thread: in this process, not contained")
    g.add_argument("--tool-workers", type=int, default=1, help="worker processes (default 1)")
    g.add_argument("--tool-memory-mb", type=int, default=4096,
                   help="private memory each worker may use, in MB (0: no limit; default 4096)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolken", description="Teach a frozen causal LM to use tools "
                                "with one learned output embedding per tool (ToolkenGPT).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train toolkens from a YAML recipe",
                       description="Train toolkens. CONFIG is a YAML recipe (see configs/); "
                       "key=value pairs override its keys. Valid keys: " + ", ".join(C.valid_keys()))
    t.add_argument("config", help="YAML recipe, e.g. configs/funcqa.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. output_dir=outputs/x epochs=5")
    _placement_arguments(t)
    t.set_defaults(func=_train)

    c = sub.add_parser("calibrate", help="fit the toolken bias on the dev split, store it",
                       description="Choose the toolken bias that maximises dev toolken F1 on the "
                       "training run's dev split (never a test set) and store it in the checkpoint.")
    c.add_argument("--toolkens", required=True, help="checkpoint folder")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="override the training config")
    _placement_arguments(c)
    c.set_defaults(func=_calibrate)

    g = sub.add_parser("generate", help="answer questions, calling tools",
                       description="Generate with tools: the model chooses when to call which "
                       "tool, writes its arguments under the schema, and continues from the result.")
    g.add_argument("question", nargs="+", help="one or more questions")
    g.add_argument("--json", action="store_true", help="print the full trace as JSON lines")
    _generation_arguments(g, "prompt file with [QUESTION] (e.g. the paper's llama_general.txt); "
                          "--stop defaults to a newline where the template's answers take one line, "
                          "else \\nQ: and a blank line")
    g.set_defaults(func=_generate)

    h = sub.add_parser("chat", help="an interactive loop: questions from stdin, tool calls shown",
                       description="Read questions line by line (stdin; /reset, /quit) and answer "
                       "each with tools, streaming. Without --template the turns form one "
                       "conversation in the base model's chat template.")
    _generation_arguments(h, "prompt file with [QUESTION]: each question answered on its own "
                          "(--stop as for generate; none with the chat template)")
    h.set_defaults(func=_chat)

    s = sub.add_parser("synth", help="write training data for tools that have none",
                       description="Generate canonical training JSONL for the tools of a pack from "
                       "their descriptions, schemas and demos (templates and/or questions sampled "
                       "from the base model), run each tool for its result, filter, and report "
                       "per tool. Exit status 1 when some tool got no record (it is listed).")
    s.add_argument("--tools", required=True, help="tool pack (.py file or module)")
    s.add_argument("--per-tool", type=int, required=True, help="records wanted per tool")
    s.add_argument("--out", required=True, help="canonical JSONL to write")
    s.add_argument("--method", choices=("template", "model", "both"), default="template",
                   help="template (no model), model (self-instruct) or both (half each)")
    s.add_argument("--base-model", default=C.DEFAULT_BASE_MODEL,
                   help="for --method model/both (default %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lead", help="every answer's lead-in, the end of the prompt the tools will "
                   "be used under (e.g. 'The answer is'); default: the demos' own or varied ones")
    s.add_argument("--only", help="comma-separated tool names or patterns, e.g. 'hf.*,tfhub.*'")
    s.add_argument("--needs", metavar="YAML", help="user needs by API domain ('domain: [need, "
                   "...]', e.g. data/apibench_needs.yaml): about half of each catalogue API's "
                   "template requests say a need of its domain with its own description")
    s.add_argument("--avoid", action="append", help="existing canonical JSONL whose texts new "
                   "records must not duplicate (repeatable)")
    s.add_argument("--tool-option", action="append", metavar="KEY=VALUE",
                   help="option for the pack's build() (repeatable)")
    _placement_arguments(s)
    _tool_runner_arguments(s)
    s.set_defaults(func=_synth)

    _predictor_commands(sub)
    x = sub.add_parser("export", help="write a transformers model folder that serving engines load",
                       description="Export a checkpoint as a plain transformers folder: the base "
                       "weights with K special tokens <tool:NAME> whose LM-head rows are the "
                       "toolkens, the tokenizer, generation_config.json (toolken ids as EOS, their "
                       "bias as sequence_bias) and toolken_tools.json (schemas, tool-mode prompts, "
                       "argument grammars).")
    x.add_argument("--toolkens", required=True, help="checkpoint folder")
    x.add_argument("--out", required=True, help="new folder to write")
    x.add_argument("--tools", help="tool pack whose demos and prompts make the tool-mode prompts "
                   "(default: the checkpoint's manifest: descriptions only); 'checkpoint': the "
                   "copy saved in the checkpoint folder, if you trust it")
    x.add_argument("--dtype", default="float32", help="weights' dtype (default %(default)s)")
    x.set_defaults(func=_export)

    v = sub.add_parser("serve", help="an OpenAI-compatible chat-completions server",
                       description="Serve a checkpoint with the OpenAI chat-completions API "
                       "(POST /v1/chat/completions, GET /v1/models, GET /health). A request's "
                       "tools (OpenAI function schemas, each a toolken of the checkpoint) are "
                       "called by the client; with --tools the pack's tools run in the server.")
    v.add_argument("--toolkens", required=True, help="checkpoint folder")
    v.add_argument("--tools", help="tool pack whose tools run in the server (default: none); "
                   "'checkpoint': the copy saved in the checkpoint folder, if you trust it")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    v.add_argument("--model-name", help="the model id clients name (default: the folder's name)")
    v.add_argument("--max-tokens", type=int, default=1024, help="the most max_tokens a request may ask")
    v.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    v.add_argument("--verbose", action="store_true", help="log every request to stderr")
    _placement_arguments(v)
    v.set_defaults(func=_serve)

    from .evaluation.run import METHODS

    e = sub.add_parser("eval", help="score a method on a benchmark with the papers' metrics",
                       description="Evaluate toolkens (or a prompting baseline on the same frozen "
                       "base model) on a published benchmark file; write the JSON report.")
    e.add_argument("bench", choices=sorted(METHODS))
    e.add_argument("--data", required=True, help="the benchmark file, in its published format")
    e.add_argument("--method", default="toolken", help="toolken | icl | cot | zero-shot | retrieval "
                   "(which apply: " + "; ".join(f"{b}: {'/'.join(m)}" for b, m in METHODS.items()) + ")")
    e.add_argument("--toolkens", help="checkpoint folder (needed for method toolken)")
    e.add_argument("--tools", help="tool pack (.py): needed by methods toolken and icl; a "
                   "checkpoint never chooses it. 'checkpoint': the copy saved in the checkpoint "
                   "folder (toolken_tools.py), if you trust it")
    e.add_argument("--base-model", help="base model for the baselines (default SmolLM2-135M-Instruct)")
    e.add_argument("--limit", type=int, help="only the first N examples")
    e.add_argument("--out", help="write the JSON report here")
    e.add_argument("--template", help="prompt file with [QUESTION]; default: the paper's for the method")
    e.add_argument("--shared", default="../shared/benchmarks", help="folder of the papers' prompts and API docs")
    e.add_argument("--api-docs", help="APIBench documentation <provider>_api.jsonl")
    G.add_arguments(e)
    _placement_arguments(e)
    _tool_runner_arguments(e)
    e.set_defaults(func=_eval)
    return p


def _predictor_commands(sub) -> None:
    f = sub.add_parser("fit-predictor", help="fit the description -> toolken map on a checkpoint",
                       description="Fit the map from a tool's description (read by the frozen base) "
                       "to its toolken on the checkpoint's trained rows, and save it there "
                       "(toolken_predictor.safetensors + .json).")
    f.add_argument("--toolkens", required=True, help="checkpoint folder")
    f.add_argument("--tools", help="tool pack (default: the checkpoint's recipe's, else its manifest)")
    f.add_argument("--method", choices=("ridge", "prototype"), default="ridge",
                   help="ridge onto the trained rows, or prototype: rows pointing the way of the "
                   "tool text read in --layout, scaled by the exact loss on the training features")
    f.add_argument("--layout", default="{text}", help="how each tool's text is read: {text} "
                   "and/or {description}, e.g. 'Question: {description}\\nAnswer: The answer is'")
    f.add_argument("--loss-epochs", type=int, default=0,
                   help="then train the map end to end on the training features' exact loss")
    f.add_argument("--lr", type=float, default=1e-4, help="--loss-epochs: learning rate")
    f.add_argument("--guard-share", type=float, default=GUARD_SHARE,
                   help="with the training features read (prototype, --loss-epochs): a predicted "
                   "row gets a bias that lets it win on at most this share of the trained tools' "
                   f"training positions ({GUARD_POSITIONS:,} kept in the predictor; default "
                   f"{GUARD_SHARE:g})")
    f.add_argument("--no-guard", action="store_true", help="keep no guard: predicted rows get no bias")
    _placement_arguments(f)
    f.set_defaults(func=_fit_predictor)

    a = sub.add_parser("add-tools", help="add rows for new tools to a checkpoint, without training",
                       description="Write a new checkpoint with a row for each tool the pack adds "
                       "after the checkpoint's own (which it lists first, in order).")
    a.add_argument("--toolkens", required=True, help="checkpoint folder")
    a.add_argument("--tools", required=True, help="tool pack: the checkpoint's tools, then the new ones")
    a.add_argument("--out", required=True, help="the new checkpoint folder")
    a.add_argument("--zero-shot", action="store_true",
                   help="rows predicted from the tools' descriptions (= --init predicted)")
    a.add_argument("--init", choices=("predicted", "embedding", "random"), default="predicted")
    a.add_argument("--no-guard", action="store_true", help="predicted rows without the guard's "
                   "bias (see fit-predictor --guard-share)")
    a.add_argument("--tool-option", action="append", metavar="KEY=VALUE",
                   help="option for the pack's build() (repeatable), e.g. "
                   "catalogues=[torchhub,tensorflowhub,huggingface] for tools/apibench.py")
    _placement_arguments(a)
    a.set_defaults(func=_add_tools)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "tool_isolation", None):
            from .tools.workers import configure

            configure(args.tool_isolation, args.tool_workers, args.tool_memory_mb or None)
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:  # our errors say what to fix
        if os.environ.get("TOOLKEN_DEBUG"):
            raise
        print(f"toolken: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("toolken: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
