"""The variants bench/ compares are configuration: the unfused optimizer, the word-weighted softmax
loss, and the batch plan whose padding bench/speed.py and bench/units_batching.py report."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from bench.common import batch_tokens
from nerkit.heads.softmax import SoftmaxHead
from nerkit.optim import adamw
from nerkit.train import train
from nerkit.validation import ConfigError, validate_config
from tests.helpers import make_cfg


def test_the_optimizer_is_fused_unless_configured_otherwise():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert adamw(params, lr=1e-3).defaults["fused"] is True
    assert not adamw(params, lr=1e-3, fused=False).defaults["fused"]
    assert make_cfg([]).trainer.fused_optimizer is True
    with pytest.raises(ConfigError, match="trainer.fused_optimizer='no': must be true or false"):
        validate_config(make_cfg(["trainer.fused_optimizer=no"]))


def test_a_loss_divisor_sums_over_words_so_every_word_weighs_the_same():
    torch.manual_seed(0)
    head = SoftmaxHead(8, ["PER"], loss_divisor=4.0)
    scores = torch.randn(2, 3, len(head.tags))
    mask = torch.tensor([[True, True, True], [True, False, False]])
    spans = [[(0, 2, 0)], []]
    targets = head.tag_targets(spans, 3)
    summed = F.cross_entropy(scores[mask], targets[mask], reduction="sum")
    assert torch.allclose(head.loss(scores, mask, spans), summed / 4.0)
    assert head.loss_size(mask) == 1  # micro-batches count alike: a word weighs the same in each
    mean_head = SoftmaxHead(8, ["PER"])
    assert torch.allclose(mean_head.loss(scores, mask, spans), summed / 4)  # 4 words: the mean
    assert int(mean_head.loss_size(mask)) == 4
    with pytest.raises(ValueError, match="head.loss_divisor=0"):
        SoftmaxHead(8, ["PER"], loss_divisor=0)


@pytest.mark.parametrize("order", ["length", "random"])
def test_the_batch_plan_is_what_the_engine_trains_on(tiny_bert_dir, toy_conll, tmp_path, order):
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"data.train.path={toy_conll}", f"data.dev.path={toy_conll}",
                    "data.test=null", "trainer.epochs=2", "trainer.batch_size=3", "trainer.device=cpu",
                    f"trainer.batch_order={order}", "trainer.keep_checkpoints=0", "trainer.log_every=1",
                    "trainer.fused_optimizer=false", "report_errors=false", "trainer.tensorboard=false"])
    plan = batch_tokens(cfg)
    train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [sum(r["tokens"] for r in records if r["type"] == "train" and r["epoch"] == e) for e in range(2)]
    assert [real for real, _ in plan] == logged
    assert all(padded >= real for real, padded in plan)
