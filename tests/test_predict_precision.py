"""Prediction precision: bf16 (autocast, and bf16 encoder weights as ``from_run`` loads them) gives
the fp32 predictions; the compiled encoder gives the eager one's; impossible precisions are refused."""
from __future__ import annotations

import itertools
import logging

import pytest
import torch

from nerkit.cli import load_predictor
from nerkit.model import NerModel
from nerkit import precision as precision_module
from nerkit.precision import check_precision, default_precision
from nerkit.predict import Predictor
from tests.helpers import make_cfg, save_tiny_run

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
    return spread_scores(model)


def spread_scores(model: NerModel) -> NerModel:
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
        Predictor(model, precision="int4")
    with pytest.raises(ValueError, match="calibrated int8 encoder"):  # int8 needs the run's int8 encoder
        Predictor(model, precision="int8")


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_units_warns_once(monkeypatch, caplog, has_bf16):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: has_bf16)
    precision_module.warn_emulated_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="nerkit.precision"):
        assert [check_precision("bf16", "cpu") for _ in range(3)] == ["bf16"] * 3
        check_precision("fp32", "cpu")
    warnings = [r.getMessage() for r in caplog.records if "emulates it" in r.getMessage()]
    assert len(warnings) == (0 if has_bf16 else 1)
    precision_module.warn_emulated_bf16.cache_clear()


@pytest.fixture(scope="module")
def run_dir(tiny_bert_dir, tmp_path_factory):
    """The ``model`` fixture's weights as a run directory."""
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", "head=softmax", "max_length=16", "stride=4"])
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("run")
    spread_scores(NerModel.from_config(cfg, ["LOC", "PER"])).save(directory, cfg)
    return directory


def dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


def test_from_run_holds_the_encoder_in_bf16_and_predicts_as_fp32(run_dir):
    bf16 = Predictor.from_run(run_dir, "cpu", precision="bf16")
    fp32 = Predictor.from_run(run_dir, "cpu", precision="fp32")
    assert dtypes(bf16.model.encoder) == {torch.bfloat16}
    assert dtypes(bf16.model.head) == {torch.float32}  # the head (CRF transitions, span scores) stays fp32
    assert dtypes(fp32.model) == {torch.float32}
    expected, got = entities(fp32), entities(bf16)
    assert sum(map(len, expected)) >= 10
    assert [[e[:3] for e in doc] for doc in got] == [[e[:3] for e in doc] for doc in expected]
    for doc32, doc16 in zip(expected, got):
        for a, b in zip(doc32, doc16):
            assert b[3] == pytest.approx(a[3], abs=0.05)


@pytest.mark.parametrize("encoder,head", itertools.product(["bert", "bilstm"], ["softmax", "crf", "global_pointer"]))
def test_every_encoder_and_head_predicts_with_bf16_encoder_weights(encoder, head, tiny_bert_dir, tmp_path):
    if encoder == "bert":
        run = save_tiny_run(tiny_bert_dir, tmp_path / "run", head)
    else:  # a word vocabulary from texts, as training builds it
        cfg = make_cfg(["encoder=bilstm", f"head={head}", "max_length=16", "stride=4"])
        torch.manual_seed(0)
        run = tmp_path / "run"
        NerModel.from_config(cfg, ["LOC", "PER"], train_texts=TEXTS).save(run, cfg)
    bf16 = Predictor.from_run(run, "cpu", precision="bf16")
    assert dtypes(bf16.model.encoder) == {torch.bfloat16}
    got = bf16.predict(TEXTS)
    assert len(got) == len(TEXTS)
    for text, doc in zip(TEXTS, got):
        for e in doc:
            assert text[e.start:e.end] == e.text and 0.0 <= e.score <= 1.0


@pytest.mark.slow
def test_compiled_encoder_predicts_as_the_eager_one(run_dir):
    eager = entities(Predictor.from_run(run_dir, "cpu", precision="fp32"))
    compiled = Predictor.from_run(run_dir, "cpu", precision="fp32", compile=True)
    assert compiled.model.encoder._compiled_call_impl is not None  # what nn.Module.compile() sets
    # on CPU the compiled BERT runs the plain attention, which inductor fuses (faster than SDPA there)
    assert compiled.model.encoder.model.config._attn_implementation == "eager"
    assert [[e[:3] for e in doc] for doc in entities(compiled)] == [[e[:3] for e in doc] for doc in eager]
    for doc_eager, doc_compiled in zip(eager, entities(compiled)):
        for a, b in zip(doc_eager, doc_compiled):
            assert b[3] == pytest.approx(a[3], abs=1e-4)


def test_the_onnx_backend_refuses_torch_only_options(tmp_path):
    with pytest.raises(ValueError, match="compile=true works with backend=torch only"):
        load_predictor(tmp_path, "onnx", compile=True)
    with pytest.raises(ValueError, match="the ONNX backend runs an fp32 or int8 graph"):
        load_predictor(tmp_path, "onnx", precision="bf16")
