"""Fitting the description -> toolken map (``toolken.core.predictor``) on the trained rows.

Two ways, both on the tools a checkpoint has trained:

* ``fit_ridge``: ridge regression of the trained rows W (K, d) on the standardised description
  features X (K, f), in the dual form (K << f): ``W^T = X^T (X X^T + alpha I)^{-1} (Y - Ybar)``,
  with alpha chosen by exact leave-one-out error over a grid.
* ``fit_loss``: end to end on the cached features, so that predicted rows minimise the exact
  toolken loss (``toolken.training.loss``). At every step a random share of the tools is
  "unseen": their rows come from the map, the others keep their trained rows, as when a new
  tool joins trained ones; the loss is over every position of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.predictor import FEATURES, GUARD_SHARE, ToolkenPredictor, describe, guard_sample, reading_text
from .loss import toolken_loss

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def standardise(predictor: ToolkenPredictor, x: torch.Tensor) -> torch.Tensor:
    predictor.mu.copy_(x.mean(0))
    predictor.sigma.copy_(x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(x[0]))
    return (x - predictor.mu) / predictor.sigma


def ridge_loo(k: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float]:
    """Dual coefficients (n, d) for the centred kernel k = Xc Xc^T (n, n) and targets y (n, d),
    and the exact leave-one-out mean squared error of ridge with an unpenalised intercept:
    hat matrix H = 11^T / n + K (K + alpha I)^{-1}, residual_i / (1 - H_ii)."""
    n = len(k)
    inv = torch.linalg.inv(k + alpha * torch.eye(n, dtype=k.dtype))
    coef = inv @ (y - y.mean(0))
    hat = torch.full((n, n), 1.0 / n, dtype=k.dtype) + k @ inv
    resid = (y - hat @ y) / (1 - torch.diagonal(hat))[:, None]
    return coef, float(resid.pow(2).sum(1).mean())


@torch.no_grad()
def fit_ridge(x: torch.Tensor, rows: torch.Tensor, features=FEATURES,
              alphas=ALPHAS) -> ToolkenPredictor:
    """A linear predictor fitted to map description features x (K, f) onto trained rows (K, d)."""
    if len(x) != len(rows) or len(x) < 2:
        raise ValueError(f"fit_ridge needs the same number (>= 2) of feature vectors and rows, "
                         f"got {len(x)} and {len(rows)}")
    p = ToolkenPredictor(x.shape[1], rows.shape[1], tuple(features))
    xs = standardise(p, x.double().float()).double()
    y = rows.double()
    ybar = y.mean(0)
    k = xs @ xs.T  # (K, K)
    scored = [(ridge_loo(k, y, a), a) for a in alphas]
    (coef, loo), alpha = min(scored, key=lambda s: s[0][1])
    p.linear.weight.copy_((xs.T @ coef).T.float())  # (d, f)
    p.linear.bias.copy_(ybar.float())
    p.meta = {"method": "ridge", "alpha": alpha, "loo_mse": loo, "fitted_tools": len(x)}
    return p


SCALES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)  # prototype scales tried, times the least-squares slope (0.125-0.5 too: lower unseen accuracy, RESULTS.md)


@torch.no_grad()
def fit_prototype(x: torch.Tensor, rows: torch.Tensor, feats, layout: str, scales=SCALES,
                  positions: int = 50_000, masks: int = 4, seed: int = 0) -> ToolkenPredictor:
    """Rows as prototypes: ``w = mean(rows) + c (x - mean(x))`` where x (K, d) is the base's
    last hidden state over each tool's text in ``layout`` (the prompt its toolken fires in), so
    a new row points the way its tool's questions will. c is the least-squares slope times the
    scale whose rows give the lowest exact loss on ``feats`` (up to ``positions`` of them) when
    a random quarter of the tools take predicted rows (``masks`` draws), the rest trained ones."""
    g = torch.Generator().manual_seed(seed)
    xc, wc = x - x.mean(0), rows - rows.mean(0)
    slope = float((xc * wc).sum() / (xc * xc).sum().clamp_min(1e-12))
    idx = torch.randperm(len(feats), generator=g)[:positions]
    h, lse, zt, label = feats.h[idx].float(), feats.lse[idx], feats.zt[idx], feats.label[idx]
    draws = [torch.rand(len(x), generator=g) < 0.25 for _ in range(masks)]
    scored = []
    for s in scales:
        pred = rows.mean(0) + s * slope * xc
        loss = sum(float(toolken_loss(h @ torch.where(m[:, None], pred, rows).T, lse, zt, label,
                                      feats.vocab_size).mean()) for m in draws) / masks
        scored.append((loss, s))
    loss, best = min(scored)
    p = ToolkenPredictor(x.shape[1], rows.shape[1], ("last",), layout=layout)
    p.mu.copy_(x.mean(0))
    p.linear.weight.copy_(torch.eye(x.shape[1]) * best * slope)
    p.linear.bias.copy_(rows.mean(0))
    p.meta = {"method": "prototype", "scale": best * slope, "scale_losses": dict((s, l) for l, s in scored),
              "fitted_tools": len(x)}
    return p


@dataclass(frozen=True)
class LossFit:
    """Options of ``fit_loss``."""

    epochs: int = 3
    batch_size: int = 1024  # positions per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    predicted_fraction: float = 0.25  # share of the tools whose rows come from the map each step
    seed: int = 0


def fit_loss(predictor: ToolkenPredictor, x: torch.Tensor, rows: torch.Tensor, feats,
             options: LossFit | None = None) -> list[float]:
    """Train the predictor's map end to end on cached features ``feats`` whose toolken labels
    are ``vocab_size + i`` for tool i of x (K, f) / rows (K, d). Returns the per-epoch losses.

    Each step draws which tools are predicted (``predicted_fraction``, at least one); their
    rows are ``predictor(x)``, the rest stay ``rows`` (frozen)."""
    o = options or LossFit()
    epochs, batch_size, predicted_fraction = o.epochs, o.batch_size, o.predicted_fraction
    lr, weight_decay, seed = o.lr, o.weight_decay, o.seed
    g = torch.Generator().manual_seed(seed)
    rows = rows.detach().float()
    opt = torch.optim.AdamW(predictor.linear.parameters(), lr=lr, weight_decay=weight_decay)
    n, K = len(feats), len(x)
    steps = math.ceil(n / batch_size)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            mask = torch.rand(K, generator=g) < predicted_fraction
            mask[torch.randint(K, (1,), generator=g)] = True
            w = torch.where(mask[:, None], predictor(x), rows)  # (K, d)
            z = feats.h[idx].float() @ w.T  # (B, K)
            loss = toolken_loss(z, feats.lse[idx], feats.zt[idx], feats.label[idx],
                                feats.vocab_size).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
    predictor.meta = {**predictor.meta, "method": f"{predictor.meta.get('method', 'zero')}+loss",
                      "loss_epochs": epochs, "loss_lr": lr, "predicted_fraction": predicted_fraction,
                      "train_loss": losses[-1] if losses else None}
    return losses


def checkpoint_tools(model, pack: str | None = None) -> list:
    """The model's tools as objects whose text the predictor reads: from ``pack`` (or the pack
    its recipe names: demos included), else from the checkpoint's manifest, else bare names."""
    from ..tools.registry import load_pack

    cfg = model.extra_config.get("training", {}).get("config", {})
    pack = pack or (cfg.get("tools") if isinstance(cfg.get("tools"), str) else None)
    if pack:
        registry = load_pack(pack, **model.recipe_tool_options())
        missing = [n for n in model.tools if n not in registry]
        if missing:
            raise ValueError(f"the pack {pack} lacks {len(missing)} of the checkpoint's tools: "
                             f"{', '.join(missing[:10])}")
        return [registry[n] for n in model.tools]
    return list(model.manifest) if model.manifest else list(model.tools)


