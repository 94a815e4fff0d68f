"""The toolken head: K extra output rows W_t (K x d), one per tool (ToolkenGPT, Hao et al. 2023).

At every step the next token is chosen among ``[lm_head(h) ; h @ W_t^T + b]``. The head is
kept in fp32 whatever the base model's dtype; hidden states are cast up before the product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("random", "embedding", "predicted")  # predicted: core.predictor


class ToolkenHead(nn.Module):
    def __init__(self, num_tools: int, hidden_size: int, bias: bool = False,
                 softcap: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tools, hidden_size))  # (K, d)
        self.bias = nn.Parameter(torch.zeros(num_tools)) if bias else None  # (K,)
        self.softcap = softcap  # the base model's final-logit soft-capping, if it has one
        self.reset_parameters()

    @property
    def num_tools(self) -> int:
        return self.weight.shape[0]

    def reset_parameters(self, rows: slice | None = None) -> None:
        """The paper's init: nn.Linear's default (Kaiming-uniform), bias zero."""
        rows = rows or slice(None)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.weight.shape[1])
            self.weight[rows].uniform_(-bound, bound)
            if self.bias is not None:
                self.bias[rows].zero_()

    def forward(self, h: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(..., d) hidden states -> (..., K) toolken logits in fp32.

        ``weight`` overrides the stored rows (training with some rows frozen builds it).
        """
        z = F.linear(h.float(), self.weight if weight is None else weight, self.bias)
        if self.softcap:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def append(self, n: int) -> None:
        """Add n randomly initialised rows after the existing ones (old rows unchanged)."""
        old_w = self.weight.data
        self.weight = nn.Parameter(torch.cat([old_w, old_w.new_empty(n, old_w.shape[1])]))
        self.reset_parameters(slice(old_w.shape[0], None))
        if self.bias is not None:
            self.bias = nn.Parameter(torch.cat([self.bias.data, self.bias.data.new_zeros(n)]))


RANDOM_ROW_NORM = math.sqrt(1 / 3)  # E|w| of a row drawn uniform(-1/sqrt(d), 1/sqrt(d)), for large d


@torch.no_grad()
def init_from_embeddings(head: ToolkenHead, base, texts: list[str], rows: range | None = None) -> None:
    """Set each row to the direction of the mean input embedding of its tool's text (name +
    description), at the norm random rows have (``reset_parameters``: sqrt(1/3) in any width).

    The LM head's own row norm (about 10x larger on SmolLM2) made training from these rows
    worse than from random ones; at the random rows' norm the direction helps (RESULTS.md,
    ``benchmarks/init_ablation.py``)."""
    rows = rows if rows is not None else range(head.num_tools)
    if len(texts) != len(rows):
        raise ValueError(f"init_from_embeddings: {len(texts)} texts for {len(rows)} rows")
    emb = base.model.get_input_embeddings().weight
    target_norm = RANDOM_ROW_NORM
    for row, text in zip(rows, texts):
        ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"tool text {text!r} has no tokens to initialise from")
        v = emb[torch.tensor(ids, device=emb.device)].float().mean(0)
        head.weight[row] = (v / v.norm().clamp_min(1e-12) * target_norm).to(head.weight.device)


def base_softcap(config) -> float | None:
    """The base model's final-logit soft-capping (e.g. Gemma 2), applied to toolkens too."""
    return getattr(config, "final_logit_softcapping", None) or None
