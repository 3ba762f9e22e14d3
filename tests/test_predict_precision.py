"""Prediction precision: bf16 autocast gives the fp32 predictions; impossible precisions are refused."""
from __future__ import annotations

import pytest
import torch

from nerkit.model import NerModel
from nerkit.precision import default_precision
from nerkit.predict import Predictor
from tests.helpers import make_cfg

TEXTS = [
    "John Smith lives in Berlin and works for Siemens .",
    "Maria flew from Paris to New York on Monday",
    "the quick brown fox jumps over the lazy dog " * 20,  # several windows
    "",
    "Tokyo",
]


@pytest.fixture(scope="module")
def model(tiny_bert_dir) -> NerModel:
    torch.manual_seed(0)
    model = NerModel.from_config(make_cfg([f"encoder.pretrained={tiny_bert_dir}", "head=softmax"]), ["LOC", "PER"])
    with torch.no_grad():  # a random head predicts "O" nearly everywhere: spread its scores so entities appear
        model.head.classifier.weight.mul_(30.0)
        model.head.classifier.bias.copy_(torch.tensor([0.0, 1.0, 0.5, 1.0, 0.5]))
    return model.eval()


def entities(predictor: Predictor) -> list[list[tuple]]:
    return [[(e.start, e.end, e.label, e.score) for e in doc] for doc in predictor.predict(TEXTS)]


def test_bf16_predictions_match_fp32(model):
    fp32 = entities(Predictor(model, max_length=16, stride=4, precision="fp32"))
    bf16 = entities(Predictor(model, max_length=16, stride=4, precision="bf16"))
    assert sum(map(len, fp32)) >= 10  # the comparison is about real entities
    assert [[e[:3] for e in doc] for doc in bf16] == [[e[:3] for e in doc] for doc in fp32]
    for doc32, doc16 in zip(fp32, bf16):
        for a, b in zip(doc32, doc16):
            assert b[3] == pytest.approx(a[3], abs=0.05)  # the head's weights x30 amplify bf16 rounding


def test_precision_is_checked_and_auto_picks_the_hardware_default(model):
    assert Predictor(model, precision="auto").precision == default_precision("cpu")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        Predictor(model, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor(model, precision="int8")