def fit_checkpoint(directory, method: str = "ridge", pack: str | None = None,
                   layout: str = "{text}", loss: LossFit | None = None, *, dtype=None,
                   device=None, guard_share: float | None = GUARD_SHARE) -> ToolkenPredictor:
    """Fit the predictor on a checkpoint's trained rows and save it into the checkpoint.

    ``ridge``: onto the rows from the tool texts' features; ``prototype``: rows that point
    the way of the tool text read in ``layout``, scaled by the exact loss on the checkpoint's
    training features (the recipe stored in it; its feature cache is reused when present).
    ``loss`` (a ``LossFit``): then train the map end to end on those features. Where the
    training features are read (prototype, loss), the predictor keeps a guard of them
    (``ToolkenPredictor.set_guard``; ``guard_share`` None: none)."""
    from ..model import ToolkenModel

    if method not in ("ridge", "prototype"):
        raise ValueError(f"method={method!r} is not one of ['ridge', 'prototype']")
    model = ToolkenModel.from_pretrained(directory, dtype=dtype, device=device)
    tools = checkpoint_tools(model, pack)
    rows = model.head.weight.detach().float().cpu()
    feats = _training_features(model, directory) if method == "prototype" or loss else None
    if method == "ridge":
        x = describe(model.base, [reading_text(t, layout) for t in tools])
        p = fit_ridge(x, rows)
        p.layout = layout
    else:
        x = describe(model.base, [reading_text(t, layout) for t in tools], ("last",))
        p = fit_prototype(x, rows, feats, layout)
    if loss is not None:
        fit_loss(p, x, rows, feats, loss)
    if feats is not None and guard_share is not None:
        p.set_guard(*guard_sample(feats.h, feats.vmax, feats.label, feats.vocab_size), share=guard_share)
    model.predictor = p
    p.save(directory, model.base)
    return p


