"""Overlapping windows over long token sequences, cut at word boundaries.

A document is never truncated: it is covered by windows of at most ``capacity`` sub-word
tokens, consecutive windows sharing at least ``stride`` tokens (rounded out to a whole word).
When predictions are merged back, each word is taken from the window in which it sits most
centrally (the "maximal context" rule of BERT's SQuAD code), and each span from the window in
which it lies fully and most centrally.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple, Sequence

import numpy as np


class Window(NamedTuple):
    word_start: int
    word_end: int  # exclusive
    token_start: int
    token_end: int  # exclusive; a single word longer than the window keeps its first pieces


def check_window_size(capacity: int, stride: int) -> None:
    if capacity < 1:
        raise ValueError(f"a window must hold at least one token, got capacity {capacity} (max_length too small)")
    if not 0 <= stride < capacity:
        raise ValueError(
            f"stride is the overlap between consecutive windows in tokens and must be in [0, {capacity}) "
            f"for windows of {capacity} content tokens, got {stride}: the window would make no progress"
        )


def plan_windows(word_token_starts: Sequence[int], n_tokens: int, capacity: int, stride: int) -> list[Window]:
    """Cover all words with windows of at most ``capacity`` tokens overlapping by >= ``stride``."""
    check_window_size(capacity, stride)
    n_words = len(word_token_starts)
    if n_words == 0:
        return []
    word_token_ends = [*word_token_starts[1:], n_tokens]
    windows = []
    w = 0
    while True:
        t0 = word_token_starts[w]
        end = w + 1
        while end < n_words and word_token_ends[end] - t0 <= capacity:
            end += 1
        windows.append(Window(w, end, t0, min(word_token_ends[end - 1], t0 + capacity)))
        if end == n_words:
            return windows
        # Next window starts at the last word beginning at or before (window end - stride), so the
        # overlap is at least `stride` tokens, but always at least one word later than this one.
        w = max(w + 1, bisect_right(word_token_starts, word_token_ends[end - 1] - stride) - 1)


class WindowTable(NamedTuple):
    """The windows of a list of documents as arrays, one row per window (documents in order,
    each document's windows in order), so merging predictions back runs on arrays, not per word."""

    doc: np.ndarray  # the document each window belongs to
    word_start: np.ndarray
    word_end: np.ndarray
    token_start: np.ndarray
    token_end: np.ndarray
    doc_words: np.ndarray  # per document: the words its windows cover (0 for a document without windows)

    @classmethod
    def of(cls, windows_per_doc: Sequence[Sequence[Window]]) -> "WindowTable":
        rows = np.array([(d, *w) for d, windows in enumerate(windows_per_doc) for w in windows], dtype=np.int64)
        columns = rows.reshape(-1, 5).T
        doc_words = np.array([windows[-1].word_end if windows else 0 for windows in windows_per_doc], dtype=np.int64)
        return cls(*columns, doc_words)

    def word_rows(self) -> np.ndarray:
        """For every covered word (documents in order), its position in the windows' words laid
        end to end in window order, taken from the window where the word is most central (the
        earliest window on ties: maximal context)."""
        sizes = self.word_end - self.word_start
        window = np.repeat(np.arange(len(sizes)), sizes)
        position = np.arange(len(window)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        context = np.minimum(position, sizes[window] - 1 - position)
        doc_offset = np.cumsum(self.doc_words) - self.doc_words
        word = doc_offset[self.doc[window]] + self.word_start[window] + position
        order = np.lexsort((np.arange(len(word)), -context, word))  # by word, most central first, earliest first
        first = np.ones(len(order), dtype=bool)
        first[1:] = word[order[1:]] != word[order[:-1]]
        return order[first]

    def word_owners(self) -> np.ndarray:
        """For every covered word (documents in order), the row of the window it is taken from."""
        sizes = self.word_end - self.word_start
        return np.searchsorted(np.cumsum(sizes), self.word_rows(), side="right")

    def span_owners(self, doc: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """For each span (its document, words [start, end)), the row of the window holding it
        fully and most centrally (earliest on ties, as for words), or -1 if no window holds it."""
        doc, start, end = (np.asarray(x, dtype=np.int64) for x in (doc, start, end))
        # Window starts and ends both increase within a document, so the windows holding a span
        # are the rows from the first ending at or after `end` to the last starting at or before
        # `start`; keys doc * big + position keep each search inside the span's document.
        big = int(self.word_end.max(initial=0)) + 1
        last = np.searchsorted(self.doc * big + self.word_start, doc * big + start, side="right") - 1
        first = np.searchsorted(self.doc * big + self.word_end, doc * big + end, side="left")
        owners, best = np.full(len(doc), -1, dtype=np.int64), np.full(len(doc), -1, dtype=np.int64)
        for step in range(int((last - first).max(initial=-1)) + 1):  # a few windows hold any one span
            row = first + step
            holds = row <= last
            row = np.where(holds, row, 0)
            context = np.minimum(start - self.word_start[row], self.word_end[row] - end)
            better = holds & (context > best)
            owners[better], best[better] = row[better], context[better]
        return owners


def budget_batches(lengths: Sequence[int], batch_size: int, max_tokens: int, batch_cost: int) -> list[list[int]]:
    """Indices of ``lengths`` in ascending length (stable), cut into batches of at most
    ``batch_size`` windows and ``max_tokens`` padded tokens (a window over the budget runs alone),
    at the cuts that minimise padded tokens plus ``batch_cost`` tokens per batch (its fixed cost).

    Filling each batch up to the limits pads the shortest windows of the next length range to
    the longest: on a server's rounds of a few hundred short texts that is half again as many
    padded tokens as the optimal cuts. Those come from a dynamic programme over the sorted lengths
    (``best[i]``: the cheapest batching of the ``i`` shortest windows), O(windows x batch_size)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    ordered = np.asarray(lengths, dtype=np.int64)[order]
    n = len(ordered)
    best, start = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # the last batch is ordered[first:end], padded to ordered[end - 1]
        longest = int(ordered[end - 1])
        first = max(0, end - batch_size, end - max(1, max_tokens // max(longest, 1)))
        firsts = np.arange(first, end)
        costs = best[first:end] + batch_cost + (end - firsts) * longest
        k = int(np.argmin(costs))  # ties: the earliest start, i.e. the fuller batch
        best[end], start[end] = costs[k], firsts[k]
    batches, end = [], n
    while end > 0:
        batches.append(order[start[end]:end].tolist())
        end = int(start[end])
    return batches[::-1]
