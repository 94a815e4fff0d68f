"""Typed training configuration: YAML recipe + ``key=value`` overrides.

Relative paths in a recipe are taken relative to the current directory, as a user types them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.base import DEFAULT_BASE_MODEL
from ..generation.config import GenerationConfig
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
    # head
    init: str = "random"  # random (the paper) | embedding (name + description)
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
    # output and bookkeeping
    output_dir: str = "outputs/toolkens"
    resume: bool = True  # continue an interrupted run found in output_dir
    cache_dir: str | None = None  # feature cache; default $TOOLKEN_HOME/features
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
           "init": ("random", "embedding"), "schedule": ("cosine", "linear", "constant"),
           "train_only": ("all", "new"), "report_to": ("none", "wandb")}


class ConfigError(ValueError):
    pass


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    cfg = TrainConfig(**values)
    check(cfg, where)
    return cfg


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
    _check_generation(cfg.generation, where)
    if not isinstance(cfg.train_prompt_demos, int) or cfg.train_prompt_demos < 0:
        raise ConfigError(f"{where}: train_prompt_demos={cfg.train_prompt_demos!r} must be an int >= 0")
    if cfg.train_prompt_demos and not cfg.train_prompt:
        raise ConfigError(f"{where}: train_prompt_demos needs train_prompt=PROMPT_FILE")
    for key in ("epochs", "batch_size", "max_length"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{where}: {key}={getattr(cfg, key)} must be positive")


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


def _check_generation(gen, where: str) -> None:
    """The recipe's ``generation:`` section must be valid ``GenerationConfig`` fields."""
    try:
        GenerationConfig.from_dict(gen, where=f"{where}: generation")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; valid keys: {', '.join(valid_keys())}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v != "" else None
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
    values.update(ov)
    return from_dict(values, where)


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