def _training_features(model, directory):
    from .config import from_dict
    from .pipeline import load_records, prepare_data, split_features

    stored = model.extra_config.get("training", {}).get("config")
    if not stored:
        raise ValueError(f"{directory} stores no training recipe: method 'loss' needs its "
                         f"training data (use method 'ridge')")
    cfg = from_dict(stored, f"{directory}'s training config")
    train, dev, digest = load_records(cfg, verbose=False)
    data = prepare_data(cfg, model.base, model.tools, train, dev, digest, verbose=False)
    return split_features(cfg, model.base, model.tools, data)[0].load()  # in memory


def add_tools_to_checkpoint(directory, pack: str, out, init: str = "predicted", *, dtype=None,
                            device=None, tool_options: dict | None = None, guard: bool = True):
    """A new checkpoint in ``out``: the checkpoint's rows, then one row per tool ``pack`` adds
    (the pack lists the checkpoint's tools first, in order; ``tool_options`` go to its
    ``build()``), initialised by ``init``; the predictor and the tools' manifest come along.
    Returns the new model."""
    from ..model import ToolkenModel
    from ..tools.registry import load_pack

    model = ToolkenModel.from_pretrained(directory, dtype=dtype, device=device)
    registry = load_pack(pack, **(tool_options or {}))
    k = len(model.tools)
    if registry.names[:k] != model.tools:
        raise ValueError(f"the pack {pack} must list the {k} tools of {directory} first and in "
                         f"the same order (it starts {registry.names[:3]}, the checkpoint "
                         f"{model.tools[:3]})")
    new = list(registry)[k:]
    if not new:
        raise ValueError(f"the pack {pack} adds no tool to the {k} of {directory}")
    model.add_tools(new, init=init, guard=guard)
    model.manifest = registry.manifest()
    cfg = model.extra_config.setdefault("training", {}).setdefault("config", {})
    if isinstance(cfg.get("tools"), str):
        cfg["tools"] = pack
        if tool_options is not None:
            cfg["tool_options"] = dict(tool_options)
    model.extra_config["added_tools"] = {"from": str(directory), "init": init,
                                         "guard": bool(guard and init == "predicted"
                                                       and model.predictor.has_guard),
                                         "tools": [t.name for t in new]}
    model.save_pretrained(out)
    return model
