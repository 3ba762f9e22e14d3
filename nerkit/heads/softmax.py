"""Softmax token classification: a linear layer over each word, cross-entropy, argmax."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from nerkit.heads.base import TokenHead


class SoftmaxHead(TokenHead):
    def loss(self, scores, mask, spans):
        targets = self.tag_targets(spans, scores.shape[1]).to(scores.device)
        return F.cross_entropy(scores[mask].float(), targets[mask])

    def best_paths(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return scores.argmax(-1)

    def document_paths(self, stitched: torch.Tensor, lengths) -> torch.Tensor:
        return stitched.argmax(-1)  # no transitions: no need to batch by document
