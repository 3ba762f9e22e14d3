"""Train -> save -> reload -> predict through the real entry point."""
import json

import pytest
import torch

from nerkit.predict import Predictor
from nerkit.train import train
from tests.helpers import HEAD_NAMES, make_cfg

ODD_TEXTS = [
    "John  Smith lives in\tBerlin .",
    "\ufeffMARIA works for siemens in PARIS\n\nand Berlin",
    "",
    "   \n\t ",
    "Paris 😀 and Berlin\u200b are cities 北京",
]


def data_overrides(path):
    return [f"data.train.path={path}", f"data.dev.path={path}"]


@pytest.mark.slow
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_tiny_bert_trains_saves_reloads_and_predicts(head, tiny_bert_dir, toy_conll, tmp_path):
    # A learning rate high enough for the tiny random BERT to fit the toy data and predict entities.
    cfg = make_cfg([f"encoder.pretrained={tiny_bert_dir}", f"head={head}", "trainer.epochs=15", "trainer.lr=3e-3",
                    "head.lr=3e-3", "trainer.batch_size=2", "trainer.eval_every=15", *data_overrides(toy_conll)])
    best = train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_dev_f1"] == best and len(metrics["history"]) == 2 and metrics["finished"]
    predictor = Predictor.from_run(tmp_path / "run", device="cpu")
    assert predictor.model.head.__class__.__name__.lower() == head.replace("_", "") + "head"
    results = predictor.predict(ODD_TEXTS)
    assert len(results) == len(ODD_TEXTS) and results[2] == [] and results[3] == []
    assert any(results), "the trained model predicts no entity at all: nothing below would be checked"
    for text, entities in zip(ODD_TEXTS, results):
        for ent in entities:
            assert text[ent.start:ent.end] == ent.text and ent.text.strip() == ent.text


@pytest.mark.slow
def test_minilm_learns_toy_entities_with_exact_offsets(toy_conll, tmp_path):
    """The embedded MiniLM, fine-tuned for a few steps, finds entities in oddly cased and spaced text."""
    torch.manual_seed(0)
    cfg = make_cfg(["trainer.epochs=12", "trainer.batch_size=4", "trainer.lr=3e-4", "trainer.warmup_ratio=0",
                    "head.dropout=0", *data_overrides(toy_conll)])
    assert train(cfg, tmp_path / "run") == 1.0  # it fits its own training data
    predictor = Predictor.from_run(tmp_path / "run", device="cpu")
    text = "JOHN   smith lives in\t\tBERLIN ."
    (entities,) = predictor.predict([text])
    assert [(e.text, e.label) for e in entities] == [("JOHN   smith", "PER"), ("BERLIN", "LOC")]
    assert all(text[e.start:e.end] == e.text for e in entities)
    assert (tmp_path / "run" / "model.safetensors").exists() and not list((tmp_path / "run").rglob("*.bin"))


@pytest.mark.slow
def test_bilstm_character_vocabulary_for_chinese(tmp_path):
    """Offline Chinese: a character vocabulary from the training data, character-exact offsets."""
    sentences = ["高 B-NAME\n勇 E-NAME\n在 O\n北 B-LOC\n京 E-LOC", "李 B-NAME\n明 E-NAME\n去 O\n上 B-LOC\n海 E-LOC"] * 4
    path = tmp_path / "zh.bmes"
    path.write_text("\n\n".join(sentences) + "\n")
    reader = ["data.train.scheme=BMES", "+data.train.token_separator=", "data.dev.scheme=BMES", "+data.dev.token_separator="]
    cfg = make_cfg(["encoder=bilstm", "head=crf", "head.scheme=BIOES", "trainer.epochs=30", "trainer.lr=0.02",
                    "encoder.dropout=0", *data_overrides(path), *reader])
    assert train(cfg, tmp_path / "run") == 1.0
    predictor = Predictor.from_run(tmp_path / "run", device="cpu")
    assert predictor.model.encoder.tokenizer.tokenize("高勇在北京") == list("高勇在北京")
    text = "  高勇去北京 "
    (entities,) = predictor.predict([text])
    assert [(e.start, e.end, e.text, e.label) for e in entities] == [(2, 4, "高勇", "NAME"), (5, 7, "北京", "LOC")]
