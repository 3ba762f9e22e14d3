"""Prediction batches by a token budget: short windows share a batch, results do not depend on it."""
from __future__ import annotations

import torch

from conftest import make_cfg
from nerkit.model import NerModel
from nerkit.predict import Predictor


def make_predictor(tiny_bert_dir, batch_size: int) -> Predictor:
    torch.manual_seed(0)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "head=softmax"])
    return Predictor(NerModel.from_config(cfg, ["LOC", "PER"]), max_length=16, stride=4, batch_size=batch_size)


def test_batches_stay_within_the_token_budget_and_keep_the_length_order(tiny_bert_dir):
    predictor = make_predictor(tiny_bert_dir, batch_size=2)  # 2 windows of 16 tokens = 32 tokens
    lengths = [3, 3, 4, 5, 8, 9, 16, 16, 16]
    batches = predictor._token_batches(lengths, list(range(len(lengths))))
    assert [j for batch in batches for j in batch] == list(range(len(lengths)))
    assert all(len(batch) * max(lengths[j] for j in batch) <= 32 for batch in batches)
    assert batches[0] == [0, 1, 2, 3]  # four short windows where two full ones would fit
    assert [len(b) for b in batches[-2:]] == [2, 1]


def test_predictions_do_not_depend_on_the_batch_budget(tiny_bert_dir):
    texts = ["John lives in Berlin .", "Paris", "a much longer text that needs several windows " * 3, "Maria works"]
    small, large = make_predictor(tiny_bert_dir, batch_size=1), make_predictor(tiny_bert_dir, batch_size=64)
    assert [[(e.start, e.end, e.label) for e in ents] for ents in small.predict(texts)] == \
           [[(e.start, e.end, e.label) for e in ents] for ents in large.predict(texts)]
