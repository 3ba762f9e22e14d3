"""bench/span_threshold.py: one prediction at the lowest threshold, filtered per threshold, scores
each threshold exactly as the engine's evaluation scores a head trained with that threshold."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from bench.span_threshold import sweep
from nerkit.evaluation import evaluate
from nerkit.model import NerModel
from nerkit.predict import Predictor
from tests.helpers import TOY_SENTENCES, save_tiny_run, write_conll


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = write_conll(root / "toy.conll", TOY_SENTENCES)
    paths = [f"data.train.path={data}", f"data.dev.path={data}", f"+data.test={{_target_: nerkit.data.readers.read_conll, path: {data}}}"]
    save_tiny_run(tiny_bert_dir, root / "gp", "global_pointer", paths)
    save_tiny_run(tiny_bert_dir, root / "softmax", "softmax", paths)
    return root


def test_only_span_heads_are_swept(runs):
    assert sweep(runs / "softmax", [0.0]) is None and sweep(runs / "gp", [0.0]) is not None


def test_each_threshold_scores_as_the_engine_evaluates_it(runs):
    grid = [-1.0, 0.0, 1.0]
    swept = sweep(runs / "gp", grid)
    model, cfg = NerModel.load(runs / "gp", "cpu")
    documents = instantiate(cfg.data.test)
    for t in grid:
        model.head.threshold = t  # as if trained with head.threshold=t
        predictor = Predictor(model, cfg.max_length, cfg.stride, precision="fp32")
        assert swept["splits"]["test"]["by_threshold"][str(t)]["f1"] == pytest.approx(evaluate(predictor, documents)["f1"])
    recalls = [swept["splits"]["test"]["by_threshold"][str(t)]["recall"] for t in grid]
    assert recalls == sorted(recalls, reverse=True) and recalls[0] > recalls[-1]
    dev = swept["splits"]["dev"]["by_threshold"]
    assert dev[str(swept["tuned_threshold"])]["f1"] == max(d["f1"] for d in dev.values())
