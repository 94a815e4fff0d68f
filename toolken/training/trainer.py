"""Training toolkens: label the data, cache the frozen features once, fit the head on the cache.

The whole loop is in ``train`` below, in one place. Only the toolken rows are trained
(AdamW over the head's parameters; with ``train_only=new`` over the new rows alone, so the
optimizer never sees the old ones). With accelerate, the feature pass is split across
processes and the head is trained in DDP: every process takes its share of each global
batch, and the loss is scaled so that the averaged gradient is that of the global batch —
one process and several give the same toolkens.

Outputs in ``output_dir``: the best epoch's checkpoint folder (``ToolkenModel.save_pretrained``:
config, weights, generation config, demo pool, a copy of the tool pack when the recipe names a
pack file, and the model card ``README.md`` with the data, dev figures and command) and
``training/`` (``metrics.jsonl``, ``loss_curve.png``, ``state.pt`` for resuming an interrupted run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import features as F
from ..core.base import load_base, resolve_device
from ..core.checkpoint import recover
from ..core.locks import folder_lock
from .config import TrainConfig, check_paths, to_dict
from .loss import predict, prf, toolken_counts, toolken_loss
from .pipeline import demo_records, load_records, prepare_data, prepare_model, replay_records, split_features
from ..model import ToolkenModel
from .stream import EpochStream


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainResult:
    model: ToolkenModel
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    output_dir: Path | None = None


class TrainableRows(nn.Module):
    """The trained part of the head: rows ``start:`` (all rows when start == 0).

    Rows before ``start`` are a frozen buffer, so the optimizer never sees them and they stay
    bit-identical. This module is what DDP wraps.
    """

    def __init__(self, model: ToolkenModel, start: int):
        super().__init__()
        head = model.head
        self.softcap = head.softcap
        self.register_buffer("frozen_w", head.weight.detach()[:start].clone())
        self.weight = nn.Parameter(head.weight.detach()[start:].clone())  # (K_new, d)
        self.has_bias = head.bias is not None
        if self.has_bias:
            self.register_buffer("frozen_b", head.bias.detach()[:start].clone())
            self.bias = nn.Parameter(head.bias.detach()[start:].clone())
        self.start = start

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N, K)
        w = torch.cat([self.frozen_w, self.weight])
        b = torch.cat([self.frozen_b, self.bias]) if self.has_bias else None
        z = torch.nn.functional.linear(h.float(), w, b)
        return self.softcap * torch.tanh(z / self.softcap) if self.softcap else z

    @torch.no_grad()
    def write_back(self, model: ToolkenModel) -> None:
        model.head.weight.data[self.start:] = self.weight.data.to(model.head.weight.device)
        if self.has_bias:
            model.head.bias.data[self.start:] = self.bias.data.to(model.head.bias.device)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # never needs the network unless set up
    cpu = resolve_device(cfg.device) == "cpu"
    return Accelerator(cpu=cpu, log_with="wandb" if cfg.report_to == "wandb" else None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def scheduler_for(cfg: TrainConfig, optimizer, total_steps: int):
    warm = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "linear":
            return max(0.0, 1 - t)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(module: nn.Module, feats: F.Features | F.FeatureView, device, chunk: int = 8192,
             bias: float = 0.0) -> dict:
    """Dev loss and toolken precision / recall / F1 (argmax over vocab + toolkens); a cache
    view is read a chunk at a time."""
    total, counts = torch.zeros((), device=device), torch.zeros(3, dtype=torch.long, device=device)
    for s in range(0, len(feats), chunk):
        f = feats.read(s, s + chunk) if isinstance(feats, F.FeatureView) else feats[s:s + chunk]
        z = module(f.h.to(device))
        label = f.label.to(device)
        total += toolken_loss(z, f.lse.to(device), f.zt.to(device), label, f.vocab_size).sum()
        pred = predict(z, f.vmax.to(device), f.vargmax.to(device), f.vocab_size, bias)
        counts += toolken_counts(pred, label, f.vocab_size)
    n = max(1, len(feats))
    return {"loss": float(total) / n, **prf(counts.tolist()), "toolken_labels": int(counts[2])}


def train(cfg: TrainConfig, accelerator=None) -> TrainResult:
    """Train toolkens by ``cfg``. The main process holds ``output_dir``'s lock for the whole
    run: a second run into the same folder is refused, naming this one."""
    check_paths(cfg)  # before any model is loaded
    accelerator = accelerator or make_accelerator(cfg)
    main = accelerator.is_main_process
    with folder_lock(cfg.output_dir, "output_dir", wait=False) if main else nullcontext():
        if main:
            for line in recover(cfg.output_dir):
                print(f"toolken: {line}")
        accelerator.wait_for_everyone()
        return _train(cfg, accelerator)


def _train(cfg: TrainConfig, accelerator) -> TrainResult:
    """Label the data, build (or reuse) the feature cache, and fit the toolken rows on it."""
    main = accelerator.is_main_process
    seed_everything(cfg.seed)
    base = load_base(cfg.base_model, dtype=cfg.dtype, device=str(accelerator.device))
    train_records, dev_records, digest = load_records(cfg, verbose=main)
    model, start = prepare_model(cfg, base, train_records, verbose=main)
    if cfg.replay:  # the checkpoint's own texts, read again with the new ones
        new_texts = {r.text for r in train_records}
        again = [r for r in replay_records(model.demo_records, model.tools, cfg.replay, cfg.seed)
                 if r.text not in new_texts]
        if main:
            print(f"toolken: replay: {len(again)} texts of {cfg.resume_from} read with the new data")
        train_records = train_records + again
        digest = hashlib.sha256((digest + "replay" + "".join(r.text for r in again)).encode()).hexdigest()[:16]
    if isinstance(cfg.tools, str):  # the pack's code travels with the checkpoint (not imported from it)
        model.remember_pack(cfg.tools, cfg.tool_options)
    data = prepare_data(cfg, base, model.tools, train_records, dev_records, digest, verbose=main)
    rep = data.labelled.report
    if not data.labelled.input_ids or rep.toolken_labels + rep.vocab_labels == 0:
        raise TrainingError(f"no record could be labelled (max_length={cfg.max_length} tokens, "
                            f"only_toolken_positions={cfg.only_toolken_positions}):\n{rep.summary()}")
    model.demo_records = demo_records(cfg, train_records, dev_records,
                                      model.demo_records if cfg.resume_from else None)
    train_f, dev_f = split_features(cfg, base, model.tools, data, accelerator)
    return fit(cfg, model, start, train_f, dev_f, accelerator, run=run_record(digest))


def fit(cfg: TrainConfig, model: ToolkenModel, start: int, train_f: F.FeatureView,
        dev_f: F.FeatureView, accelerator=None, run: dict | None = None) -> TrainResult:
    """The training loop on a feature cache: rows ``start:`` of ``model``'s head are trained.
    ``run``: what the checkpoint records about the run (default ``run_record()``).

    Batches stream from the cache (``stream.EpochStream``): at most ``feature_memory_mb`` of
    it is in memory per process; a train split that fits is read once (the in-memory loop).
    """
    accelerator = accelerator or make_accelerator(cfg)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    run = run or run_record()
    out = Path(cfg.output_dir)
    logdir = out / "training"
    if len(train_f) == 0:
        raise TrainingError("no labelled training positions: the training set is empty after labelling")
    stream = EpochStream(train_f, cfg.feature_memory_mb * 2**20, cfg.batch_size, cfg.seed, rank, world)
    if main:
        model.print_trainable_parameters()
        print(f"toolken: {len(train_f):,} training positions "
              f"({train_f.toolken_labels():,} toolken labels), {len(dev_f):,} dev positions, "
              f"{len(model.tools)} tools, rows {start}.. trained; features "
              f"{'in memory' if stream.fits else f'streamed in blocks of {stream.block:,} rows'} "
              f"(h {F.dtype_name(train_f.h_dtype)}, {len(train_f) * train_f.row_bytes / 2**20:,.0f} MB)")

    device = accelerator.device
    rows = TrainableRows(model, start).to(device)
    optimizer = torch.optim.AdamW(rows.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = stream.steps()
    scheduler = scheduler_for(cfg, optimizer, steps_per_epoch * cfg.epochs)
    state_path = logdir / "state.pt"
    history: list[dict] = []
    best: dict | None = None
    first_epoch = 0
    if cfg.resume and state_path.exists():
        state = load_state(state_path)
        if state["config"] != to_dict(cfg):
            raise TrainingError(f"{state_path} belongs to a run with another config; "
                                f"use another output_dir or resume=false")
        rows.load_state_dict(state["rows"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, first_epoch = state["history"], state["best"], state["epoch"] + 1
        if main:
            print(f"toolken: resuming {out} after epoch {first_epoch}")
    ddp_rows, optimizer = accelerator.prepare(rows, optimizer)
    if cfg.report_to != "none":
        accelerator.init_trackers(cfg.wandb_project, config=to_dict(cfg))
    V = train_f.vocab_size
    read0 = (0, 0.0)  # bytes and seconds the read-ahead thread had spent at the last record
    curve: list[tuple[float, float]] = [p for e in history for p in e.get("curve", [])]
    for epoch in range(first_epoch, cfg.epochs):
        bad = torch.zeros((), dtype=torch.bool, device=device)
        running, seen = torch.zeros((), device=device), 0
        batches = stream.batches(epoch, read_ahead_next=epoch + 1 < cfg.epochs)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (main and cfg.progress))
        epoch_curve = []
        t_epoch = time.perf_counter()
        for step, (mine, n_global) in enumerate(bar):  # this process's share of the global batch
            z = ddp_rows(mine.h.to(device))  # (n, K), fp32
            per = toolken_loss(z, mine.lse.to(device), mine.zt.to(device), mine.label.to(device), V)
            loss = per.sum() * (world / n_global)  # DDP averages: the global-batch mean
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bad |= ~torch.isfinite(loss.detach())
            running += per.detach().sum()
            seen += len(mine)
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps_per_epoch:
                avg = float(running) / max(1, seen)  # one host sync per log interval
                epoch_curve.append((epoch + (step + 1) / steps_per_epoch, avg))
                bar.set_postfix(loss=f"{avg:.4f}")
                running.zero_()
                seen = 0
        if bool(bad) or not all(math.isfinite(c[1]) for c in epoch_curve):
            raise TrainingError(
                f"the loss became NaN/inf in epoch {epoch + 1}; training stopped. The last good "
                f"checkpoint in {out} is untouched. Try a smaller lr (now {cfg.lr}).")
        epoch_seconds = time.perf_counter() - t_epoch  # the steps only (synced by the last log)
        curve += epoch_curve
        dev = evaluate(rows, dev_f, device) if len(dev_f) else None
        record = {"epoch": epoch + 1, "train_loss": epoch_curve[-1][1], "lr": scheduler.get_last_lr()[0],
                  "epoch_seconds": epoch_seconds, "read_mb": (stream.read_bytes - read0[0]) / 2**20,
                  "read_seconds": stream.read_seconds - read0[1],  # since the last epoch's record
                  "curve": epoch_curve, **({f"dev_{k}": v for k, v in dev.items()} if dev else {})}
        history.append(record)
        read0 = (stream.read_bytes, stream.read_seconds)
        improved = best is None or dev is None or (dev["f1"], -dev["loss"]) > (best["dev_f1"], -best["dev_loss"])
        if improved:
            best = {k: v for k, v in record.items() if k != "curve"}
        if main:
            summary = " ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float))
            print(f"epoch {epoch + 1}: {summary}{'  (best)' if improved else ''}")
            if improved:
                rows.write_back(model)
                model.extra_config = {"training": {"best": best, "config": to_dict(cfg), **run}}
                model.save_pretrained(out)
            _save_state(state_path, rows, optimizer, scheduler, cfg, history, best, epoch)
            _write_logs(logdir, history, curve)
            if cfg.report_to != "none":
                accelerator.log({k: v for k, v in record.items() if k != "curve"}, step=epoch + 1)
        accelerator.wait_for_everyone()
    stream.close()
    if cfg.report_to != "none":
        accelerator.end_training()
    final = (ToolkenModel.from_pretrained(out, base=model.base) if (out / "toolken_config.json").exists()
             else model)
    return TrainResult(model=final, history=history, best=best, output_dir=out)


def run_record(data_digest: str | None = None) -> dict:
    """What the model card says about the run: the command, where and when, the data's digest."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "toolken":  # the console script, not its venv path
        argv[0] = "toolken"
    record = {"command": shlex.join(argv), "working_directory": os.getcwd(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return record | ({"data_digest": data_digest} if data_digest else {})


def load_state(path: Path) -> dict:
    """The resume state, read with ``weights_only=True``: tensors and plain Python values
    only, so a crafted file cannot run code (``torch.load`` of a full pickle would)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — unpickling errors come in many types
        raise TrainingError(f"{path}: not a resume state this toolken can read safely "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); delete it "
                            f"or set resume=false to start over") from None
    need = {"rows", "optimizer", "scheduler", "config", "history", "best", "epoch"}
    if not isinstance(state, dict) or not need <= set(state):
        raise TrainingError(f"{path}: a resume state is a mapping with keys {sorted(need)}")
    return state


def _save_state(path: Path, rows, optimizer, scheduler, cfg, history, best, epoch) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"rows": rows.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": to_dict(cfg), "history": history,
                "best": best, "epoch": epoch}, tmp)
    os.replace(tmp, path)


def _write_logs(logdir: Path, history: list[dict], curve: list[tuple[float, float]]) -> None:
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "metrics.jsonl.tmp", "w") as f:
        for rec in history:
            f.write(json.dumps({k: v for k, v in rec.items() if k != "curve"}) + "\n")
    os.replace(logdir / "metrics.jsonl.tmp", logdir / "metrics.jsonl")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if curve:
        ax.plot(*zip(*curve), label="train loss")
    dev = [(r["epoch"], r["dev_loss"]) for r in history if "dev_loss" in r]
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy over [vocab ; toolkens]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(logdir / "loss_curve.png", dpi=100)
    plt.close(fig)
