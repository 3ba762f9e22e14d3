"""Documents of any length -> encoder inputs for document classification (``task=classify``).

A document longer than the encoder's window is handled by an explicit strategy
(``task.strategy``), never by silent truncation:

* ``head``: the first window only (cut at a word boundary); the rest is dropped, and counted.
* ``head_tail``: the first ``head_tokens`` and the last ``capacity - head_tokens`` tokens
  (Sun et al. 2019, "How to fine-tune BERT for text classification": 128 + 382 at 512).
* ``windows``: sliding windows of ``max_length`` overlapping by ``stride`` cover the whole
  document; the model pools their vectors (``nerkit.classifier_model``).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from nerkit.data.batching import pad
from nerkit.data.encoding import TextEncoder

log = logging.getLogger(__name__)
STRATEGIES = ("head", "head_tail", "windows")


class DocumentInputs:
    """Texts -> per document, the list of encoder inputs (token ids with special tokens)."""

    def __init__(self, text_encoder: TextEncoder, strategy: str, head_tokens: int = 128):
        if strategy not in STRATEGIES:
            raise ValueError(f"task.strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "head_tail" and not 0 <= head_tokens <= text_encoder.capacity:
            raise ValueError(f"task.head_tokens={head_tokens} must be in [0, {text_encoder.capacity}] (the window's content tokens)")
        self.text_encoder, self.strategy, self.head_tokens = text_encoder, strategy, head_tokens
        self.truncated_documents = self.dropped_tokens = 0

    def __call__(self, texts: Sequence[str]) -> list[list[list[int]]]:
        enc, out = self.text_encoder, []
        for encoded in enc.encode(texts):
            ids, capacity = encoded.token_ids, enc.capacity
            empty = enc.prefix_ids + enc.suffix_ids  # a text without tokens still gets its [CLS]
            if self.strategy == "windows":
                out.append([enc.window_input(encoded, win)[0] for win in encoded.windows] or [empty])
                continue
            if self.strategy == "head":
                kept = enc.window_input(encoded, encoded.windows[0])[0] if encoded.windows else empty
                content = len(kept) - len(empty)
            else:
                tail = capacity - self.head_tokens
                content = ids if len(ids) <= capacity else ids[: self.head_tokens] + (ids[-tail:] if tail else [])
                kept, content = enc.prefix_ids + content + enc.suffix_ids, len(content)
            if content < len(ids):
                self.truncated_documents += 1
                self.dropped_tokens += len(ids) - content
            out.append([kept])
        return out

    def report(self, what: str) -> None:
        if self.truncated_documents:
            log.warning("%s: strategy %s truncated %d documents (%d tokens dropped)", what, self.strategy,
                        self.truncated_documents, self.dropped_tokens)
        self.truncated_documents = self.dropped_tokens = 0


def batch_tensors(docs_inputs: Sequence[list[list[int]]], pad_id: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Documents' encoder inputs -> padded ids and attention mask of all their rows, and rows per document."""
    input_ids, mask = pad([ids for inputs in docs_inputs for ids in inputs], pad_id)
    return input_ids.to(device), mask.long().to(device), [len(inputs) for inputs in docs_inputs]
