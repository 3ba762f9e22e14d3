"""The head interface, and the base class of heads that tag each word (softmax, CRF).

A head sees one vector per word (the word's first sub-token, gathered by the model) and a
mask that is a contiguous prefix of each row. It owns its scores, its loss, its decoding and
how window scores are merged back into whole documents.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from nerkit.data.schemes import get_scheme
from nerkit.data.windowing import WindowTable


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
    def window_outputs(self, scores: torch.Tensor, mask: torch.Tensor) -> Sequence[Any]:
        """A batch of window scores -> per window, what ``decode_documents`` needs (kept small:
        a 100k-token document has a thousand windows)."""

    @abstractmethod
    def decode_documents(self, table: WindowTable, outputs: Sequence[Any]) -> list[list[ScoredSpan]]:
        """The windows of some documents and each window's ``window_outputs`` (in table row
        order) -> per document, spans over the whole document, each prediction taken where it
        had the most context."""

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
        # Per tag id, for decoding on arrays: its entity type (-1 for O), whether it may continue
        # an entity (I-, E-), and whether an entity stays open after it (B-, I-).
        roles = [self.scheme.split(tag) for tag in self.tags]
        self._tag_label = np.array([-1 if t is None else self.entity_types.index(t) for _, t in roles])
        self._tag_continues = np.array([role in ("I", "E") for role, _ in roles])
        self._tag_open = np.array([role in ("B", "I") for role, _ in roles])

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
    def best_paths(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The best tag id at every position of each row, [batch, words] (anything past the mask)."""

    def best_tags(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best tag sequence of each row, as long as its mask."""
        return [row[:n].tolist() for row, n in zip(self.best_paths(scores, mask), mask.sum(1).tolist())]

    def decode(self, scores: torch.Tensor, mask: torch.Tensor) -> list[list[ScoredSpan]]:
        scores, mask = scores.detach().float().cpu(), mask.cpu()
        return self.spans(scores[mask], self.best_paths(scores, mask)[mask], mask.sum(1).tolist())

    def window_outputs(self, scores: torch.Tensor, mask: torch.Tensor) -> Sequence[torch.Tensor]:
        return torch.split(scores[mask].float().cpu(), mask.sum(1).tolist())

    def decode_documents(self, table: WindowTable, outputs: Sequence[torch.Tensor]) -> list[list[ScoredSpan]]:
        """Stitch each document's word scores from their most central windows, then decode whole
        documents at once (one Viterbi / one BIO repair over the full length)."""
        stitched = torch.cat(list(outputs))[torch.from_numpy(table.word_rows())] if outputs else torch.zeros(0, len(self.tags))
        lengths = table.doc_words.tolist()
        return self.spans(stitched, self.document_paths(stitched, lengths), lengths)

    def document_paths(self, stitched: torch.Tensor, lengths: Sequence[int], chunk_words: int = 65536) -> torch.Tensor:
        """Best tags of documents laid end to end: ``best_paths`` over batches of documents of
        similar length, at most ``chunk_words`` padded positions each."""
        paths = torch.zeros(len(stitched), dtype=torch.long)
        lengths_t = torch.tensor(lengths, dtype=torch.long)
        offsets = lengths_t.cumsum(0) - lengths_t
        order = sorted((i for i in range(len(lengths)) if lengths[i]), key=lengths.__getitem__)
        while order:
            take = max(1, chunk_words // lengths[order[-1]])
            batch, order = torch.tensor(order[-take:]), order[:-take]
            positions = offsets[batch, None] + torch.arange(lengths[int(batch[-1])])
            mask = positions < (offsets + lengths_t)[batch, None]
            positions = positions.masked_fill(~mask, 0)
            paths[positions[mask]] = self.best_paths(stitched[positions], mask)[mask]
        return paths

    def spans(self, scores: torch.Tensor, paths: torch.Tensor, lengths: Sequence[int]) -> list[list[ScoredSpan]]:
        """Tag paths of sequences laid end to end -> spans per sequence, scored by the mean
        probability of their tags. Repairs ill-formed paths exactly as ``Scheme.decode`` does
        (an I-/E- that does not continue an entity of its type starts a new one), on arrays."""
        tags = paths.numpy()
        chosen = scores.softmax(-1).gather(1, paths[:, None])[:, 0].double().numpy()
        offsets = np.cumsum(lengths) - np.asarray(lengths, dtype=np.int64)
        first = np.zeros(len(tags), dtype=bool)
        first[offsets[np.asarray(lengths) > 0]] = True
        label = self._tag_label[tags]
        continues = self._tag_continues[tags] & ~first
        continues[1:] &= self._tag_open[tags[:-1]] & (label[1:] == label[:-1])
        inside = label >= 0
        starts = np.flatnonzero(inside & ~continues)
        ends = np.flatnonzero(inside & ~np.append(continues[1:], False)) + 1
        cumulative = np.concatenate([[0.0], np.cumsum(chosen)])
        means = (cumulative[ends] - cumulative[starts]) / (ends - starts)
        sequence = np.searchsorted(offsets, starts, side="right") - 1
        out: list[list[ScoredSpan]] = [[] for _ in lengths]
        for i, s, e, lab, score in zip(sequence.tolist(), (starts - offsets[sequence]).tolist(),
                                      (ends - offsets[sequence]).tolist(), label[starts].tolist(), means.tolist()):
            out[i].append(ScoredSpan(s, e, self.entity_types[lab], score))
        return out
