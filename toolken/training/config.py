"""Typed training configuration: YAML recipe + ``key=value`` overrides.

Relative paths in a recipe are taken relative to the current directory, as a user types them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.base import DEFAULT_BASE_MODEL
from ..generation.config import GenerationConfig
from ..generation.demos import DEMO_PICKS
from ..core.data import FORMATS


@dataclass
class TrainConfig:
    # base model
    base_model: str = DEFAULT_BASE_MODEL  # hub id, local folder, or a built-in name
    dtype: str = "auto"  # auto = fp32 on CPU, bf16 on GPU
    device: str = "auto"
    # data
    train_file: str = ""  # training data
    extra_train_files: list = field(default_factory=list)  # more training data, after train_file:
    # each a path (canonical JSONL, as `toolken synth` writes) or {file: PATH, data_format: FMT}
    data_format: str = "canonical"  # canonical | toolkengpt-funcqa | toolkengpt-kamel | apibench
    dev_file: str | None = None  # a separate dev file (same format); else dev_fraction
    dev_fraction: float = 0.1  # share of training records held out for dev (by record)
    tools: Any = None  # a pack path (tools/funcqa.py), a list of names, or None = from data
    tool_options: dict = field(default_factory=dict)  # keyword options for the pack's build()
    max_length: int = 512  # tokens; longer records are truncated only if no call is cut
    only_toolken_positions: bool = False  # the paper's only_functoken
    train_prompt: str | None = None  # a prompt file with [QUESTION]: each text is read in its
    # layout (its header and demos before the text, unlabelled), as generation will see it
    train_prompt_demos: int = 0  # >0: the k most similar training texts replace its demos
    train_prompt_demo_pick: str = "nearest"  # nearest (BM25, as generation retrieves them) |
    # random (k training texts drawn per text: demos that are no near-copies of it)
    # head
    init: str = "random"  # random (the paper) | embedding (name + description) | predicted
    # (resume_from's description -> toolken map: `toolken fit-predictor`)
    bias: bool = False
    # optimisation
    epochs: int = 10
    batch_size: int = 256  # labelled positions per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    warmup_ratio: float = 0.0
    seed: int = 0
    # continuing from a checkpoint
    resume_from: str | None = None  # start from an existing toolken checkpoint (its tools first)
    train_only: str = "all"  # all | new (rows not in resume_from stay bit-identical)
    replay: int = 0  # with resume_from: this many texts per tool of the checkpoint (from its
    # demo pool, toolken_demos.jsonl) are read with the new data, so that new rows also learn
    # where they must not fire (0: the new data alone)
    # output and bookkeeping
    output_dir: str = "outputs/toolkens"
    resume: bool = True  # continue an interrupted run found in output_dir
    cache_dir: str | None = None  # feature cache; default $TOOLKEN_HOME/features
    feature_dtype: str = "auto"  # h in the cache: auto (the base's: fp32 on CPU, bf16 on GPU) |
    # float32 | bfloat16 | float16; the loss always accumulates in fp32
    feature_memory_mb: float = 4096  # cached features in memory per process while training: a
    # train split this size or smaller is read once; a larger one streams in shuffled blocks
    feature_batch_tokens: int = 8192
    vocab_chunk: int = 8192
    log_every: int = 20
    report_to: str = "none"  # none | wandb (through accelerate's trackers; offline unless set up)
    wandb_project: str = "toolken"
    progress: bool = True
    # generation defaults stored with the checkpoint (toolken generate / eval read them):
    # ToolModeOptions' arg_* keys, close_results, prompt_demos (toolken eval)
    generation: dict = field(default_factory=dict)


CHOICES = {"data_format": FORMATS,
           "init": ("random", "embedding", "predicted"), "schedule": ("cosine", "linear", "constant"),
           "train_only": ("all", "new"), "report_to": ("none", "wandb"),
           "feature_dtype": ("auto", "float32", "bfloat16", "float16")}


class ConfigError(ValueError):
    pass


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: _typed(k, v, types[k], where) for k, v in values.items()})
    check(cfg, where)
    return cfg


_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
          "list": "a list", "dict": "a mapping"}


def _typed(key: str, value, annotation: str, where: str):
    """``value`` as the field's type: a number written as a string (YAML 1.1 reads ``1e-3``
    as one) becomes a float; anything else of the wrong type is an error naming the key."""
    kinds = [a.strip() for a in str(annotation).split("|")]
    if "Any" in kinds or value is None and "None" in kinds:
        return value
    kind = kinds[0]
    if kind == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}[kind]
    if not isinstance(value, ok) or isinstance(value, bool) and kind != "bool":
        want = _NAMES[kind] + (" or null" if "None" in kinds else "")
        raise ConfigError(f"{where}: {key}={value!r} must be {want} "
                          f"(got {type(value).__name__})")
    if kind == "float" and not math.isfinite(value):
        raise ConfigError(f"{where}: {key}={value!r} must be a finite number")
    return value


def check(cfg: TrainConfig, where: str = "config") -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)!r} is not one of {list(allowed)}")
    if not cfg.train_file:
        raise ConfigError(f"{where}: train_file is required")
    extra_files(cfg, where)
    if not 0 <= cfg.dev_fraction < 1:
        raise ConfigError(f"{where}: dev_fraction={cfg.dev_fraction} must be in [0, 1)")
    if cfg.train_only == "new" and not cfg.resume_from:
        raise ConfigError(f"{where}: train_only=new needs resume_from=CHECKPOINT_DIR")
    if not isinstance(cfg.replay, int) or isinstance(cfg.replay, bool) or cfg.replay < 0:
        raise ConfigError(f"{where}: replay={cfg.replay!r} must be an int >= 0")
    if cfg.replay and not cfg.resume_from:
        raise ConfigError(f"{where}: replay={cfg.replay} needs resume_from=CHECKPOINT_DIR (its texts)")
    if cfg.init == "predicted" and not cfg.resume_from:
        raise ConfigError(f"{where}: init=predicted needs resume_from=CHECKPOINT_DIR (its predictor)")
    _check_generation(cfg.generation, where)
    if not isinstance(cfg.train_prompt_demos, int) or cfg.train_prompt_demos < 0:
        raise ConfigError(f"{where}: train_prompt_demos={cfg.train_prompt_demos!r} must be an int >= 0")
    if cfg.train_prompt_demos and not cfg.train_prompt:
        raise ConfigError(f"{where}: train_prompt_demos needs train_prompt=PROMPT_FILE")
    if cfg.train_prompt_demo_pick not in DEMO_PICKS:
        raise ConfigError(f"{where}: train_prompt_demo_pick={cfg.train_prompt_demo_pick!r} is not "
                          f"one of {list(DEMO_PICKS)}")
    for key in ("epochs", "batch_size", "feature_batch_tokens", "vocab_chunk", "log_every", "lr",
                "feature_memory_mb"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)} must be positive")
    if cfg.max_length < 2:
        raise ConfigError(f"{where}: max_length={cfg.max_length} must be at least 2 tokens "
                          f"(a position and the token it predicts)")
    for key, lo, hi in (("weight_decay", 0, math.inf), ("warmup_ratio", 0, 1)):
        if not lo <= getattr(cfg, key) < hi:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)} must be in [{lo}, {hi})")
    if cfg.seed < 0:
        raise ConfigError(f"{where}: seed={cfg.seed} must be >= 0")


def extra_files(cfg: TrainConfig, where: str = "config") -> list[tuple[str, str]]:
    """``extra_train_files`` as ``[(path, data_format)]``; a bare path is canonical JSONL."""
    if not isinstance(cfg.extra_train_files, list):
        raise ConfigError(f"{where}: extra_train_files={cfg.extra_train_files!r} must be a list")
    out = []
    for i, item in enumerate(cfg.extra_train_files):
        if isinstance(item, str) and item:
            item = {"file": item}
        bad = (not isinstance(item, dict) or not isinstance(item.get("file"), str)
               or set(item) - {"file", "data_format"})
        if bad:
            raise ConfigError(f"{where}: extra_train_files[{i}]={item!r}: give a path or "
                              f"{{file: PATH, data_format: FORMAT}}")
        fmt = item.get("data_format", "canonical")
        if fmt not in FORMATS:
            raise ConfigError(f"{where}: extra_train_files[{i}]: data_format={fmt!r} is not one "
                              f"of {list(FORMATS)}")
        out.append((item["file"], fmt))
    return out


def check_paths(cfg: TrainConfig, where: str = "config") -> None:
    """Before any compute: the input files exist and ``output_dir`` is, or can be created
    as, a writable folder."""
    inputs = [("train_file", cfg.train_file)] + [
        (f"extra_train_files[{i}]", p) for i, (p, _) in enumerate(extra_files(cfg, where))]
    inputs += [(k, getattr(cfg, k)) for k in ("dev_file", "train_prompt") if getattr(cfg, k)]
    for key, path in inputs:
        if not Path(path).is_file():
            raise ConfigError(f"{where}: {key}={path!r}: no such file")
    if cfg.resume_from and not Path(cfg.resume_from).is_dir():
        raise ConfigError(f"{where}: resume_from={cfg.resume_from!r}: no such checkpoint folder")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{where}: output_dir={cfg.output_dir!r} is a file, not a folder")
    try:  # saves write in the folder and swap folders beside it (its parent is created here)
        for folder in ([out] if out.exists() else []) + [out.parent]:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".{out.name}.write-test-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
    except OSError as e:
        raise ConfigError(f"{where}: output_dir={cfg.output_dir!r} is not a writable folder "
                          f"({e.strerror or e})") from None


def _check_generation(gen, where: str) -> None:
    """The recipe's ``generation:`` section must be valid ``GenerationConfig`` fields."""
    try:
        GenerationConfig.from_dict(gen, where=f"{where}: generation")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def parse_overrides(items: list[str]) -> dict:
    """``["lr=1e-3", "generation.arg_demos=3"]`` -> ``{"lr": 0.001, "generation.arg_demos": 3}``
    (values read as YAML; a dotted key is applied inside its mapping by ``apply_overrides``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; valid keys: {', '.join(valid_keys())}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from None
    return out


NESTED = ("generation", "tool_options")  # the keys whose value is a mapping of its own


def apply_overrides(values: dict, overrides: dict) -> dict:
    """``values`` with ``overrides`` over it; ``a.b=v`` sets key b inside mapping a."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if not dot:
            out[key] = value
            continue
        if head not in NESTED:
            raise ConfigError(f"override {key}={value!r}: only {', '.join(NESTED)} take dotted "
                              f"keys; valid keys: {', '.join(valid_keys())}")
        if not rest or "." in rest:
            raise ConfigError(f"override {key}={value!r}: give {head}.KEY=VALUE")
        inner = out.get(head) or {}
        if not isinstance(inner, dict):
            raise ConfigError(f"override {key}={value!r}: {head} is {inner!r}, not a mapping")
        out[head] = {**inner, rest: value}
    return out


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> TrainConfig:
    values: dict = {}
    where = str(path) if path else "overrides"
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config is a mapping of keys to values")
    ov = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    return from_dict(apply_overrides(values, ov), where)


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
