"""``GenerationConfig``: every generation option in one typed, frozen dataclass.

The transformers convention: a checkpoint folder holds ``generation_config.json`` beside the
weights (the recipe's ``generation:`` section and the calibrated toolken bias), and a call
changes only the fields it names::

    cfg = model.generation_config.replace(max_new_tokens=64, arg_demos=4)
    g = model.generate(prompt, cfg)           # or model.generate(prompt, arg_demos=4)

It is resolved once, at the public entry points (``model.generate``, ``stream``,
``generate_batch``, the CLI, ``toolken eval``); code below them takes a ``GenerationConfig``
and never sees "None means the checkpoint's value". CLI flags are made from the fields
(``add_arguments``), so a flag overrides only its field, in Python and on the command line alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

GENERATION_CONFIG_NAME = "generation_config.json"
RETRIEVERS = ("bm25", "hidden", "minilm")
BACKENDS = ("xgrammar", "llguidance")


def _f(default, help: str, choices: tuple | None = None, minimum=None):
    return field(default=default, metadata={"help": help, "choices": choices, "min": minimum})


@dataclass(frozen=True)
class GenerationConfig:
    # ---- reasoning mode: sampling, stops, limits
    max_new_tokens: int = _f(128, "tokens the model may choose (a tool call counts one)", minimum=1)
    do_sample: bool = _f(False, "sample instead of greedy decoding")
    temperature: float = _f(1.0, "sampling temperature", minimum=0.0)
    top_p: float = _f(1.0, "nucleus sampling mass", minimum=0.0)
    seed: int | None = _f(None, "random seed of sampling (None: unseeded)")
    stop: tuple[str, ...] = _f((), "stop strings (cut from the text)")
    ignore_eos: bool = _f(False, "keep decoding past the end-of-sequence token")
    # ---- toolkens
    toolken_bias: float = _f(0.0, "added to every toolken logit (toolken calibrate fits it)")
    tool_filter: tuple[str, ...] = _f((), "only toolkens whose name matches one of these "
                                          "fnmatch patterns can win, e.g. 'hf.*' (empty: all)")
    max_tool_calls: int = _f(8, "tool calls per answer; after that toolkens are masked", minimum=0)
    tool_choice: str = _f("auto", "auto: a toolken is called where it wins; required: an answer "
                                  "that would end without a call is decoded again from the step "
                                  "where a toolken came closest to winning (its logit + bias - the "
                                  "best token's), the best toolken chosen there; text streams "
                                  "from the first call on", ("auto", "required"))
    unused_number_rewinds: int = _f(0, "an answer that ends having written answer_marker while "
                                       "a number of the question appears neither in it nor in its "
                                       "calls' arguments goes back to the start of the marker's "
                                       "sentence and goes on with another first token there; at "
                                       "most this many times (0: off; needs a question: a template "
                                       "or chat, not a bare prompt); text streams up to the last "
                                       "call's result", minimum=0)
    answer_marker: str = _f("answer is", "unused_number_rewinds: the words that give the final "
                                         "answer (any case)")
    tool_timeout: float = _f(5.0, "seconds a tool may run", minimum=0.0)
    max_result_chars: int = _f(200, "a longer tool result is cut", minimum=1)
    close_results: bool = _f(False, "no digit right after a tool result, or after a '.' or ',' "
                                    "right after it (a result is a whole number)")
    call_tools: bool = _f(True, "false: a toolken that wins ends the answer there (stop reason "
                                "'toolken'): no arguments written, no tool run; for scoring the "
                                "choice alone (APIBench)")
    inline_calls: str = _f("off", "a call the answer has just written in one of its tool's "
                                  "forms, then '=' (1260 * 12 =), runs as written: toolken = "
                                  "when a toolken wins (its tool and arguments read from the "
                                  "text, no tool mode); always = also when none wins",
                           ("off", "toolken", "always"))
    # ---- tool mode: writing the arguments
    backend: str = _f("xgrammar", "constrained-decoding backend of the arguments", BACKENDS)
    max_arg_tokens: int = _f(48, "tokens an argument list may take", minimum=1)
    arg_demos: int = _f(0, "k training examples of the chosen tool, most similar to the "
                           "question, as tool-mode demos (0: the tool's fixed demos)", minimum=0)
    arg_retriever: str = _f("bm25", "similarity for arg_demos and prompt_demos", RETRIEVERS)
    arg_candidates: int = _f(1, "argument sets (greedy + sampled); the majority result wins", minimum=1)
    arg_temperature: float = _f(0.7, "sampling temperature of the extra candidates", minimum=1e-6)
    arg_numbers: str = _f("any", "context: numbers in arguments come from the question and "
                                 "answer (copied or derived)", ("any", "context"))
    arg_strings: str = _f("any", "context: a string argument is one of the double-quoted spans "
                                 "of the question and answer, where they have any", ("any", "context"))
    arg_names: bool = _f(False, "write each argument after its parameter's name "
                                "(percent(part=12, whole=30)); the tools' demos are shown so")
    # ---- Toolken+ rerank with a reject option
    rerank_top_k: int = _f(0, "when a toolken wins, the base model rescores the top k tools' "
                              "descriptions and 'none' (0: off)", minimum=0)
    rerank_none_bias: float = _f(0.0, "the score of 'none'; higher: fewer calls")
    rerank_method: str = _f("pmi", "pmi: description PMI; choice: Toolken+'s multiple choice; "
                                   "domain: PMI among the top k of the winner's domain (meta); "
                                   "embed: toolken log-prob + MiniLM similarity of question and "
                                   "documentation / rerank_temperature",
                            ("pmi", "choice", "domain", "embed"))
    rerank_temperature: float = _f(0.01, "embed: the similarity's temperature (lower: the "
                                         "documentation weighs more)", minimum=1e-6)
    rerank_lexical: float = _f(0.0, "embed: + this weight x BM25 of the question over each "
                                    "candidate's identity (name words, reported performance, "
                                    "description), scaled to the candidates' best, added to the "
                                    "similarity (0: off)", minimum=0.0)
    rerank_requests: float = _f(0.0, "embed: + this weight x the best cosine between the question "
                                     "and the candidate's example requests (tool.meta['requests'], "
                                     "e.g. its domain's user needs) less its mean over the "
                                     "candidates that have some, added to the similarity; a "
                                     "candidate without any counts 0 (0: off)",
                                minimum=0.0)
    # ---- the prompt
    prompt_demos: int = _f(0, "with a template ([QUESTION]) that has Q:/A: demos: the k "
                              "training texts most similar to the question replace them", minimum=0)
    paths: int = _f(1, "toolken eval on funcqa-oh, funcqa-mh and gsm8k-xl (toolken, cot): "
                       "self-consistency, the greedy answer and paths - 1 sampled ones "
                       "(path_temperature, top_p 0.95), majority vote on the final number, ties "
                       "to the greedy one; generate, chat and serve decode once", minimum=1)
    path_temperature: float = _f(0.7, "paths: the sampled paths' temperature", minimum=1e-6)
    reuse_prompt: bool = _f(True, "reuse the KV cache of the longest prompt prefix seen before")
    prompt_lookup: int = _f(0, "greedy: verify k draft tokens looked up in the context per "
                               "forward pass (same text, fewer passes; batches of one)", minimum=0)
    batch_size: int = _f(8, "prompts decoded together by generate_batch", minimum=1)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("stop", "tool_filter"):
                if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
                    raise ValueError(f"{f.name}={value!r} must be a list of non-empty strings")
                object.__setattr__(self, f.name, tuple(value))
                continue
            if f.name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError(f"seed={value!r} must be an integer or null")
                continue
            _check_type(f, value)
        if not self.answer_marker.strip():
            raise ValueError("answer_marker='' must name the words that give the final answer")

    # ------------------------------------------------------------------ building
    def replace(self, **overrides) -> "GenerationConfig":
        """A copy with the named fields changed (validated; an unknown name is an error)."""
        _check_keys(overrides, "generation options")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "generation config") -> "GenerationConfig":
        """From a mapping (JSON, a recipe's ``generation:`` section); unknown keys are an error."""
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise ValueError(f"{where}: must be a mapping of option names to values, got {values!r}")
        _check_keys(values, where)
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / GENERATION_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "GenerationConfig":
        path = Path(directory) / GENERATION_CONFIG_NAME
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        return cls.from_dict(values, where=str(path))

    @property
    def tool_mode_key(self) -> tuple:
        """The fields that shape tool mode's prompts and argument decoding."""
        return (self.backend, self.max_arg_tokens, self.arg_demos, self.arg_retriever,
                self.arg_candidates, self.arg_temperature, self.arg_numbers, self.arg_strings,
                self.arg_names)


def _check_keys(values: dict, where: str) -> None:
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid: {names}")


def _check_type(f, value) -> None:
    kind = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"{f.name}={value!r} must be of type {f.type}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{f.name}={value!r} must be a finite number")
    lo, choices = f.metadata.get("min"), f.metadata.get("choices")
    if lo is not None and value < lo:
        raise ValueError(f"{f.name}={value!r} must be >= {lo}")
    if choices and value not in choices:
        raise ValueError(f"{f.name}={value!r} is not one of {list(choices)}")


# ---------------------------------------------------------------------------- the CLI
EVAL_ONLY = ("paths", "path_temperature")  # read by toolken eval alone


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per field (``--max-new-tokens``, ``--arg-demos``, ``--stop`` repeatable,
    ``--do-sample/--no-do-sample``); a flag not given leaves its field to the checkpoint."""
    group = parser.add_argument_group("generation options (default: the checkpoint's "
                                      "generation_config.json)")
    for f in dataclasses.fields(GenerationConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"])
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif f.name in ("stop", "tool_filter"):
            group.add_argument(flag, action="append", metavar="TEXT", **kw)
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, int)
            group.add_argument(flag, type=kind, choices=f.metadata["choices"], **kw)
    parser.add_argument("--bias", dest="toolken_bias", type=float, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the older name of --toolken-bias


def overrides_from(args: argparse.Namespace) -> dict:
    """The generation options given on the command line (only those)."""
    names = {f.name for f in dataclasses.fields(GenerationConfig)}
    return {k: v for k, v in vars(args).items() if k in names}
