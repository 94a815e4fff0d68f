"""Setting up a training run from a config: the tool list, the model, and the labelled data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.base import toolken_home
from ..core.data import Record, label_records
from ..generation.config import GenerationConfig
from ..generation.demos import in_prompt_layout, question_of
from ..model import ToolkenModel
from ..tools.registry import load_pack
from . import features as F
from .config import TrainConfig, extra_files
from .convert import NEEDS_TOOLS, convert
from .features import file_digest


@dataclass
class Data:
    records: list[Record]  # train records, then dev records
    n_train: int
    labelled: object  # data.Labelled over all records
    dev_seqs: np.ndarray  # record indices (= sequence ids) held out for dev
    digest: str


def load_records(cfg: TrainConfig, verbose: bool = True) -> tuple[list[Record], list[Record] | None, str]:
    """(train records: train_file's then each extra_train_files', dev records or None, digest)."""
    files = [(cfg.train_file, cfg.data_format)] + extra_files(cfg)
    pack = None  # formats that map calls to tools by the pack (apibench) get it
    if any(fmt in NEEDS_TOOLS for _, fmt in files) and isinstance(cfg.tools, str):
        pack = load_pack(cfg.tools, **cfg.tool_options)

    def read(path: str, fmt: str) -> tuple[list[Record], str]:
        conv = convert(path, fmt, pack)
        if verbose:
            print(f"toolken: {path}: {conv.summary()}")
        return conv.records, file_digest(path)

    train, digest = read(cfg.train_file, cfg.data_format)
    for path, fmt in files[1:]:
        more, d = read(path, fmt)
        train, digest = train + more, digest + fmt + d
    dev = None
    if cfg.dev_file:
        dev, d = read(cfg.dev_file, cfg.data_format)
        digest += d
    return train, dev, hashlib.sha256(digest.encode()).hexdigest()[:16]


def tool_list(cfg: TrainConfig, records: list[Record]) -> tuple[list[str], list[dict] | None, list[str]]:
    """(names in row order, manifest or None, texts for description-based init)."""
    if isinstance(cfg.tools, str):
        registry = load_pack(cfg.tools, **cfg.tool_options)
        names = list(registry.names)
        return names, registry.manifest(), [f"{t.name}: {t.description}" for t in registry]
    if isinstance(cfg.tools, list):
        names = [str(t) for t in cfg.tools]
        return names, None, names
    if cfg.tools is not None:
        raise ValueError(f"tools={cfg.tools!r}: give a pack path, a list of names, or nothing")
    seen: dict[str, None] = {}
    for r in records:
        for c in r.calls:
            seen.setdefault(c.tool, None)
    return list(seen), None, list(seen)


def prepare_model(cfg: TrainConfig, base, records: list[Record], verbose: bool = True) -> tuple[ToolkenModel, int]:
    """The model to train and the first trainable row (0 unless train_only=new)."""
    names, manifest, texts = tool_list(cfg, records)
    if cfg.resume_from:
        prev = ToolkenModel.from_pretrained(cfg.resume_from, base=base)
        if isinstance(cfg.tools, str) and names[:len(prev.tools)] != prev.tools:
            raise ValueError(f"the pack {cfg.tools} must list the {len(prev.tools)} tools of "
                             f"{cfg.resume_from} first and in the same order")
        model = prev
        if manifest is None:
            manifest = prev.manifest
    else:
        model = ToolkenModel(base, [], bias=cfg.bias)
    new = [n for n in names if n not in model.tools]
    new_texts = [t for n, t in zip(names, texts) if n in set(new)]
    if cfg.init == "predicted":  # the predictor reads the tools themselves (demos included)
        from ..tools.registry import load_pack

        pack = load_pack(cfg.tools, **cfg.tool_options) if isinstance(cfg.tools, str) else None
        model.add_tools([pack[n] for n in new] if pack else new, init="predicted")
    else:
        model.add_tools(new, init=cfg.init, texts=new_texts)
    model.manifest = manifest
    if not model.tools:
        raise ValueError(f"no tools: {cfg.train_file} has no calls and the config names no tools")
    recipe = GenerationConfig.from_dict(cfg.generation, where="generation")
    if cfg.resume_from:  # the recipe's generation keys replace only their fields (a calibrated bias stays)
        recipe = model.generation_config.replace(**{k: getattr(recipe, k) for k in cfg.generation or {}})
    model.generation_config = recipe
    start = len(model.tools) - len(new) if cfg.train_only == "new" else 0
    if verbose and cfg.resume_from:
        print(f"toolken: {len(model.tools) - len(new)} tools from {cfg.resume_from}, {len(new)} new")
    return model, start


def replay_records(pool: list[Record] | None, tools: list[str], per_tool: int, seed: int
                   ) -> list[Record]:
    """Up to ``per_tool`` records per tool of ``tools`` from a checkpoint's demo pool (drawn by
    seed, each record once, pool order kept): the old tools' texts read again when new rows
    are trained (``replay``)."""
    if not per_tool or not pool:
        return []
    order = np.random.default_rng(seed).permutation(len(pool))
    taken, count = set(), dict.fromkeys(tools, 0)
    for i in order.tolist():
        names = {c.tool for c in pool[i].calls} & count.keys()
        if names and any(count[n] < per_tool for n in names):
            taken.add(i)
            for n in names:
                count[n] += 1
    return [pool[i] for i in sorted(taken)]


def demo_records(cfg: TrainConfig, train: list[Record], dev: list[Record] | None,
                 previous: list[Record] | None = None) -> list[Record]:
    """The pool of retrieved demos saved with the checkpoint: the training records minus the
    dev records and minus every record whose question is also a dev question; after
    ``previous`` (the pool of the checkpoint training resumed from), whose records stay."""
    if dev is None:
        held = set(dev_indices(len(train), cfg.dev_fraction, cfg.seed).tolist())
        dev = [r for i, r in enumerate(train) if i in held]
        train = [r for i, r in enumerate(train) if i not in held]
    dev_questions = {question_of(r) for r in dev}
    kept = list(previous or [])
    known = {r.text for r in kept}
    return kept + [r for r in train if question_of(r) not in dev_questions and r.text not in known]


def dev_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """The records held out for dev: the same for training, calibration and dev-set builders."""
    return np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))]


def prepare_data(cfg: TrainConfig, base, tools: list[str], train: list[Record],
                 dev: list[Record] | None, digest: str, verbose: bool = True) -> Data:
    if dev is None:  # hold out whole records, chosen by seed; the order of records is kept
        records = train
        dev_records = dev_indices(len(train), cfg.dev_fraction, cfg.seed)
    else:
        records = train + dev
        dev_records = np.arange(len(train), len(records))
    n_train = len(records) - len(dev_records)
    if cfg.train_prompt:
        records = in_prompt_layout(records, set(dev_records.tolist()), cfg.train_prompt,
                                   cfg.train_prompt_demos, cfg.train_prompt_demo_pick, cfg.seed)
    labelled = label_records(records, base.tokenizer, tools, base.vocab_size, cfg.max_length,
                             cfg.only_toolken_positions)
    if verbose:
        print(f"toolken: labelling: {labelled.report.summary()}")
    seq_of = np.asarray(labelled.record_index)
    dev_seqs = np.nonzero(np.isin(seq_of, dev_records))[0]
    return Data(records, n_train, labelled, dev_seqs, digest)


def split_features(cfg: TrainConfig, base, tools: list[str], data: Data, accelerator=None):
    """(train, dev) views of the cached features: built once, reused while nothing they depend
    on changes; read from disk as they are used."""
    key = F.cache_key(base=base.fingerprint, tokenizer=F.tokenizer_digest(base.tokenizer),
                      data=data.digest, tools=tools, max_length=cfg.max_length,
                      sequences=F.sequences_digest(data.labelled.input_ids, data.labelled.labels),
                      only_toolken_positions=cfg.only_toolken_positions, dtype=str(base.model.dtype),
                      h_dtype=str(F.h_dtype_of(cfg, base)),
                      **({"train_prompt": file_digest(cfg.train_prompt),
                          "train_prompt_demos": cfg.train_prompt_demos} if cfg.train_prompt else {}))
    root = Path(cfg.cache_dir) if cfg.cache_dir else toolken_home() / "features"
    feats = F.build_or_load(root / key, key, base, data.labelled, cfg, accelerator)
    train_seqs = np.setdiff1d(np.arange(len(data.labelled.input_ids)), data.dev_seqs)
    return feats.select(train_seqs), feats.select(data.dev_seqs)
