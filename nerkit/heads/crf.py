"""Linear-chain CRF (pytorch-crf) over word emissions, with scheme-forbidden transitions blocked.

The CRF and its emission layer start from scratch while the encoder is pretrained, so they
train in their own optimizer group with a larger learning rate (``head.lr``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchcrf import CRF

from nerkit.heads.base import TokenHead

FORBIDDEN = -10000.0


class CRFHead(TokenHead):
    def __init__(
        self,
        hidden_size: int,
        entity_types: Sequence[str],
        scheme: str = "BIO",
        dropout: float = 0.1,
        lr: float | None = 1e-3,
    ):
        super().__init__(hidden_size, entity_types, scheme, dropout, lr)
        self.crf = CRF(len(self.tags), batch_first=True)
        allowed = self.scheme.allowed_transition
        self._block(self.crf.start_transitions, torch.tensor([not self.scheme.allowed_start(t) for t in self.tags]))
        self._block(self.crf.end_transitions, torch.tensor([not self.scheme.allowed_end(t) for t in self.tags]))
        self._block(self.crf.transitions, torch.tensor([[not allowed(a, b) for b in self.tags] for a in self.tags]))

    @staticmethod
    def _block(param: torch.nn.Parameter, forbidden: torch.Tensor) -> None:
        """Pin forbidden entries at a large negative score: set once, and never updated."""
        with torch.no_grad():
            param[forbidden] = FORBIDDEN
        param.register_hook(lambda grad: grad.masked_fill(forbidden.to(grad.device), 0.0))

    def loss(self, scores, mask, spans):
        targets = self.tag_targets(spans, scores.shape[1]).to(scores.device)
        return -self.crf(scores.float(), targets, mask=mask, reduction="token_mean")

    def transitions(self) -> dict[str, np.ndarray]:
        crf = self.crf
        return {"start": crf.start_transitions.detach().float().cpu().numpy(),
                "end": crf.end_transitions.detach().float().cpu().numpy(),
                "transitions": crf.transitions.detach().float().cpu().numpy()}

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        lr = self.lr or base_lr
        # Weight decay would pull the pinned forbidden transitions towards zero.
        return [
            {"name": "head", "params": list(self.classifier.parameters()), "lr": lr, "weight_decay": weight_decay},
            {"name": "crf", "params": list(self.crf.parameters()), "lr": lr, "weight_decay": 0.0},
        ]
