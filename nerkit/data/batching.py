"""Training examples (one per window), the batch orders (random, length-grouped) and dynamic padding."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from datasets import Dataset

from nerkit.data.encoding import AlignmentStats, TextEncoder, char_to_word_spans
from nerkit.data.readers import Document

log = logging.getLogger(__name__)


def remove_overlaps(spans: Sequence[tuple[int, int, int]]) -> tuple[list[tuple[int, int, int]], int]:
    """Keep a flat subset of spans (longest first, then leftmost, then the smallest label: the
    same span with two labels must not depend on the input order, e.g. of a set, whose order
    changes from process to process); return it and how many were dropped."""
    kept: list[tuple[int, int, int]] = []
    for span in sorted(spans, key=lambda s: (s[0] - s[1], s[0], s[2])):
        if all(span[1] <= k[0] or k[1] <= span[0] for k in kept):
            kept.append(span)
    return sorted(kept), len(spans) - len(kept)


def window_dataset(
    documents: Sequence[Document], encoder: TextEncoder, entity_types: Sequence[str], nested: bool
) -> Dataset:
    """One row per window: ``input_ids``, ``word_index`` and the gold ``spans`` inside it
    (word indices relative to the window; an entity cut by a window edge is clipped to it,
    and appears whole in the neighbouring window thanks to the overlap). Documents with
    ``tokens`` are labelled on those tokens, others on the tokenizer's pre-tokenizer words."""
    label_ids = {label: i for i, label in enumerate(entity_types)}
    stats = AlignmentStats()
    counts = {"overlapping entities dropped (flat head)": 0, "entities not whole in any window (cut by window edges or truncated)": 0,
              "dataset tokens without sub-tokens (trained as the unknown token)": 0}

    def to_windows(batch: dict) -> dict:
        rows: dict[str, list] = {"input_ids": [], "word_index": [], "spans": []}
        tokens = [[tuple(t) for t in toks] if tokenized else None for toks, tokenized in zip(batch["tokens"], batch["tokenized"])]
        encodings = encoder.encode(batch["text"], tokens)
        counts["dataset tokens without sub-tokens (trained as the unknown token)"] += sum(e.unk_tokens for e in encodings)
        for enc, spans in zip(encodings, batch["spans"]):
            word_spans = char_to_word_spans(enc, [(x["start"], x["end"], x["label"]) for x in spans], stats)
            word_spans = [(s, e, label_ids[label]) for s, e, label in word_spans]
            if not nested:
                word_spans, dropped = remove_overlaps(word_spans)
                counts["overlapping entities dropped (flat head)"] += dropped
            whole = set()
            for win in enc.windows:
                input_ids, word_index = encoder.window_input(enc, win)
                inside = []
                for s, e, label in word_spans:
                    if s < win.word_end and e > win.word_start:
                        inside.append([max(s, win.word_start) - win.word_start, min(e, win.word_end) - win.word_start, label])
                        if win.word_start <= s and e <= win.word_end:
                            whole.add((s, e, label))
                rows["input_ids"].append(input_ids)
                rows["word_index"].append(word_index)
                rows["spans"].append(inside)
            counts["entities not whole in any window (cut by window edges or truncated)"] += len(set(word_spans) - whole)
        return rows

    data = Dataset.from_dict({
        "text": [d.text for d in documents],
        "spans": [[{"start": s, "end": e, "label": label} for s, e, label in d.spans] for d in documents],
        "tokens": [[list(t) for t in d.tokens or []] for d in documents],
        "tokenized": [d.tokens is not None for d in documents],
    })
    windows = data.map(to_windows, batched=True, remove_columns=data.column_names, desc="windows", keep_in_memory=True)
    for what, n in [("entity spans widened to word boundaries", stats.widened),
                    ("entity spans covering no token (lost)", stats.lost), *counts.items()]:
        if n:
            log.warning("%d %s", n, what)
    return windows


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar-length examples, so that dynamic padding wastes little.

    Examples are shuffled, sorted by length within groups of 50 batches, cut into batches,
    and the batches shuffled again; the same seed always gives the same order (exact resume).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = batch_size * 50
    batches = []
    for g in range(0, len(order), group):
        chunk = sorted(order[g : g + group], key=lambda i: -lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [[int(i) for i in batches[b]] for b in rng.permutation(len(batches))]


def random_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Uniformly shuffled batches whatever their lengths (the HF Trainer's default order): more
    padding than ``length_grouped_batches``; the same seed always gives the same order."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    return [[int(i) for i in order[b : b + batch_size]] for b in range(0, len(order), batch_size)]


BATCH_ORDERS = {"length": length_grouped_batches, "random": random_batches}


def pad(sequences: Sequence[Sequence[int]] | Sequence[torch.Tensor], value: int | float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> a [rows, longest] long tensor padded with ``value``, and the
    boolean mask of real positions. Rows given as tensors [length, ...] keep their dtype and
    trailing dimensions (e.g. per-word score vectors). The one padding routine of training and
    prediction."""
    width = max((len(s) for s in sequences), default=0)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    mask = torch.arange(width) < lengths[:, None]
    if sequences and isinstance(sequences[0], torch.Tensor):
        first = sequences[0]
        padded = torch.full((len(sequences), width, *first.shape[1:]), value, dtype=first.dtype, device=first.device)
        padded[mask] = torch.cat(list(sequences))
        return padded, mask.to(first.device)
    padded = torch.full((len(sequences), width), value, dtype=torch.long)
    padded[mask] = torch.tensor([x for s in sequences for x in s], dtype=torch.long)
    return padded, mask


def collate(rows: Sequence[dict], pad_id: int) -> dict:
    """Pad a batch of windows to its own longest window (dynamic padding)."""
    input_ids, attention = pad([r["input_ids"] for r in rows], pad_id)
    word_index, word_mask = pad([r["word_index"] for r in rows])
    return {"input_ids": input_ids, "attention_mask": attention.long(), "word_index": word_index,
            "word_mask": word_mask, "spans": [r["spans"] for r in rows]}
