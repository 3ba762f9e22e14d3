"""Linear-chain CRF (pytorch-crf) over word emissions, with scheme-forbidden transitions blocked.

The CRF and its emission layer start from scratch while the encoder is pretrained, so they
train in their own optimizer group with a larger learning rate (``head.lr``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

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
        start, end, transition = self.scheme.allowed(self.tags)
        self._block(self.crf.start_transitions, torch.from_numpy(~start))
        self._block(self.crf.end_transitions, torch.from_numpy(~end))
        self._block(self.crf.transitions, torch.from_numpy(~transition))

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

    @classmethod
    def score_memory(cls, head_cfg: Mapping[str, Any], n_types: int, rows: int, words: int) -> tuple[int, str]:
        # The forward algorithm keeps a tags x tags table per word for the backward pass.
        tags = cls.n_tags(head_cfg, n_types)
        return 2 * 4 * rows * words * tags**2, f"{rows} windows x {words} words x {tags}^2 tag transitions"

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        lr = self.lr or base_lr
        # Weight decay would pull the pinned forbidden transitions towards zero.
        return [
            {"name": "head", "params": list(self.classifier.parameters()), "lr": lr, "weight_decay": weight_decay},
            {"name": "crf", "params": list(self.crf.parameters()), "lr": lr, "weight_decay": 0.0},
        ]
