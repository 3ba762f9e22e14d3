"""The head interface, and the base class of heads that tag each word (softmax, CRF).

A head sees one vector per word (the word's first sub-token, gathered by the model) and a
mask that is a contiguous prefix of each row. It owns its scores, its loss, its decoding and
how window scores are merged back into whole documents.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple, Sequence

import torch
from torch import nn

from nerkit.data.batching import pad
from nerkit.data.schemes import get_scheme
from nerkit.data.windowing import Window, word_owners


class ScoredSpan(NamedTuple):
    start: int  # word index
    end: int  # word index, exclusive
    label: str
    score: float


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
    def decode(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[ScoredSpan]]:
        """Scores of a batch of sequences -> predicted spans per sequence."""

    @abstractmethod
    def window_outputs(self, scores: torch.Tensor, mask: torch.Tensor) -> list[Any]:
        """A batch of window scores -> per window, what ``decode_documents`` needs (kept small:
        a 100k-token document has a thousand windows)."""

    @abstractmethod
    def decode_documents(self, documents: Sequence[tuple[Sequence[Window], Sequence[Any], int]]) -> list[list[ScoredSpan]]:
        """Per document: its windows, each window's ``window_outputs`` and its word count ->
        spans over the whole document, each prediction taken where it had the most context."""

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

    def tag_targets(self, spans: Sequence[WordSpans], n_words: int) -> torch.Tensor:
        targets = torch.zeros(len(spans), n_words, dtype=torch.long)
        for row, row_spans in enumerate(spans):
            named = [(s, e, self.entity_types[label]) for s, e, label in row_spans]
            targets[row] = torch.tensor([self.tag_ids[t] for t in self.scheme.encode(named, n_words)])
        return targets

    @abstractmethod
    def best_tags(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best tag sequence of each row, as long as its mask."""

    def decode(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[ScoredSpan]]:
        probs = scores.float().softmax(-1)
        out = []
        for row, tag_ids in enumerate(self.best_tags(scores, mask)):
            spans, _ = self.scheme.decode([self.tags[t] for t in tag_ids])
            chosen = probs[row, torch.arange(len(tag_ids)), torch.tensor(tag_ids, dtype=torch.long)]
            out.append([ScoredSpan(s, e, lab, chosen[s:e].mean().item()) for s, e, lab in spans])
        return out

    def window_outputs(self, scores: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [row[: int(n)].float().cpu() for row, n in zip(scores, mask.sum(1))]

    def decode_documents(self, documents, chunk_words: int = 65536):
        """Stitch each document's word scores from their most central windows, then decode the
        whole document at once (one Viterbi / one BIO repair over the full length)."""
        stitched = []
        for windows, window_scores, n_words in documents:
            owner = torch.from_numpy(word_owners(windows, n_words))
            all_scores = torch.cat(list(window_scores))  # windows' rows, in window order
            first_row = torch.tensor([0] + [w.word_end - w.word_start for w in windows[:-1]]).cumsum(0)
            start = torch.tensor([w.word_start for w in windows])
            stitched.append(all_scores[first_row[owner] + torch.arange(n_words) - start[owner]])
        results: list[list[ScoredSpan] | None] = [None] * len(stitched)
        order = sorted(range(len(stitched)), key=lambda i: len(stitched[i]))
        while order:  # batches of similar length, at most `chunk_words` padded positions
            longest = len(stitched[order[-1]])
            take = max(1, chunk_words // max(longest, 1))
            batch, order = order[-take:], order[:-take]
            padded, mask = pad([stitched[i] for i in batch])
            for i, spans in zip(batch, self.decode(padded, mask)):
                results[i] = spans
        return results
