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
    recover(directory)
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


def recover(directory: str | Path) -> list[str]:
    """Finish what a save killed between its two renames left (the folder gone, the previous
    one whole in ``.NAME.old-*``): put the newest previous folder back, so that its
    checkpoint and its ``training/state.pt`` are found again; then delete the leftover
    ``.NAME.old-*`` / ``.NAME.tmp-*`` folders. Returns what it did, one line each.

    Only one process saves a folder at a time (the trainer holds ``output_dir``'s lock).
    """
    directory = Path(directory)
    if not directory.parent.is_dir():
        return []
    old = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    done = []
    if not directory.exists() and old:
        os.replace(old[-1], directory)
        done.append(f"restored {directory} from {old[-1].name} (a save had been interrupted)")
        old = old[:-1]
    for leftover in old + sorted(directory.parent.glob(f".{directory.name}.tmp-*")):
        shutil.rmtree(leftover, ignore_errors=True)
        done.append(f"removed the leftover {leftover.name}")
    return done


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
    """Read and check a checkpoint folder: every field of its config has the type it must
    have, and every weight is finite; any problem is a ``CheckpointError`` naming the file."""
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
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    check_config(cfg, cfg_path)
    try:
        tensors = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 — safetensors raises its own types for bad files
        raise CheckpointError(f"{w_path}: not a readable safetensors file "
                              f"({type(e).__name__}: {e})") from None
    k = len(cfg["tools"])
    expected = {"weight", "bias"} if cfg.get("bias", False) else {"weight"}
    if set(tensors) != expected:
        raise CheckpointError(f"{w_path}: holds tensors {sorted(tensors)}; expected weight"
                              f"{' and bias' if cfg.get('bias') else ''} ({CONFIG_NAME} bias="
                              f"{cfg.get('bias', False)})")
    w = tensors["weight"]
    if w.dim() != 2 or w.shape[0] != k or w.shape[1] != cfg["hidden_size"]:
        raise CheckpointError(f"{w_path}: weight has shape {tuple(w.shape)}; the {k} tools and "
                              f"hidden_size {cfg['hidden_size']} in {CONFIG_NAME} need ({k}, "
                              f"{cfg['hidden_size']})")
    if "bias" in tensors and tuple(tensors["bias"].shape) != (k,):
        raise CheckpointError(f"{w_path}: bias has shape {tuple(tensors['bias'].shape)}, not ({k},)")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise CheckpointError(f"{w_path}: tensor {name!r} holds NaN/inf values (first at "
                                  f"index {bad}); refusing to load it")
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


# field -> (check, what it must be); fields not listed are free (the training recipe, ...)
_FIELDS = {
    "base_model": (lambda v: isinstance(v, str) and v != "", "a non-empty string (the base model id)"),
    "tools": (lambda v: isinstance(v, list) and all(isinstance(t, str) and t for t in v),
              "a list of tool names (strings)"),
    "hidden_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "vocab_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "base_fingerprint": (lambda v: isinstance(v, str), "a string"),
}
_OPTIONAL = {
    "bias": (lambda v: isinstance(v, bool), "true or false"),
    "softcap": (lambda v: v is None or _is_number(v) and 0 < v < float("inf"), "null or a positive number"),
    "toolken_bias": (lambda v: _is_number(v) and abs(v) < float("inf"), "a finite number"),
    "manifest": (lambda v: v is None or isinstance(v, list) and all(isinstance(e, dict) for e in v),
                 "null or a list of objects"),
    "base_revision": (lambda v: v is None or isinstance(v, str) and v != "", "null or a hub commit"),
    "tool_pack": (lambda v: v is None or isinstance(v, dict), "null or an object (where the "
                  "pack copied as toolken_tools.py came from)"),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config(cfg, where: str | Path) -> None:
    """A checkpoint config's fields are of the types they must be (the config is data: it
    may come from anyone)."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: must be a JSON object, got a {type(cfg).__name__}")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {cfg.get('format_version')!r}; "
                              f"this toolken reads {FORMAT_VERSION}")
    for key, (ok, must) in _FIELDS.items():
        if key not in cfg:
            raise CheckpointError(f"{where}: field {key!r} is missing; it must be {must}")
        if not ok(cfg[key]):
            raise CheckpointError(f"{where}: field {key!r} is {cfg[key]!r}; it must be {must}")
    for key, (ok, must) in _OPTIONAL.items():
        if key in cfg and not ok(cfg[key]):
            raise CheckpointError(f"{where}: field {key!r} is {cfg[key]!r}; it must be {must}")
    if len(set(cfg["tools"])) != len(cfg["tools"]):
        raise CheckpointError(f"{where}: field 'tools' repeats a name: {cfg['tools']}")


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
