"""Toolken checkpoints: ``toolken_config.json`` + ``toolken_model.safetensors``, and what
generation needs beside them (a model card ``README.md``, a copy of the tool pack
``toolken_tools.py``, ...).

Like a PEFT adapter folder, a checkpoint never holds the base weights; it records which base
model it was made for (name and weight fingerprint) and refuses any other. Writes are atomic:
the new folder is written beside the old one and swapped in, so a crash mid-save leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
CONFIG_NAME = "toolken_config.json"
WEIGHTS_NAME = "toolken_model.safetensors"
CARD_NAME = "README.md"  # the model card (core/card.py)
PACK_NAME = "toolken_tools.py"  # a copy of the tool pack, run only when the user names it


class CheckpointError(ValueError):
    pass


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toolken")
    except PackageNotFoundError:
        return "unknown"


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict,
                    files: dict[str, str | bytes] | None = None) -> Path:
    """Atomically write (or replace) a checkpoint folder; ``files``: more files (name ->
    text or bytes) written with it, replacing the folder's files of those names."""
    files = files or {}
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        if directory.exists():  # keep what else lives there (training logs), as hard links
            for entry in directory.iterdir():
                if entry.name not in (CONFIG_NAME, WEIGHTS_NAME, *files):
                    _link_copy(entry, tmp / entry.name)
        for name, content in files.items():
            (tmp / name).write_bytes(content.encode() if isinstance(content, str) else content)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                  str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = {"format_version": FORMAT_VERSION, "toolken_version": library_version(), **config}
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        _fsync_dir(tmp)
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _link_copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        os.link(src, dst)


def _fsync_dir(folder: Path) -> None:
    for p in (p for p in folder.iterdir() if p.is_file()):
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def load_checkpoint(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not directory.exists():
        left = sorted(directory.parent.glob(f".{directory.name}.old-*"))
        hint = f" (a save was interrupted: the previous checkpoint is whole in {left[-1]})" if left else ""
        raise CheckpointError(f"checkpoint folder {directory} does not exist{hint}")
    if not cfg_path.exists() or not w_path.exists():
        missing = [p.name for p in (cfg_path, w_path) if not p.exists()]
        raise CheckpointError(f"{directory} is not a toolken checkpoint: missing {missing}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {cfg.get('format_version')!r}; "
                              f"this toolken reads {FORMAT_VERSION}")
    tensors = load_file(str(w_path))
    k = len(cfg.get("tools", []))
    if "weight" not in tensors or tensors["weight"].shape[0] != k:
        raise CheckpointError(f"{w_path}: weight rows do not match the {k} tools in {CONFIG_NAME}")
    return cfg, tensors


def pack_argument(tools: str | None, directory: str | Path) -> str | None:
    """The tool pack the user named; ``"checkpoint"`` names the copy saved in the checkpoint
    folder (``toolken_tools.py``). Running it is the user's choice, never the checkpoint's."""
    if tools != "checkpoint":
        return tools
    copy = Path(directory) / PACK_NAME
    if not copy.is_file():
        raise CheckpointError(f"--tools checkpoint: {directory} holds no copy of its tool pack "
                              f"({PACK_NAME}; it was saved without a pack file): give --tools PACK.py")
    return str(copy)


def check_base(cfg: dict, base, where: str) -> None:
    """Refuse a checkpoint made for another base model, saying which."""
    problems = []
    if cfg.get("base_fingerprint") != base.fingerprint:
        problems.append(f"weights fingerprint {cfg.get('base_fingerprint')} != {base.fingerprint}")
    if cfg.get("hidden_size") != base.hidden_size:
        problems.append(f"hidden size {cfg.get('hidden_size')} != {base.hidden_size}")
    if cfg.get("vocab_size") != base.vocab_size:
        problems.append(f"vocabulary {cfg.get('vocab_size')} != {base.vocab_size}")
    if problems:
        raise CheckpointError(
            f"{where} was made for base model {cfg.get('base_model')!r}, not for "
            f"{base.name!r}: " + "; ".join(problems))
