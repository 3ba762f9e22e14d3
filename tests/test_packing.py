"""Sequence packing in training: the padded batch's outputs and gradients, without computing its padding."""
from __future__ import annotations

import logging
import random

import pytest
import torch
from torch import nn
from transformers import masking_utils

from nerkit.encoders.bert import BertEncoder
from nerkit.encoders.packing import Packing, first_fit_decreasing


def test_rows_hold_every_sequence_once_within_the_capacity():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 20))]
        rows = first_fit_decreasing(lengths, max(lengths))
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= max(lengths) for row in rows)
    assert first_fit_decreasing([6, 2, 4, 2, 2], 6) == [[0], [2, 1], [3, 4]]


def padded_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1000, 2000, (n,), generator=generator)
        mask[i, :n] = 1
    return ids, mask


def test_packing_moves_every_real_token_and_unpacking_brings_each_back():
    ids, mask = padded_batch([5, 1, 9, 3, 4, 9])
    packing = Packing.plan(mask)
    packed = packing.pack(ids, fill=-1)
    assert packed.shape == (4, 9)  # rows of lengths [9], [9], [5, 4], [3, 1] instead of six rows
    assert sorted(packed[packed >= 0].tolist()) == sorted(ids[mask.bool()].tolist())
    assert packing.positions[packed >= 0].max() == 8 and packing.positions[0].tolist() == list(range(9))
    vectors = packing.unpack(packed.float()[..., None])  # each packed "vector" is its token id
    assert torch.equal(vectors[..., 0], (ids * mask).float())


def refuse_packing(*args):
    raise AssertionError("packed")


def training_encoder(tiny_bert_dir) -> BertEncoder:
    encoder = BertEncoder(str(tiny_bert_dir)).train()
    for module in encoder.modules():  # the same dropout masks cannot be drawn for differently shaped batches
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return encoder


def outputs_and_gradients(encoder: BertEncoder, ids: torch.Tensor, mask: torch.Tensor):
    encoder.zero_grad()
    out = encoder(ids, mask)
    (out * mask[..., None]).pow(2).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}


def test_a_packed_training_step_gives_the_padded_batch_outputs_and_gradients(tiny_bert_dir):
    encoder = training_encoder(tiny_bert_dir)
    assert encoder.pack_in_training
    ids, mask = padded_batch([3, 11, 7, 2, 11, 5, 1])
    real = mask.bool()
    packed, packed_grads = outputs_and_gradients(encoder, ids, mask)
    encoder.pack_in_training = False
    padded, padded_grads = outputs_and_gradients(encoder, ids, mask)

    assert torch.allclose(packed[real], padded[real], atol=1e-5) and not packed[~real].any()
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4), name
    # What keeps them apart: positions that ran on through a row would let packed sequences see each other.
    packing = Packing.plan(mask)
    with torch.no_grad():
        leaky = encoder.model(input_ids=packing.pack(ids, 0),
                              position_ids=torch.arange(ids.shape[1]).expand_as(packing.positions)).last_hidden_state
    assert not torch.allclose(packing.unpack(leaky)[real], padded[real], atol=1e-3)


def test_a_model_that_does_not_pack_exactly_trains_padded_and_says_so(tiny_bert_dir, monkeypatch, caplog):
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with caplog.at_level(logging.WARNING, logger="nerkit.encoders.bert"):
        encoder = training_encoder(tiny_bert_dir)
    assert not encoder.pack_in_training
    assert "training pads its batches instead of packing them" in caplog.text
    ids, mask = padded_batch([3, 8])
    assert encoder(ids, mask).shape == (2, 8, encoder.hidden_size)


def test_prediction_is_never_packed(tiny_bert_dir, monkeypatch):
    encoder = training_encoder(tiny_bert_dir).eval()
    monkeypatch.setattr(encoder, "packed_forward", refuse_packing)
    ids, mask = padded_batch([3, 8])
    assert encoder(ids, mask).shape == (2, 8, encoder.hidden_size)


def test_a_batch_that_packing_would_not_shorten_is_computed_padded(tiny_bert_dir, monkeypatch):
    encoder = training_encoder(tiny_bert_dir)
    monkeypatch.setattr(Packing, "pack", refuse_packing)
    ids, mask = padded_batch([6, 5, 6])  # no two fit in one row of 6
    assert encoder(ids, mask).shape == (3, 6, encoder.hidden_size)
    with pytest.raises(AssertionError, match="packed"):  # [6], [3, 2]: this one is packed
        encoder(*padded_batch([6, 3, 2]))
