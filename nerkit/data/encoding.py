"""Texts -> sub-word tokens, words and windows, using the fast tokenizer's offset mapping.

A *word* is the unit the model labels, carried by its first sub-token, and knows its exact
character span in the original string. For data that comes tokenized (``Document.tokens``:
CoNLL columns) the words ARE the dataset's tokens, each tokenized on its own as HF run_ner
does, so that the model learns and is scored on the units conlleval scores. Raw text is cut
into words by the run's word splitter (``nerkit.data.words``, config key ``data.words``), which
reproduces the training data's tokens and then takes the same path; or, with
``words="pretokenizer"``, into the tokenizer's pre-tokenizer units (whitespace/punctuation split
for BERT WordPiece; every CJK character on its own).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Sequence

import regex
from transformers import PreTrainedTokenizerBase

from nerkit.data.schemes import Span
from nerkit.data.windowing import Window, check_window_size, plan_windows
from nerkit.data.words import CONTROLS_TO_SPACE, DEFAULT_WORDS, word_splitter


@dataclass
class EncodedText:
    token_ids: list[int]  # content tokens, without special tokens
    word_token_starts: list[int]  # index of each word's first sub-token
    word_char_starts: list[int]
    word_char_ends: list[int]
    windows: list[Window]
    # Dataset tokens for which the tokenizer produced no sub-token (e.g. a lone zero-width or
    # control character): each is given the unknown token, so that it still has a label.
    unk_tokens: int = 0

    @property
    def n_words(self) -> int:
        return len(self.word_token_starts)


@dataclass
class AlignmentStats:
    """Gold spans that do not fall on word boundaries (kept, widened) or cover no word (lost)."""

    widened: int = 0
    lost: int = 0


class TextEncoder:
    """Tokenizes texts and cuts them into model inputs of at most ``max_length`` tokens.

    ``truncate=True`` keeps only each text's first window (a baseline for comparing against
    sliding windows): words after it are still encoded, so gold entities there count as missed.
    ``words`` names the splitter that cuts raw text into words (``nerkit.data.words``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int, truncate: bool = False,
                 words: str = DEFAULT_WORDS):
        self.tokenizer = tokenizer
        self.words = words
        self.split_words = word_splitter(words)
        # The tokenizer's own template tells which special tokens wrap a sequence.
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        wrapped = tokenizer("a")["input_ids"]
        at = next(i for i in range(len(wrapped)) if wrapped[i : i + len(probe)] == probe)
        self.prefix_ids, self.suffix_ids = wrapped[:at], wrapped[at + len(probe) :]
        self.capacity = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        self.stride = stride
        self.truncate = truncate
        check_window_size(self.capacity, stride)

    def encode(self, texts: Sequence[str], tokens: Sequence[Sequence[tuple[int, int]] | None] | None = None
               ) -> list[EncodedText]:
        """Encode texts; where ``tokens[i]`` is given (character spans of the dataset's tokens),
        text i's words are those tokens, else the words the splitter cuts it into."""
        tokens = tokens if tokens is not None else [None] * len(texts)
        if len(tokens) != len(texts):
            raise ValueError(f"got {len(tokens)} token lists for {len(texts)} texts")
        out: list[EncodedText | None] = [None] * len(texts)
        raw = [i for i, t in enumerate(tokens) if t is None]
        if self.split_words is None:
            encoded = self._encode_raw([texts[i] for i in raw])
        else:  # raw text cut into words as the training data was, then encoded as tokenized data
            encoded = self._encode_tokens([texts[i] for i in raw], [self.split_words(texts[i]) for i in raw],
                                          keep_empty=False)
        for i, enc in zip(raw, encoded):
            out[i] = enc
        split = [i for i, t in enumerate(tokens) if t is not None]
        for i, enc in zip(split, self._encode_tokens([texts[i] for i in split], [tokens[i] for i in split])):
            out[i] = enc
        return out

    def _finish(self, token_ids: list[int], token_starts: list[int], char_starts: list[int], char_ends: list[int],
                unk_tokens: int = 0) -> EncodedText:
        windows = plan_windows(token_starts, len(token_ids), self.capacity, self.stride)
        if self.truncate:
            windows = windows[:1]
        return EncodedText(token_ids, token_starts, char_starts, char_ends, windows, unk_tokens)

    def _encode_tokens(self, texts: Sequence[str], tokens: Sequence[Sequence[tuple[int, int]]],
                       keep_empty: bool = True) -> list[EncodedText]:
        """Pre-split input: each dataset token is tokenized on its own, its first sub-token
        carries its label (HF run_ner's ``is_split_into_words`` + ``word_ids``). A token the
        tokenizer drops entirely (a lone zero-width character) is kept as [UNK] when it is the
        data's (it has a label), and dropped when a splitter cut it from raw text."""
        words = [[text[s:e] for s, e in spans] for text, spans in zip(texts, tokens)]
        nonempty = [i for i, w in enumerate(words) if w]
        batch = self.tokenizer([words[i] for i in nonempty], is_split_into_words=True, add_special_tokens=False,
                               return_attention_mask=False, verbose=False) if nonempty else None
        out = [self._finish([], [], [], []) for _ in texts]
        for row, i in enumerate(nonempty):
            ids = batch["input_ids"][row]
            pieces: list[list[int]] = [[] for _ in words[i]]
            for t, w in enumerate(batch.word_ids(row)):
                pieces[w].append(ids[t])
            token_ids, token_starts, char_starts, char_ends, unk = [], [], [], [], 0
            for p, (start, end) in zip(pieces, tokens[i]):
                if not p:  # the tokenizer dropped this token entirely
                    if not keep_empty:
                        continue
                    p, unk = [self.tokenizer.unk_token_id], unk + 1
                token_starts.append(len(token_ids))
                char_starts.append(start)
                char_ends.append(end)
                token_ids += p
            out[i] = self._finish(token_ids, token_starts, char_starts, char_ends, unk)
        return out

    def _encode_raw(self, texts: Sequence[str]) -> list[EncodedText]:
        if not texts:
            return []
        # verbose=False: texts longer than the model are expected here (they get windows), so
        # the tokenizer's "sequence too long" warning would be a false alarm.
        batch = self.tokenizer(
            # BERT-style normalizers delete control characters, gluing "a\x07b" into one word; a space
            # of the same length separates the words instead and leaves every offset unchanged.
            [text.translate(CONTROLS_TO_SPACE) for text in texts],
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
            out.append(self._finish(token_ids, token_starts, char_starts, char_ends))
        return out

    def window_input(self, enc: EncodedText, win: Window) -> tuple[list[int], list[int]]:
        """Model input ids for one window, and the position of each of its words' first sub-token."""
        input_ids = self.prefix_ids + enc.token_ids[win.token_start : win.token_end] + self.suffix_ids
        shift = len(self.prefix_ids) - win.token_start
        word_index = [enc.word_token_starts[w] + shift for w in range(win.word_start, win.word_end)]
        return input_ids, word_index


def char_to_unit_spans(unit_starts: Sequence[int], unit_ends: Sequence[int], spans: Sequence[Span],
                       stats: AlignmentStats) -> list[Span]:
    """Character spans -> spans over ordered units (words, dataset tokens) given by their
    character starts and ends: ``(first_unit, end_unit, label)``, widened to whole units."""
    out = []
    for start, end, label in spans:
        first = bisect_right(unit_ends, start)  # first unit ending after `start`
        last = bisect_left(unit_starts, end) - 1  # last unit starting before `end`
        if first > last:
            stats.lost += 1
            continue
        if unit_starts[first] != start or unit_ends[last] != end:
            stats.widened += 1
        out.append(Span(first, last + 1, label))
    return out


def char_to_word_spans(enc: EncodedText, spans: Sequence[Span], stats: AlignmentStats) -> list[Span]:
    """Character spans -> word spans ``(first_word, end_word, label)``."""
    return char_to_unit_spans(enc.word_char_starts, enc.word_char_ends, spans, stats)


def word_to_char_span(enc: EncodedText, start: int, end: int) -> tuple[int, int]:
    return enc.word_char_starts[start], enc.word_char_ends[end - 1]


@dataclass(frozen=True)
class Entity:
    """A predicted entity (here, not in the predictor, so that torch-free runtimes share it)."""

    start: int  # character offset into the original text (token input: into the tokens joined by spaces)
    end: int  # exclusive: text[start:end] is the entity
    label: str
    text: str
    score: float
    token_start: int | None = None  # token input only: the entity's first token
    token_end: int | None = None  # token input only: exclusive


# One extended grapheme cluster: a character and the combining marks, variation selectors and
# joiners that belong to it.
_GRAPHEME = regex.compile(r"\X")


def grapheme_end(text: str, end: int) -> int:
    """``end`` moved forward to the end of the grapheme cluster its last character belongs to,
    so that an entity never stops before a trailing combining mark or variation selector."""
    if 0 < end < len(text):
        return max(end, _GRAPHEME.match(text, end - 1).end())
    return end


def to_entities(text: str, enc: EncodedText, spans: Sequence[tuple[int, int, str, float]],
                tokens: bool = False) -> list[Entity]:
    """Word spans ``(start, end, label, score)`` of ``text`` -> entities with character offsets
    (ends at grapheme-cluster ends); ``tokens``: the words are given tokens, whose indices the
    entities carry too."""
    entities = []
    for start, end, label, score in spans:
        c0, c1 = word_to_char_span(enc, start, end)
        c1 = grapheme_end(text, c1)
        entities.append(Entity(c0, c1, label, text[c0:c1], score, start if tokens else None, end if tokens else None))
    return entities
