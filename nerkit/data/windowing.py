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


def word_owners(windows: Sequence[Window], n_words: int) -> np.ndarray:
    """For each word, the index of the window in which it is most central (earliest on ties)."""
    owner = np.zeros(n_words, dtype=np.int64)
    best = np.full(n_words, -1, dtype=np.int64)
    for k, win in enumerate(windows):
        idx = np.arange(win.word_start, win.word_end)
        context = np.minimum(idx - win.word_start, win.word_end - 1 - idx)
        better = context > best[idx]
        best[idx[better]] = context[better]
        owner[idx[better]] = k
    return owner


def span_owner(windows: Sequence[Window], start: int, end: int) -> int | None:
    """The window holding words [start, end) fully and most centrally, or None if none holds it."""
    # Window starts and ends both increase, so the windows holding the span are the ones just
    # before the last window starting at or before `start`.
    k = bisect_right(windows, start, key=lambda win: win.word_start) - 1
    best_k, best_context = None, -1
    while k >= 0 and windows[k].word_end >= end:
        context = min(start - windows[k].word_start, windows[k].word_end - end)
        if context >= best_context:  # >= : the earliest window wins ties, as in word_owners
            best_k, best_context = k, context
        k -= 1
    return best_k
