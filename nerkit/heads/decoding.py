"""Decoders: a head's scores -> spans, on numpy, so that every backend (PyTorch, ONNX Runtime)
decodes with the same code and the ONNX side never imports torch.

Each head declares one decoder (``Head.decoder``), holding what decoding needs (tags and scheme,
CRF transitions, a threshold). A decoder says how window scores are merged into documents
(``merge``, done by ``nerkit.inference``):

- ``WORD_SCORES``: each word's scores are taken from its most central window, and whole
  documents are decoded at once (``TagDecoder.decode``: argmax or one Viterbi per document);
- ``SPANS``: each window is decoded on its own (``decode_batch``), and each span is kept from
  the window holding it most centrally.

``spec`` / ``decoder_from_spec`` carry a decoder as JSON (into the ONNX graph's metadata);
decoders are found by their ``name``, never by a class path read from a file.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np

from nerkit.data.schemes import get_scheme

WORD_SCORES, SPANS = "word_scores", "spans"


class ScoredSpan(NamedTuple):
    start: int  # word index
    end: int  # word index, exclusive
    label: str
    score: float


class Decoder(ABC):
    """A WORD_SCORES decoder also decodes sequences laid end to end: ``decode(word_scores, lengths)``."""

    name: ClassVar[str]  # how ``spec`` names it
    merge: ClassVar[str]  # WORD_SCORES or SPANS
    scheme: str = "BIO"  # the tag scheme its spans are scored in by default
    nested: ClassVar[bool] = False  # whether its spans may nest or overlap
    registry: ClassVar[dict[str, type["Decoder"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Decoder.registry[cls.name] = cls

    def __init__(self, entity_types: Sequence[str]):
        self.entity_types = list(entity_types)

    @abstractmethod
    def decode_batch(self, scores: np.ndarray, lengths: np.ndarray) -> list[list[ScoredSpan]]:
        """Scores of a padded batch of sequences (``lengths`` words each) -> spans per sequence."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Everything the decoder needs, as JSON values; ``decoder_from_spec`` rebuilds it."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Decoder":
        """The decoder ``spec`` describes."""


def decoder_from_spec(spec: dict[str, Any]) -> Decoder:
    cls = Decoder.registry.get(spec.get("decoder")) if isinstance(spec, dict) else None
    if cls is None:
        raise ValueError(f"unknown decoder {spec.get('decoder') if isinstance(spec, dict) else spec!r}; "
                         f"this nerkit knows {sorted(Decoder.registry)}")
    return cls.from_spec(spec)


