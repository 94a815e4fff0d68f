"""Calibrating the toolken bias on a dev split (never a test set).

At generation the next token is the argmax of ``[vocab ; toolkens + bias]``. A position
predicts its best toolken exactly when ``bias > vmax - max(toolken logits)``, so sorting the
dev positions by that margin gives toolken precision / recall / F1 for every bias at once.
The bias that maximises dev toolken F1 (the smallest in magnitude among ties) is stored in the
checkpoint and used by ``generate`` unless overridden.
"""

from __future__ import annotations

import torch

from ..core.base import load_base
from ..core.locks import folder_lock
from ..model import ToolkenModel
from .config import apply_overrides, from_dict
from .loss import predict, prf, toolken_counts
from .pipeline import load_records, prepare_data, split_features


def best_bias(z_tool: torch.Tensor, vmax: torch.Tensor, label: torch.Tensor, vocab_size: int) -> tuple[float, dict]:
    """The bias maximising toolken F1, and the F1 curve's best point. z_tool (N, K)."""
    tmax, targ = z_tool.max(dim=-1)
    margin = (vmax - tmax).double()  # the toolken wins iff bias > margin
    correct = (targ + vocab_size == label).double()
    gold = float((label >= vocab_size).sum())
    if gold == 0:
        raise ValueError("the dev split has no toolken labels: nothing to calibrate on")
    m, order = margin.sort()
    tp = correct[order].cumsum(0)
    npred = torch.arange(1, len(m) + 1, dtype=torch.double)
    f1 = 2 * tp / (npred + gold)
    # a threshold between position i and i+1 predicts exactly the first i+1 positions
    nxt = torch.cat([m[1:], m[-1:] + 2.0])
    cand = (m + nxt) / 2
    valid = nxt > m  # ties cannot be split
    f1 = torch.where(valid, f1, torch.full_like(f1, -1.0))
    best = f1.max()
    ties = (f1 == best).nonzero().squeeze(1)
    i = int(ties[cand[ties].abs().argmin()])
    return float(cand[i]), {"f1": float(best), "precision": float(tp[i] / npred[i]),
                            "recall": float(tp[i] / gold)}


def calibrate(directory, overrides: dict | None = None, verbose: bool = True) -> dict:
    """Find and store the dev-F1-maximising bias for the checkpoint in ``directory``."""
    from ..core.checkpoint import load_checkpoint

    training = load_checkpoint(directory)[0].get("training", {}).get("config")
    if not training:
        raise ValueError(f"{directory} records no training config: give the data with overrides")
    values = apply_overrides(training, overrides or {})
    cfg = from_dict({**values, "resume_from": None, "train_only": "all"},
                    where=f"{directory} training config")
    model = ToolkenModel.from_pretrained(directory, dtype=cfg.dtype, device=cfg.device)
    base = model.base if cfg.base_model == training.get("base_model") else load_base(
        cfg.base_model, dtype=cfg.dtype, device=cfg.device)
    train_r, dev_r, digest = load_records(cfg, verbose=verbose)
    data = prepare_data(cfg, base, model.tools, train_r, dev_r, digest, verbose=verbose)
    dev = split_features(cfg, base, model.tools, data)[1].load()  # (N, d): dev splits are small
    if len(dev) == 0:
        raise ValueError("empty dev split: set dev_fraction or dev_file")
    with torch.no_grad():
        z = model.head(dev.h.to(model.base.device)).cpu()
    before = prf(toolken_counts(predict(z, dev.vmax, dev.vargmax, dev.vocab_size, model.toolken_bias),
                                dev.label, dev.vocab_size).tolist())
    bias, after = best_bias(z, dev.vmax, dev.label, dev.vocab_size)
    report = {"bias": bias, "dev_before": before, "dev_after": after,
              "dev_positions": len(dev), "previous_bias": model.toolken_bias}
    model.toolken_bias = bias
    model.extra_config["calibration"] = report
    with folder_lock(directory, "checkpoint folder", wait=False):  # a training run writes it
        model.save_pretrained(directory)
    if verbose:
        print(f"toolken: bias {report['previous_bias']:+.3f} -> {bias:+.3f}; dev toolken F1 "
              f"{before['f1']:.4f} -> {after['f1']:.4f} (P {after['precision']:.3f}, R {after['recall']:.3f})")
    return report
