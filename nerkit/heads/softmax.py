"""Softmax token classification: a linear layer over each word, cross-entropy, argmax."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from nerkit.heads.base import TokenHead


class SoftmaxHead(TokenHead):
    def __init__(self, hidden_size: int, entity_types: Sequence[str], scheme: str = "BIO", dropout: float = 0.1,
                 lr: float | None = None, loss_divisor: float | None = None):
        """``loss_divisor``: None, the loss is the mean over a batch's words; a number D, the sum
        over its words / D, so that every word weighs the same whatever batch it is in (D: the
        data's mean words per batch keeps the loss's scale; bench/conll2003_full.py)."""
        super().__init__(hidden_size, entity_types, scheme, dropout, lr)
        if loss_divisor is not None and not loss_divisor > 0:
            raise ValueError(f"head.loss_divisor={loss_divisor}: must be a number > 0 or null")
        self.loss_divisor = loss_divisor

    def loss(self, scores, mask, spans):
        targets = self.tag_targets(spans, scores.shape[1]).to(scores.device)
        if self.loss_divisor is None:
            return F.cross_entropy(scores[mask].float(), targets[mask])
        return F.cross_entropy(scores[mask].float(), targets[mask], reduction="sum") / self.loss_divisor

    def loss_size(self, mask: torch.Tensor) -> int | torch.Tensor:
        # A summed loss already weighs each word the same: micro-batches then count alike.
        return mask.sum() if self.loss_divisor is None else 1
