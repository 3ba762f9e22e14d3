"""Linear-chain CRF (pytorch-crf) over word emissions, with scheme-forbidden transitions blocked.

The CRF and its emission layer start from scratch while the encoder is pretrained, so they
train in their own optimizer group with a larger learning rate (``head.lr``).
"""
from __future__ import annotations

from typing import Sequence

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

    def best_paths(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Viterbi over the batch, backtracking on tensors too (pytorch-crf's ``decode`` walks
        back one ``.item()`` at a time in Python). Same recurrence and tie-breaking as its decode."""
        emissions, crf = scores.float(), self.crf
        batch, n, _ = emissions.shape
        score = crf.start_transitions + emissions[:, 0]
        history = []
        for t in range(1, n):
            best, previous = (score[:, :, None] + crf.transitions + emissions[:, t, None, :]).max(1)
            history.append(previous)
            score = torch.where(mask[:, t, None], best, score)
        tag = (score + crf.end_transitions).argmax(1)
        lengths = mask.sum(1)
        paths = torch.empty(batch, n, dtype=torch.long, device=emissions.device)
        for t in range(n - 1, -1, -1):
            paths[:, t] = tag
            if t:  # past a row's end its last tag is carried back unchanged
                tag = torch.where(t < lengths, history[t - 1].gather(1, tag[:, None])[:, 0], tag)
        return paths

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        lr = self.lr or base_lr
        # Weight decay would pull the pinned forbidden transitions towards zero.
        return [
            {"name": "head", "params": list(self.classifier.parameters()), "lr": lr, "weight_decay": weight_decay},
            {"name": "crf", "params": list(self.crf.parameters()), "lr": lr, "weight_decay": 0.0},
        ]
