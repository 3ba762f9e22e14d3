"""Softmax token classification: a linear layer over each word, cross-entropy, argmax."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from nerkit.heads.base import TokenHead


class SoftmaxHead(TokenHead):
    def loss(self, scores, mask, spans):
        targets = self.tag_targets(spans, scores.shape[1]).to(scores.device)
        return F.cross_entropy(scores[mask].float(), targets[mask])

    def best_tags(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        best = scores.argmax(-1)
        return [row[: int(n)].tolist() for row, n in zip(best, mask.sum(1))]
