"""GlobalPointer (Su et al.): every (start, end) word pair scored per entity type.

Spans are scored directly, so nested and overlapping entities come out as they are. Rotary
position embeddings (RoPE) give the start/end dot product a sense of relative distance;
without them the span scores cannot tell near from far and training collapses.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from nerkit.heads.base import Head
from nerkit.heads.decoding import SpanDecoder


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Apply RoPE along dim 1 (positions) of x: [batch, positions, ..., dim]."""
    n, dim = x.shape[1], x.shape[-1]
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)
    angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # [n, dim/2]
    shape = (1, n) + (1,) * (x.dim() - 3) + (dim,)
    cos = angles.cos().repeat_interleave(2, -1).view(shape).to(x.dtype)
    sin = angles.sin().repeat_interleave(2, -1).view(shape).to(x.dtype)
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
    return x * cos + rotated * sin


def multilabel_categorical_crossentropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Su's loss for sparse multi-label targets: log(1 + sum e^-pos) + log(1 + sum e^neg)."""
    logits = (1 - 2 * targets) * logits
    neg = logits.masked_fill(targets.bool(), float("-inf"))
    pos = logits.masked_fill(~targets.bool(), float("-inf"))
    zeros = torch.zeros_like(logits[..., :1])
    return (torch.logsumexp(torch.cat([neg, zeros], -1), -1) + torch.logsumexp(torch.cat([pos, zeros], -1), -1)).mean()


class GlobalPointerHead(Head):
    supports_nested = True

    def __init__(
        self,
        hidden_size: int,
        entity_types: Sequence[str],
        head_size: int = 64,
        rope: bool = True,
        dropout: float = 0.1,
        lr: float | None = None,
        threshold: float = 0.0,
    ):
        super().__init__(hidden_size, entity_types, lr)
        self.head_size = head_size
        self.rope = rope
        self.threshold = float(threshold)
        self.dropout = nn.Dropout(dropout)
        self.build_layers()

    def build_layers(self) -> None:
        self.dense = nn.Linear(self.hidden_size, len(self.entity_types) * self.head_size * 2)

    def span_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, n, _ = hidden.shape
        qk = self.dense(hidden).view(batch, n, len(self.entity_types), 2, self.head_size)
        q, k = qk[..., 0, :], qk[..., 1, :]
        if self.rope:
            q, k = rotary(q), rotary(k)
        return torch.einsum("bmtd,bntd->btmn", q, k) / self.head_size**0.5

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.span_logits(self.dropout(hidden)).float()
        n = hidden.shape[1]
        valid = mask[:, None, :, None] & mask[:, None, None, :] & torch.ones(n, n, dtype=torch.bool, device=mask.device).triu()
        return logits.masked_fill(~valid, -1e12)  # padding and end-before-start never score

    def loss(self, scores, mask, spans):
        targets = torch.zeros_like(scores)
        for row, row_spans in enumerate(spans):
            for start, end, label in row_spans:
                targets[row, label, start, end - 1] = 1.0
        return multilabel_categorical_crossentropy(scores.flatten(2), targets.flatten(2))

    @classmethod
    def score_memory(cls, head_cfg: Mapping[str, Any], n_types: int, rows: int, words: int) -> tuple[int, str]:
        # Logits, their masked copy, the targets, and the loss's signed and split copies.
        return 6 * 4 * rows * n_types * words**2, f"{rows} windows x {n_types} types x {words}^2 word pairs"

    def decoder(self) -> SpanDecoder:
        return SpanDecoder(self.entity_types, threshold=self.threshold)


class EfficientGlobalPointerHead(GlobalPointerHead):
    """Efficient GlobalPointer: one shared start/end projection plus a per-type start and end
    bias, so parameters no longer grow with head_size x types."""

    def build_layers(self) -> None:
        self.dense = nn.Linear(self.hidden_size, self.head_size * 2)
        self.type_bias = nn.Linear(self.head_size * 2, len(self.entity_types) * 2)

    def span_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        projected = self.dense(hidden)
        q, k = projected[..., : self.head_size], projected[..., self.head_size :]
        if self.rope:
            q, k = rotary(q), rotary(k)
        shared = torch.einsum("bmd,bnd->bmn", q, k) / self.head_size**0.5
        bias = self.type_bias(projected).transpose(1, 2) / 2  # [batch, 2 * types, n]
        return shared[:, None] + bias[:, 0::2, :, None] + bias[:, 1::2, None, :]
