"""Prediction batches by a token budget: short windows share a batch, results do not depend on it."""
from __future__ import annotations

import torch

from nerkit.data.windowing import budget_batches
from nerkit.model import NerModel
from nerkit.predict import Predictor
from tests.helpers import make_cfg


def make_predictor(tiny_bert_dir, batch_size: int, max_batch_tokens: int | None = None) -> Predictor:
    torch.manual_seed(0)
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "head=softmax"])
    return Predictor(NerModel.from_config(cfg, ["LOC", "PER"]), max_length=16, stride=4, batch_size=batch_size,
                     max_batch_tokens=max_batch_tokens)


def test_batches_stay_within_both_limits_and_keep_the_length_order():
    lengths = [16, 3, 40, 5, 8, 9, 3, 16, 4]
    batches = budget_batches(lengths, batch_size=3, max_tokens=32)
    order = [j for batch in batches for j in batch]
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[j] for j in order] == sorted(lengths) and order[:2] == [1, 6]  # ascending, stable on ties
    assert all(len(batch) <= 3 for batch in batches)
    assert all(len(batch) * max(lengths[j] for j in batch) <= 32 for batch in batches[:-1])
    assert [[lengths[j] for j in batch] for batch in batches] == [[3, 3, 4], [5, 8, 9], [16, 16], [40]]  # 40 runs alone


def test_predictions_do_not_depend_on_the_batch_budget(tiny_bert_dir):
    texts = ["John lives in Berlin .", "Paris", "a much longer text that needs several windows " * 3, "Maria works"]
    small = make_predictor(tiny_bert_dir, batch_size=1)
    large = make_predictor(tiny_bert_dir, batch_size=64, max_batch_tokens=4096)
    assert [[(e.start, e.end, e.label) for e in ents] for ents in small.predict(texts)] == \
           [[(e.start, e.end, e.label) for e in ents] for ents in large.predict(texts)]
