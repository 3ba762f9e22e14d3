"""Raw text -> sub-word tokens, words and windows, using the fast tokenizer's offset mapping.

A *word* is a pre-tokenizer unit of the tokenizer (whitespace/punctuation split for BERT
WordPiece; every CJK character on its own). Labels live on words, carried by each word's
first sub-token, so training data and raw text at prediction time are cut the same way, and
every word knows its exact character span in the original string.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Sequence

from transformers import PreTrainedTokenizerBase

from nerkit.data.schemes import Span
from nerkit.data.windowing import Window, check_window_size, plan_windows


@dataclass
class EncodedText:
    token_ids: list[int]  # content tokens, without special tokens
    word_token_starts: list[int]  # index of each word's first sub-token
    word_char_starts: list[int]
    word_char_ends: list[int]
    windows: list[Window]

    @property
    def n_words(self) -> int:
        return len(self.word_token_starts)


@dataclass
class AlignmentStats:
    """Gold spans that do not fall on word boundaries (kept, widened) or cover no word (lost)."""

    widened: int = 0
    lost: int = 0


# BERT-style normalizers delete control characters, gluing "a\x07b" into one word; a space of the
# same length separates the words instead and leaves every character offset unchanged.
_CONTROLS_TO_SPACE = {c: " " for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r"}


class TextEncoder:
    """Tokenizes texts and cuts them into model inputs of at most ``max_length`` tokens.

    ``truncate=True`` keeps only each text's first window (a baseline for comparing against
    sliding windows): words after it are still encoded, so gold entities there count as missed.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int, truncate: bool = False):
        self.tokenizer = tokenizer
        # The tokenizer's own template tells which special tokens wrap a sequence.
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        wrapped = tokenizer("a")["input_ids"]
        at = next(i for i in range(len(wrapped)) if wrapped[i : i + len(probe)] == probe)
        self.prefix_ids, self.suffix_ids = wrapped[:at], wrapped[at + len(probe) :]
        self.capacity = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        self.stride = stride
        self.truncate = truncate
        check_window_size(self.capacity, stride)

    def encode(self, texts: Sequence[str]) -> list[EncodedText]:
        # verbose=False: texts longer than the model are expected here (they get windows), so
        # the tokenizer's "sequence too long" warning would be a false alarm.
        batch = self.tokenizer(
            [text.translate(_CONTROLS_TO_SPACE) for text in texts],
            add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False,
        )
        out = []
        for i, token_ids in enumerate(batch["input_ids"]):
            offsets = batch["offset_mapping"][i]
            token_starts, char_starts, char_ends = [], [], []
            previous = None
            for t, word in enumerate(batch.word_ids(i)):
                if word != previous:
                    token_starts.append(t)
                    char_starts.append(offsets[t][0])
                    char_ends.append(offsets[t][1])
                    previous = word
                else:
                    char_ends[-1] = offsets[t][1]
            windows = plan_windows(token_starts, len(token_ids), self.capacity, self.stride)
            if self.truncate:
                windows = windows[:1]
            out.append(EncodedText(token_ids, token_starts, char_starts, char_ends, windows))
        return out

    def window_input(self, enc: EncodedText, win: Window) -> tuple[list[int], list[int]]:
        """Model input ids for one window, and the position of each of its words' first sub-token."""
        input_ids = self.prefix_ids + enc.token_ids[win.token_start : win.token_end] + self.suffix_ids
        shift = len(self.prefix_ids) - win.token_start
        word_index = [enc.word_token_starts[w] + shift for w in range(win.word_start, win.word_end)]
        return input_ids, word_index


def char_to_word_spans(enc: EncodedText, spans: Sequence[Span], stats: AlignmentStats) -> list[Span]:
    """Character spans -> word spans ``(first_word, end_word, label)``."""
    out = []
    for start, end, label in spans:
        first = bisect_right(enc.word_char_ends, start)  # first word ending after `start`
        last = bisect_left(enc.word_char_starts, end) - 1  # last word starting before `end`
        if first > last:
            stats.lost += 1
            continue
        if enc.word_char_starts[first] != start or enc.word_char_ends[last] != end:
            stats.widened += 1
        out.append(Span(first, last + 1, label))
    return out


def word_to_char_span(enc: EncodedText, start: int, end: int) -> tuple[int, int]:
    return enc.word_char_starts[start], enc.word_char_ends[end - 1]


@dataclass(frozen=True)
class Entity:
    """A predicted entity (here, not in the predictor, so that torch-free runtimes share it)."""

    start: int  # character offset into the original text
    end: int  # exclusive: text[start:end] is the entity
    label: str
    text: str
    score: float


def to_entities(text: str, enc: EncodedText, spans: Sequence[tuple[int, int, str, float]]) -> list[Entity]:
    """Word spans ``(start, end, label, score)`` of ``text`` -> entities with character offsets."""
    entities = []
    for start, end, label, score in spans:
        c0, c1 = word_to_char_span(enc, start, end)
        entities.append(Entity(c0, c1, label, text[c0:c1], score))
    return entities
