"""Toolkens predicted from tool descriptions: a row for a tool that was never trained.

As in Chain-of-Tools (Wu et al., 2025), the frozen base model reads each tool's text (its
signature ``name(args): description`` and, where it has them, its demos) and a small learned
map turns what it read into the tool's toolken row::

    x = [mean_t h_t ; h_last ; mean_t e_t]         (3d,)  final hidden states h, input embeddings e
    w = W (x - mu) / sigma + b                      (d,)   the predicted row (linear map)

The map is fitted on the rows of tools that were trained (``toolken.training.predict``:
ridge regression onto the trained rows, or end to end on the exact toolken loss) and saved
beside a checkpoint as ``toolken_predictor.safetensors`` + ``toolken_predictor.json`` (no base
weights, like the head itself). ``ToolkenModel.add_tools(tools, init="predicted")`` uses it.

A predicted row fires on the trained tools' questions about as readily as on its own. The
predictor can keep a *guard*: a sample of the checkpoint's training positions at its
toolkens (hidden state, best vocabulary logit). A new row then gets its own bias, the least
that lets it win on at most ``guard_share`` of those positions (``guard_offsets``), so the
trained tools keep their questions (RESULTS.md: on KAMEL folds, seen relations lose 0.016
instead of 0.053, and unseen relations score 0.353 instead of 0.368).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREDICTOR_WEIGHTS = "toolken_predictor.safetensors"
PREDICTOR_CONFIG = "toolken_predictor.json"
FEATURES = ("mean", "last", "embed")
SIGNATURE = re.compile(r"^\w+\([^)]*\)\s*:")  # a description that starts with its signature
MAX_DEMOS = 2  # demos read after the description (the first ones the tool lists)
GUARD_SHARE = 0.0002  # a new row may win on this share of the guard's positions (KAMEL folds)
GUARD_POSITIONS = 8192  # training positions the guard keeps (fp16 hidden states)


class PredictorError(ValueError):
    pass


def tool_text(tool) -> str:
    """The text a tool's row is predicted from: ``name(args): description`` (the description
    alone when it already starts with a signature, as KAMEL's do), then up to two demos.
    ``tool`` is a ``Tool``, a manifest dict, or a bare name."""
    if isinstance(tool, str):
        return tool
    if isinstance(tool, dict):
        name, desc = tool["name"], tool.get("description", "")
        params, demos = (tool.get("parameters") or {}).get("x-order", []), tool.get("demos", [])
    else:
        name, desc, params, demos = tool.name, tool.description, tool.param_names, tool.demos
    desc = " ".join(str(desc).split())
    head = desc if SIGNATURE.match(desc) else f"{name}({', '.join(params)}): {desc}".rstrip(": ")
    return "\n".join([head, *[str(d) for d in list(demos)[:MAX_DEMOS]]])


def reading_text(tool, layout: str = "{text}") -> str:
    """The tool's text laid out as the predictor reads it: ``layout`` with ``{text}`` (the
    ``tool_text``) or ``{description}`` (its first line without the signature), e.g. the
    prompt a toolken fires in: ``"Question: {description}\nAnswer: The answer is"``."""
    text = tool_text(tool)
    first = text.split("\n")[0]
    description = first.split(":", 1)[1].strip() if SIGNATURE.match(first) else first
    try:
        return layout.format(text=text, description=description)
    except (KeyError, IndexError) as e:
        raise PredictorError(f"predictor layout {layout!r}: only {{text}} and {{description}} "
                             f"may be filled in ({e})") from None


@torch.no_grad()
def describe(base, texts: list[str], features: tuple[str, ...] = FEATURES) -> torch.Tensor:
    """(n, len(features) * d) fp32: what the frozen base reads in each tool text."""
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise PredictorError(f"predictor features {list(features)}: each must be one of {list(FEATURES)}")
    decoder = base.model.base_model
    emb = base.model.get_input_embeddings()
    out = []
    for text in texts:
        ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise PredictorError(f"tool text {text!r} has no tokens to predict a row from")
        ids = torch.tensor([ids], device=base.device)
        h = decoder(input_ids=ids).last_hidden_state[0].float()  # (T, d)
        parts = {"mean": h.mean(0), "last": h[-1], "embed": emb(ids)[0].float().mean(0)}
        out.append(torch.cat([parts[f] for f in features]).cpu())
    return torch.stack(out)


class ToolkenPredictor(nn.Module):
    """A linear map from standardised description features (n, f) to rows (n, d)."""

    def __init__(self, in_features: int, hidden_size: int, features: tuple[str, ...] = FEATURES,
                 meta: dict | None = None, layout: str = "{text}"):
        super().__init__()
        self.features = tuple(features)
        self.layout = layout  # how the tool's text is laid out for reading (reading_text)
        self.register_buffer("mu", torch.zeros(in_features))  # (f,)
        self.register_buffer("sigma", torch.ones(in_features))  # (f,)
        self.linear = nn.Linear(in_features, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.meta = dict(meta or {})  # how it was fitted (method, tools, loss ...)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, f) -> (n, d)
        return self.linear((x - self.mu) / self.sigma)

    @property
    def has_guard(self) -> bool:
        return hasattr(self, "guard_h")

    @torch.no_grad()
    def set_guard(self, h: torch.Tensor, vmax: torch.Tensor, share: float = GUARD_SHARE) -> None:
        """Keep training positions at the checkpoint's toolkens: hidden states h (N, d) and
        the best vocabulary logit there vmax (N,); new rows may win on ``share`` of them."""
        if h.dim() != 2 or h.shape[1] != self.linear.out_features or vmax.shape != h.shape[:1]:
            raise PredictorError(f"guard: h must be (N, {self.linear.out_features}) and vmax (N,), "
                                 f"got {tuple(h.shape)} and {tuple(vmax.shape)}")
        if len(h) == 0:
            raise PredictorError("guard: needs at least one training position")
        _check_share(share)
        self.register_buffer("guard_h", h.detach().to(torch.float16).cpu().contiguous())
        self.register_buffer("guard_vmax", vmax.detach().float().cpu().contiguous())
        self.meta = {**self.meta, "guard_share": float(share)}

    @torch.no_grad()
    def guard_offsets(self, rows: torch.Tensor, head, toolken_bias: float = 0.0,
                      share: float | None = None) -> torch.Tensor:
        """(n,) biases <= 0 for new rows (n, d) beside ``head``'s trained rows: each the least
        that keeps its row from winning on more than ``share`` (default: the guard's) of the
        guard's positions over the vocabulary and the trained rows."""
        if not self.has_guard:
            raise PredictorError("this predictor keeps no guard (fit it with the training "
                                 "features: --method prototype or --loss-epochs)")
        share = self.meta.get("guard_share", GUARD_SHARE) if share is None else share
        h = self.guard_h.float()
        trained = head(h.to(head.weight.device)).cpu() + toolken_bias  # (N, K)
        top = torch.maximum(trained.max(-1).values if trained.shape[1] else self.guard_vmax,
                            self.guard_vmax)
        z = h @ rows.float().cpu().T
        if getattr(head, "softcap", None):  # the head's soft-capping applies to new rows too
            z = head.softcap * torch.tanh(z / head.softcap)
        margin = z + toolken_bias - top[:, None]  # (N, n): > 0 wins
        return guard_offsets(margin, share)

    @torch.no_grad()
    def predict(self, base, tools) -> torch.Tensor:
        """(n, d) rows for tools (``Tool`` objects, manifest dicts or names)."""
        texts = [reading_text(t, self.layout) for t in tools]
        return self(describe(base, texts, self.features).to(self.mu.device))

    def config(self, base=None) -> dict:
        cfg = {"kind": "linear", "features": list(self.features), "layout": self.layout,
               "in_features": self.mu.shape[0],
               "hidden_size": self.linear.out_features, **self.meta}
        if self.has_guard:
            cfg["guard_positions"] = len(self.guard_h)
        if base is not None:
            cfg |= {"base_model": base.name, "base_fingerprint": base.fingerprint}
        return cfg

    def save(self, directory: str | os.PathLike, base=None) -> Path:
        """Write ``toolken_predictor.{safetensors,json}`` into ``directory`` (atomic renames)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(d / (PREDICTOR_WEIGHTS + ".tmp")), metadata={"format": "pt"})
        (d / (PREDICTOR_CONFIG + ".tmp")).write_text(json.dumps(self.config(base), indent=2,
                                                                sort_keys=True) + "\n")
        os.replace(d / (PREDICTOR_WEIGHTS + ".tmp"), d / PREDICTOR_WEIGHTS)
        os.replace(d / (PREDICTOR_CONFIG + ".tmp"), d / PREDICTOR_CONFIG)
        return d


def has_predictor(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / PREDICTOR_WEIGHTS).exists() and (d / PREDICTOR_CONFIG).exists()


def load_predictor(directory: str | os.PathLike, base=None) -> ToolkenPredictor:
    """Read a predictor saved by ``ToolkenPredictor.save``; with ``base``, refuse one fitted
    for another base model."""
    d = Path(directory)
    if not has_predictor(d):
        raise PredictorError(f"{d} has no toolken predictor ({PREDICTOR_WEIGHTS} + {PREDICTOR_CONFIG}); "
                             f"fit one with `toolken fit-predictor --toolkens {d}`")
    try:
        cfg = json.loads((d / PREDICTOR_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise PredictorError(f"{d / PREDICTOR_CONFIG}: not valid JSON ({e})") from None
    if cfg.get("kind") != "linear":
        raise PredictorError(f"{d / PREDICTOR_CONFIG}: kind {cfg.get('kind')!r}; this toolken reads 'linear'")
    fp = cfg.get("base_fingerprint")
    if base is not None and fp is not None and fp != base.fingerprint:
        raise PredictorError(f"{d / PREDICTOR_CONFIG} was fitted for base model "
                             f"{cfg.get('base_model')!r} ({fp}), not {base.name!r} ({base.fingerprint})")
    known = {"kind", "features", "layout", "in_features", "hidden_size", "base_model",
             "base_fingerprint", "guard_positions"}
    p = ToolkenPredictor(cfg["in_features"], cfg["hidden_size"], tuple(cfg["features"]),
                         {k: v for k, v in cfg.items() if k not in known}, cfg.get("layout", "{text}"))
    if cfg.get("guard_positions"):
        n = int(cfg["guard_positions"])
        p.set_guard(torch.zeros(n, cfg["hidden_size"]), torch.zeros(n), cfg.get("guard_share", GUARD_SHARE))
    try:
        p.load_state_dict(load_file(str(d / PREDICTOR_WEIGHTS)))
    except RuntimeError as e:
        raise PredictorError(f"{d / PREDICTOR_WEIGHTS} does not match {d / PREDICTOR_CONFIG}: {e}") from None
    return p


def guard_offsets(margin: torch.Tensor, share: float) -> torch.Tensor:
    """(n,) from margins (N, n) of n new rows over the winner at N positions: minus the
    (1 - share) quantile of each column, where it is above 0 (else 0)."""
    _check_share(share)
    return -torch.quantile(margin.double(), 1.0 - share, dim=0).clamp(min=0).float()


def _check_share(share: float) -> None:
    if not 0.0 <= share < 1.0:
        raise PredictorError(f"guard share must be in [0, 1), got {share}")


def guard_sample(h: torch.Tensor, vmax: torch.Tensor, label: torch.Tensor, vocab_size: int,
                 n: int = GUARD_POSITIONS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to n toolken positions (label >= vocab_size) of training features, drawn by seed:
    (h (n, d), vmax (n,)), what ``ToolkenPredictor.set_guard`` keeps."""
    pos = (label >= vocab_size).nonzero().squeeze(1)
    if len(pos) > n:
        pos = pos[torch.randperm(len(pos), generator=torch.Generator().manual_seed(seed))[:n]].sort().values
    return h[pos], vmax[pos]
