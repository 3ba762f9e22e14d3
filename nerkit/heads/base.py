"""The head interface, and the base class of heads that tag each word (softmax, CRF).

A head sees one vector per word (the word's first sub-token, gathered by the model) and a
mask that is a contiguous prefix of each row. It owns its scores, its loss and its one decoder
(``nerkit.heads.decoding``, numpy, shared by every backend); the decoder says how window scores
are merged back into whole documents, which ``nerkit.inference`` does. A head knows no windows.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nerkit.data.schemes import get_scheme
from nerkit.heads.decoding import Decoder, ScoredSpan, TagDecoder

WordSpans = Sequence[tuple[int, int, int]]  # (start word, end word, label id)


class Head(nn.Module, ABC):
    supports_nested: ClassVar[bool] = False

    def __init__(self, hidden_size: int, entity_types: Sequence[str], lr: float | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.entity_types = list(entity_types)
        self.lr = lr

    @abstractmethod
    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Word vectors [batch, words, hidden] -> scores (shape is the head's own)."""

    @abstractmethod
    def loss(self, scores: torch.Tensor, mask: torch.Tensor, spans: Sequence[WordSpans]) -> torch.Tensor:
        """Scalar training loss against gold word spans."""

    def loss_size(self, mask: torch.Tensor) -> int | torch.Tensor:
        """How many terms ``loss`` averages over: rows (span heads average over rows and types).
        Data-parallel training weights each process's loss by it."""
        return mask.shape[0]

    @abstractmethod
    def decoder(self) -> Decoder:
        """The head's decoder with the current weights it needs (exported with the ONNX graph)."""

    def decode(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[ScoredSpan]]:
        """Scores of a padded batch of sequences -> predicted spans per sequence (the decoder's)."""
        return self.decoder().decode_batch(scores.detach().float().cpu().numpy(), mask.sum(1).cpu().numpy())

    @classmethod
    def score_memory(cls, head_cfg: Mapping[str, Any], n_types: int, rows: int, words: int) -> tuple[int, str]:
        """Estimated bytes of the score tensors this head keeps for one batch of ``rows`` windows of
        ``words`` words and ``n_types`` entity types (4-byte floats, with the copies its loss keeps
        for the backward pass), and what they count: checked before the head is built."""
        return 3 * 4 * rows * words * n_types, f"{rows} windows x {words} words x {n_types} types"

    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups for the head's parameters: ``head.lr`` when set, else the encoder's."""
        return [{"name": "head", "params": list(self.parameters()), "lr": self.lr or base_lr, "weight_decay": weight_decay}]


class TokenHead(Head):
    """A head that scores one tag per word; spans come from the tag scheme."""

    def __init__(
        self,
        hidden_size: int,
        entity_types: Sequence[str],
        scheme: str = "BIO",
        dropout: float = 0.1,
        lr: float | None = None,
    ):
        super().__init__(hidden_size, entity_types, lr)
        self.scheme = get_scheme(scheme)
        self.tags = self.scheme.tags(self.entity_types)
        self.tag_ids = {tag: i for i, tag in enumerate(self.tags)}
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(self.tags))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss_size(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.sum()  # tag losses are means over words

    @staticmethod
    def n_tags(head_cfg: Mapping[str, Any], n_types: int) -> int:
        per_type = len(get_scheme(head_cfg.get("scheme", "BIO")).tags(["T"])) - 1  # B-, I- (and E-, S-)
        return 1 + per_type * n_types

    @classmethod
    def score_memory(cls, head_cfg: Mapping[str, Any], n_types: int, rows: int, words: int) -> tuple[int, str]:
        tags = cls.n_tags(head_cfg, n_types)
        return 3 * 4 * rows * words * tags, f"{rows} windows x {words} words x {tags} tags"

    def tag_targets(self, spans: Sequence[WordSpans], n_words: int) -> torch.Tensor:
        targets = torch.zeros(len(spans), n_words, dtype=torch.long)
        for row, row_spans in enumerate(spans):
            named = [(s, e, self.entity_types[label]) for s, e, label in row_spans]
            targets[row] = torch.tensor([self.tag_ids[t] for t in self.scheme.encode(named, n_words)])
        return targets

    def transitions(self) -> dict[str, np.ndarray] | None:
        """Tag transition scores for Viterbi ("start", "end", "transitions"), or None: each word's
        best tag on its own (argmax)."""
        return None

    def decoder(self) -> TagDecoder:
        return TagDecoder(self.entity_types, self.tags, self.scheme.name, self.transitions())
