"""The exact toolken loss on cached features, and toolken precision / recall / F1.

With z_v = lm_head(h) (V vocabulary logits, frozen) and z_t = head(h) (K toolken logits):

    CE([z_v ; z_t], y) = logaddexp(A, logsumexp(z_t)) - z_y,   A = logsumexp(z_v)

where z_y is the cached vocabulary logit zt when y < V, and z_t[y - V] otherwise. Only z_t
depends on the trained rows, so the loss and its gradient are exact without recomputing z_v.
"""

from __future__ import annotations

import torch


def toolken_loss(z_tool: torch.Tensor, lse: torch.Tensor, zt: torch.Tensor, label: torch.Tensor,
                 vocab_size: int) -> torch.Tensor:
    """Per-position cross-entropy over [vocab ; toolkens]. z_tool (N, K); the rest (N,)."""
    is_tool = label >= vocab_size
    idx = (label - vocab_size).clamp(min=0, max=z_tool.shape[1] - 1)
    z_target = torch.where(is_tool, z_tool.gather(1, idx[:, None]).squeeze(1), zt)
    return torch.logaddexp(lse, torch.logsumexp(z_tool, dim=-1)) - z_target  # (N,)


def predict(z_tool: torch.Tensor, vmax: torch.Tensor, vargmax: torch.Tensor, vocab_size: int,
            bias: float = 0.0) -> torch.Tensor:
    """argmax over [vocab ; toolkens + bias]; on a tie the vocabulary token wins (first max)."""
    tmax, targ = (z_tool + bias).max(dim=-1)
    return torch.where(tmax > vmax, targ + vocab_size, vargmax)


def toolken_counts(pred: torch.Tensor, label: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(3,) tensor: [true positives, predicted toolkens, gold toolkens]; exact-tool match."""
    p, g = pred >= vocab_size, label >= vocab_size
    return torch.stack([(p & g & (pred == label)).sum(), p.sum(), g.sum()])


def prf(counts) -> dict[str, float]:
    tp, np_, ng = (float(c) for c in counts)
    p = tp / np_ if np_ else 0.0
    r = tp / ng if ng else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}
