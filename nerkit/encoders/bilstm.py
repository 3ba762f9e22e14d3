"""Embeddings + bidirectional LSTM, with a vocabulary built from the training data or borrowed."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nerkit.encoders.base import Encoder

PAD, UNK = "[PAD]", "[UNK]"


def build_vocab_tokenizer(
    texts: Sequence[str], min_freq: int = 1, max_size: int | None = None, lowercase: bool = False
) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over the training texts' words.

    BERT's normalizer and pre-tokenizer split on whitespace and punctuation and put every CJK
    character on its own, so the same vocabulary is a word vocabulary for English and a
    character vocabulary for Chinese, and offsets into the original text come for free.
    """
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        counts.update(word for word, _ in words)
    kept = [w for w, c in counts.most_common(max_size) if c >= min_freq]
    vocab = {PAD: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(kept)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, pad_token=PAD)


class BiLSTMEncoder(Encoder):
    needs_train_texts = True

    def __init__(
        self,
        vocab: str = "data",
        train_texts: Sequence[str] | None = None,
        min_freq: int = 1,
        max_vocab_size: int | None = None,
        lowercase: bool = False,
        embedding_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.3,
    ):
        """``vocab="data"`` builds the vocabulary from ``train_texts``; otherwise it names a
        pretrained tokenizer (path or hub name) whose vocabulary is used."""
        super().__init__()
        if vocab == "data":
            if not train_texts:
                raise ValueError("encoder.vocab=data builds the vocabulary from training texts, but none were given")
            self.tokenizer = build_vocab_tokenizer(train_texts, min_freq, max_vocab_size, lowercase)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(vocab)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {vocab!r} has no padding token")
        self.embedding = nn.Embedding(len(self.tokenizer), embedding_dim, padding_idx=self.tokenizer.pad_token_id)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embedding_dim, hidden_size // 2, num_layers=num_layers, bidirectional=True, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.hidden_size = hidden_size // 2 * 2

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(self.embedding(input_ids)), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return self.dropout(out)

    def save_files(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def reload_kwargs(cls, directory: Path) -> dict[str, Any]:
        return {"vocab": str(directory)}
