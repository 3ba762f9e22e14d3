"""Prediction batches by a token budget: short windows share a batch, results do not depend on it."""
from __future__ import annotations

import itertools

import numpy as np
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


def padded(lengths: list[int], batches: list[list[int]], batch_cost: int = 0) -> int:
    return sum(len(batch) * max(lengths[j] for j in batch) + batch_cost for batch in batches)


def test_batches_stay_within_both_limits_and_keep_the_length_order():
    lengths = [16, 3, 40, 5, 8, 9, 3, 16, 4]
    for batch_cost in (0, 8, 1000):
        batches = budget_batches(lengths, batch_size=3, max_tokens=32, batch_cost=batch_cost)
        order = [j for batch in batches for j in batch]
        assert sorted(order) == list(range(len(lengths)))
        assert [lengths[j] for j in order] == sorted(lengths) and order[:2] == [1, 6]  # ascending, stable on ties
        assert all(len(batch) <= 3 for batch in batches)
        assert all(len(batch) * max(lengths[j] for j in batch) <= 32 for batch in batches if len(batch) > 1)
    # a batch's cost above any padding: as few batches as the limits allow; 40 runs alone
    assert [[lengths[j] for j in batch] for batch in budget_batches(lengths, 3, 32, batch_cost=1000)] == \
           [[3, 3, 4], [5, 8, 9], [16, 16], [40]]
    # batches free: no padding at all
    assert padded(lengths, budget_batches(lengths, 3, 32, batch_cost=0)) == sum(lengths)


def test_the_cuts_are_the_cheapest_of_all_cuts_of_the_sorted_windows():
    rng = np.random.default_rng(0)
    for _ in range(40):
        lengths = rng.integers(1, 30, size=int(rng.integers(1, 9))).tolist()
        batch_size, max_tokens, batch_cost = int(rng.integers(1, 5)), int(rng.integers(20, 80)), int(rng.integers(0, 40))
        ordered = sorted(lengths)
        cheapest = min(
            cost for cuts in itertools.product([False, True], repeat=len(lengths) - 1)
            if (cost := cuts_cost(ordered, cuts, batch_size, max_tokens, batch_cost)) is not None)
        assert padded(lengths, budget_batches(lengths, batch_size, max_tokens, batch_cost), batch_cost) == cheapest


def cuts_cost(ordered: list[int], cuts: tuple[bool, ...], batch_size: int, max_tokens: int, batch_cost: int) -> int | None:
    """Padded tokens plus batch costs of the sorted windows cut after each True; None past a limit."""
    batches, current = [], [ordered[0]]
    for length, cut in zip(ordered[1:], cuts):
        if cut:
            batches.append(current)
            current = []
        current.append(length)
    batches.append(current)
    if any(len(b) > batch_size or (len(b) > 1 and len(b) * b[-1] > max_tokens) for b in batches):
        return None
    return sum(len(b) * b[-1] + batch_cost for b in batches)


def test_a_few_long_windows_are_not_padded_into_a_batch_of_short_ones():
    lengths = [4] * 63 + [30, 30]  # filling batches of 64 pads 63 four-token windows to 30 tokens
    batches = budget_batches(lengths, batch_size=64, max_tokens=2048, batch_cost=128)
    assert [len(batch) for batch in batches] == [63, 2]
    assert padded(lengths, batches) == 63 * 4 + 2 * 30


def test_predictions_do_not_depend_on_the_batch_budget(tiny_bert_dir):
    texts = ["John lives in Berlin .", "Paris", "a much longer text that needs several windows " * 3, "Maria works"]
    small = make_predictor(tiny_bert_dir, batch_size=1)
    large = make_predictor(tiny_bert_dir, batch_size=64, max_batch_tokens=4096)
    assert [[(e.start, e.end, e.label) for e in ents] for ents in small.predict(texts)] == \
           [[(e.start, e.end, e.label) for e in ents] for ents in large.predict(texts)]