def _softmax_of(scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The softmax probability of the ``chosen`` column of each row of ``scores`` [rows, classes]."""
    exp = np.exp(scores - scores.max(-1, keepdims=True))
    return exp[np.arange(len(chosen)), chosen] / exp.sum(-1)


class TagDecoder(Decoder):
    """One tag per word (softmax, CRF): the best tag path (argmax, or Viterbi over CRF
    transitions), then spans by the tag scheme, each scored by the mean probability of its tags."""

    name, merge = "tags", WORD_SCORES

    def __init__(self, entity_types: Sequence[str], tags: Sequence[str], scheme: str = "BIO",
                 transitions: dict[str, Any] | None = None):
        super().__init__(entity_types)
        self.tags, self.scheme = list(tags), get_scheme(scheme).name
        # CRF: "start" [tags], "end" [tags], "transitions" [from, to]; None: independent tags (argmax).
        self.transitions = None if transitions is None else {
            k: np.asarray(transitions[k], dtype=np.float32) for k in ("start", "end", "transitions")}
        # Per tag id, for decoding on arrays: its entity type (-1 for O), whether it may continue
        # an entity (I-, E-), and whether an entity stays open after it (B-, I-).
        roles = [get_scheme(scheme).split(tag) for tag in self.tags]
        self._tag_label = np.array([-1 if t is None else self.entity_types.index(t) for _, t in roles], dtype=np.int64)
        self._tag_continues = np.array([role in ("I", "E") for role, _ in roles], dtype=bool)
        self._tag_open = np.array([role in ("B", "I") for role, _ in roles], dtype=bool)

    def spec(self) -> dict[str, Any]:
        # float32 -> JSON (shortest repr of the float64) -> float32 gives back the same values.
        transitions = None if self.transitions is None else {k: v.tolist() for k, v in self.transitions.items()}
        return {"decoder": self.name, "entity_types": self.entity_types, "tags": self.tags, "scheme": self.scheme,
                "transitions": transitions}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "TagDecoder":
        return cls(spec["entity_types"], spec["tags"], spec["scheme"], spec.get("transitions"))

    def decode_batch(self, scores: np.ndarray, lengths: np.ndarray) -> list[list[ScoredSpan]]:
        scores, lengths = np.asarray(scores, dtype=np.float32), np.asarray(lengths, dtype=np.int64)
        mask = np.arange(scores.shape[1]) < lengths[:, None]
        return self.spans(scores[mask], self.best_paths(scores, lengths)[mask], lengths.tolist())

    def decode(self, word_scores: np.ndarray, lengths: Sequence[int]) -> list[list[ScoredSpan]]:
        """Sequences laid end to end (``word_scores`` [sum(lengths), tags]) -> spans per sequence."""
        word_scores = np.asarray(word_scores, dtype=np.float32).reshape(-1, len(self.tags))
        return self.spans(word_scores, self.paths(word_scores, lengths), lengths)

    def best_paths(self, scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The best tag id at every position of each row of a padded batch [batch, words, tags]
        (anything past a row's length)."""
        if self.transitions is None:
            return scores.argmax(-1)
        return self._viterbi(scores, np.asarray(lengths, dtype=np.int64))

    def _viterbi(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Batched Viterbi with backtracking on arrays: pytorch-crf's recurrence, float32
        arithmetic in the same order, and its tie-breaking (the first best previous tag)."""
        start, end, transitions = self.transitions["start"], self.transitions["end"], self.transitions["transitions"]
        batch, n, n_tags = emissions.shape
        if n == 0:
            return np.zeros((batch, 0), dtype=np.int64)
        rows = np.arange(batch)
        score = start + emissions[:, 0]
        history = np.empty((n - 1, batch, n_tags), dtype=np.int32 if n_tags < 2**31 else np.int64)
        for t in range(1, n):
            candidates = score[:, :, None] + transitions + emissions[:, t, None, :]
            previous = candidates.argmax(1)
            history[t - 1] = previous
            best = np.take_along_axis(candidates, previous[:, None, :], 1)[:, 0]
            score = np.where((t < lengths)[:, None], best, score)
        tag = (score + end).argmax(1)
        paths = np.empty((batch, n), dtype=np.int64)
        for t in range(n - 1, -1, -1):
            paths[:, t] = tag
            if t:  # past a row's end its last tag is carried back unchanged
                tag = np.where(t < lengths, history[t - 1][rows, tag], tag)
        return paths

    def paths(self, word_scores: np.ndarray, lengths: Sequence[int], chunk_words: int = 65536) -> np.ndarray:
        """Best tags of sequences laid end to end: argmax, or Viterbi over batches of sequences of
        similar length, at most ``chunk_words`` padded positions each."""
        if self.transitions is None:
            return word_scores.argmax(-1)
        paths = np.zeros(len(word_scores), dtype=np.int64)
        lengths_a = np.asarray(lengths, dtype=np.int64)
        offsets = np.cumsum(lengths_a) - lengths_a
        order = sorted((i for i in range(len(lengths)) if lengths[i]), key=lengths.__getitem__)
        while order:
            take = max(1, chunk_words // lengths[order[-1]])
            batch, order = np.array(order[-take:]), order[:-take]
            positions = offsets[batch, None] + np.arange(lengths[int(batch[-1])])
            mask = positions < (offsets + lengths_a)[batch, None]
            positions[~mask] = 0
            paths[positions[mask]] = self._viterbi(word_scores[positions], lengths_a[batch])[mask]
        return paths

    def spans(self, scores: np.ndarray, paths: np.ndarray, lengths: Sequence[int]) -> list[list[ScoredSpan]]:
        """Tag paths of sequences laid end to end -> spans per sequence, scored by the mean
        probability of their tags. Repairs ill-formed paths exactly as ``Scheme.decode`` does
        (an I-/E- that does not continue an entity of its type starts a new one), on arrays."""
        tags = np.asarray(paths, dtype=np.int64)
        chosen = _softmax_of(np.asarray(scores, dtype=np.float32), tags).astype(np.float64)
        lengths_a = np.asarray(lengths, dtype=np.int64)
        offsets = np.cumsum(lengths_a) - lengths_a
        first = np.zeros(len(tags), dtype=bool)
        first[offsets[lengths_a > 0]] = True
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


class SpanDecoder(Decoder):
    """Span scores [types, start word, end word] (GlobalPointer): every span scoring above
    ``threshold`` is an entity (nested and overlapping ones included), scored by its sigmoid."""

    name, merge, nested = "spans", SPANS, True

    def __init__(self, entity_types: Sequence[str], threshold: float = 0.0):
        super().__init__(entity_types)
        self.threshold = float(threshold)

    def spec(self) -> dict[str, Any]:
        return {"decoder": self.name, "entity_types": self.entity_types, "threshold": self.threshold}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SpanDecoder":
        return cls(spec["entity_types"], spec["threshold"])

    def decode_batch(self, scores: np.ndarray, lengths: np.ndarray) -> list[list[ScoredSpan]]:
        scores, lengths = np.asarray(scores), np.asarray(lengths, dtype=np.int64)
        row, label, start, end = np.nonzero(scores > self.threshold)
        inside = (end < lengths[row]) & (start <= end)  # padding and end-before-start never count
        row, label, start, end = row[inside], label[inside], start[inside], end[inside]
        probs = 1.0 / (1.0 + np.exp(-scores[row, label, start, end].astype(np.float64)))
        out: list[list[ScoredSpan]] = [[] for _ in range(len(lengths))]
        for r, lab, s, e, p in zip(row.tolist(), label.tolist(), start.tolist(), end.tolist(), probs.tolist()):
            out[r].append(ScoredSpan(s, e + 1, self.entity_types[lab], p))
        return [sorted(spans) for spans in out]
