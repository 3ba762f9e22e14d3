"""Softmax token classification: a linear layer over each word, cross-entropy, argmax."""
from __future__ import annotations

from torch.nn import functional as F

from nerkit.heads.base import TokenHead


class SoftmaxHead(TokenHead):
    def loss(self, scores, mask, spans):
        targets = self.tag_targets(spans, scores.shape[1]).to(scores.device)
        return F.cross_entropy(scores[mask].float(), targets[mask])
