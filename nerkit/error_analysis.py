"""Error analysis: gold vs predicted character spans of each document -> classes of errors.

Spans are compared as exact character spans ``(start, end, label)``. A predicted span equal to
a gold span is correct. The others are explained against the gold spans that were *not* found
exactly (a gold span already found is not an explanation for another prediction):

- ``type``: a gold span with the same boundaries and another type;
- ``boundary``: overlapping a gold span of the same type, other boundaries;
- ``type_and_boundary``: overlapping only gold spans of other types, other boundaries;
- ``spurious``: overlapping no such gold span;
- ``missed``: a gold span that no remaining prediction overlaps at all.

Each remaining prediction gets exactly one class (the first that applies, in that order), so
``predicted = correct + type + boundary + type_and_boundary + spurious``; a gold span overlapped
by a wrong prediction is accounted for by that prediction's error, not as missed.

Nested entities get their own view (``nested_errors``): inner gold spans (inside another gold
span) not predicted exactly, and wrong predictions inside another prediction.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from nerkit.data.encoding import AlignmentStats, EncodedText, char_to_word_spans
from nerkit.data.schemes import Span, inner_spans

ERROR_CLASSES = ("missed", "spurious", "boundary", "type", "type_and_boundary")
NONE = "(none)"  # the confusion matrix's row for spurious and column for missed spans


@dataclass(frozen=True)
class SpanError:
    kind: str  # one of ERROR_CLASSES
    gold: Span | None  # the gold span it is explained by (None: spurious)
    predicted: Span | None  # None: missed

    @property
    def spans(self) -> list[Span]:
        return [s for s in (self.gold, self.predicted) if s is not None]


def _overlap(a: Span, b: Span) -> int:
    return min(a.end, b.end) - max(a.start, b.start)


def classify_errors(gold: Sequence[Span], predicted: Sequence[Span]) -> tuple[list[Span], list[SpanError]]:
    """The correct predictions, and one ``SpanError`` per wrong prediction and per missed gold span."""
    gold_set, predicted_set = set(map(Span._make, gold)), set(map(Span._make, predicted))
    correct = sorted(gold_set & predicted_set)
    open_gold = sorted(gold_set - predicted_set)
    errors = []
    explained: set[Span] = set()
    for p in sorted(predicted_set - gold_set):
        overlapping = [g for g in open_gold if _overlap(g, p) > 0]
        same_boundary = [g for g in overlapping if (g.start, g.end) == (p.start, p.end)]
        same_type = [g for g in overlapping if g.label == p.label]
        for kind, candidates in (("type", same_boundary), ("boundary", same_type),
                                 ("type_and_boundary", overlapping)):
            if candidates:
                best = max(candidates, key=lambda g: _overlap(g, p))  # earliest on ties (sorted)
                errors.append(SpanError(kind, best, p))
                break
        else:
            errors.append(SpanError("spurious", None, p))
        explained.update(overlapping)
    errors += [SpanError("missed", g, None) for g in open_gold if g not in explained]
    return correct, errors


def nested_errors(gold: Sequence[Span], predicted: Sequence[Span]) -> dict[str, list[Span]]:
    """Nesting errors of one document: ``missed_inner``, gold spans inside another gold span that
    were not predicted exactly; ``spurious_inner``, wrong predictions inside another prediction;
    and ``found_inner``, the inner gold spans predicted exactly."""
    gold_set, predicted_set = set(map(Span._make, gold)), set(map(Span._make, predicted))
    inner_gold = inner_spans(gold_set)
    return {"found_inner": sorted(inner_gold & predicted_set), "missed_inner": sorted(inner_gold - predicted_set),
            "spurious_inner": sorted(inner_spans(predicted_set) - gold_set)}


def enclosing(span: Span, spans: Sequence[Span]) -> Span | None:
    """The smallest of ``spans`` with another extent that contains ``span`` (None if none does)."""
    outer = [s for s in spans if s.start <= span.start and span.end <= s.end and (s.start, s.end) != (span.start, span.end)]
    return min(outer, key=lambda s: (s.end - s.start, s), default=None)


@dataclass
class TypeCounts:
    gold: int = 0
    predicted: int = 0
    correct: int = 0

    def scores(self) -> dict[str, float | int]:
        precision = self.correct / self.predicted if self.predicted else 0.0
        recall = self.correct / self.gold if self.gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "gold": self.gold, "predicted": self.predicted,
                "correct": self.correct}


def type_scores(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> dict[str, dict]:
    """Exact-span precision / recall / F1 and counts per entity type, plus ``"overall"`` (micro)."""
    counts: dict[str, TypeCounts] = {}
    total = TypeCounts()
    for doc_gold, doc_predicted in zip(gold, predicted, strict=True):
        gold_set, predicted_set = set(map(Span._make, doc_gold)), set(map(Span._make, doc_predicted))
        for spans, field in ((gold_set, "gold"), (predicted_set, "predicted"), (gold_set & predicted_set, "correct")):
            for span in spans:
                for c in (counts.setdefault(span.label, TypeCounts()), total):
                    setattr(c, field, getattr(c, field) + 1)
    return {**{label: counts[label].scores() for label in sorted(counts)}, "overall": total.scores()}


def confusion(correct: Sequence[Span], errors: Sequence[SpanError]) -> Counter:
    """(gold type, predicted type) -> count over every predicted span and every missed gold span:
    a prediction counts under the gold span it overlaps (``NONE`` when spurious), a missed gold
    span under ``NONE``. Off the diagonal: predictions overlapping a gold span of another type."""
    pairs = Counter((s.label, s.label) for s in correct)
    for e in errors:
        pairs[e.gold.label if e.gold else NONE, e.predicted.label if e.predicted else NONE] += 1
    return pairs


def window_edges(enc: EncodedText) -> list[int]:
    """Token positions where a window starts or ends inside the text (not at its very start or end)."""
    n_tokens = len(enc.token_ids)
    edges = {w.token_start for w in enc.windows if w.token_start > 0}
    edges |= {w.token_end for w in enc.windows if w.token_end < n_tokens}
    return sorted(edges)


def edge_distance(enc: EncodedText, span: Span, edges: Sequence[int]) -> int | None:
    """How many sub-word tokens separate a character span from the nearest window edge (0: it
    touches or crosses one); None without edges or when the span covers no word."""
    words = char_to_word_spans(enc, [span], AlignmentStats())
    if not edges or not words:
        return None
    first, end, _ = words[0]
    t0 = enc.word_token_starts[first]
    t1 = enc.word_token_starts[end] if end < enc.n_words else len(enc.token_ids)
    return min(e - t1 if t1 <= e else t0 - e if t0 >= e else 0 for e in edges)
