"""Export: ONNX Runtime (torch-free decoding) and a transformers folder give the same entities
as PyTorch; the run directory's encoder/ is a transformers model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, pipeline

from nerkit.export import export_hf, export_onnx
from nerkit.export import main as export_main
from nerkit.model import NerModel
from nerkit.onnx_predict import OnnxPredictor
from nerkit.predict import Predictor
from nerkit.predict_cli import main as predict_main
from tests.helpers import HEAD_NAMES, make_cfg, save_tiny_run

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "John Smith lives in Berlin .",
    "Maria works for Siemens in Paris",
    " ".join(["Siemens hired John Smith yesterday in Berlin and Paris ."] * 8),  # several windows
    "Paris",
    "",
]


def entity_tuples(predictions):
    return [[(e.start, e.end, e.label, e.text) for e in doc] for doc in predictions]


@pytest.fixture(scope="module", params=HEAD_NAMES)
def exported(request, tiny_bert_dir, tmp_path_factory) -> Path:
    run_dir = save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp(request.param), request.param)
    assert export_onnx(run_dir) == run_dir / "model.onnx"
    return run_dir


def test_onnx_runtime_gives_the_same_entities(exported):
    run_dir = exported
    # Small batches: the graph meets several batch sizes and widths.
    torch_predictor = Predictor.from_run(run_dir, "cpu", batch_size=3, precision="fp32")  # the graph is fp32
    onnx_predictor = OnnxPredictor.from_run(run_dir, batch_size=3)
    # One decoder: the graph carries the head's own, and both backends decode with it.
    assert type(onnx_predictor.decoder()) is type(torch_predictor.model.head.decoder())
    assert onnx_predictor.decoder().spec() == torch_predictor.model.head.decoder().spec()
    tokens = [text.split() for text in TEXTS]
    for predict in ("predict", "predict_tokens"):
        inputs = TEXTS if predict == "predict" else tokens
        torch_out = getattr(torch_predictor, predict)(inputs)
        onnx_out = getattr(onnx_predictor, predict)(inputs)
        assert sum(map(len, torch_out)) > 0
        assert entity_tuples(onnx_out) == entity_tuples(torch_out)
        assert [(e.token_start, e.token_end) for doc in onnx_out for e in doc] == \
               [(e.token_start, e.token_end) for doc in torch_out for e in doc]
        assert [e.score for doc in onnx_out for e in doc] == pytest.approx([e.score for doc in torch_out for e in doc], abs=1e-5)


def test_cli_onnx_backend_and_stale_exports(exported, tiny_bert_dir, tmp_path):
    run_dir = shutil.copytree(exported, tmp_path / "run")
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    outputs = {}
    for backend in ("torch", "onnx"):
        target = tmp_path / f"{backend}.jsonl"
        assert predict_main([f"run_dir={run_dir}", f"input={source}", f"output={target}", f"backend={backend}",
                             "device=cpu", "threads=1", "progress=false", "precision=fp32"]) == 0
        outputs[backend] = [[(e["start"], e["end"], e["label"]) for e in json.loads(line)["entities"]]
                            for line in target.read_text().splitlines()]
    assert outputs["onnx"] == outputs["torch"]

    # Retrained weights in the same run directory: the old graph must not be used with them.
    save_tiny_run(tiny_bert_dir, run_dir, entity_types=("LOC", "PER"))
    with pytest.raises(ValueError, match="was not exported from the weights in .*export it again"):
        OnnxPredictor.from_run(run_dir)
    with pytest.raises(FileNotFoundError, match="python -m nerkit.export"):
        OnnxPredictor.from_run(run_dir, tmp_path / "none.onnx")


def test_bilstm_export_is_refused_clearly(tmp_path):
    cfg = make_cfg(["encoder=bilstm", "encoder.hidden_size=8", "encoder.embedding_dim=4"])
    NerModel.from_config(cfg, ["LOC"], train_texts=["John lives in Berlin"]).save(tmp_path, cfg)
    with pytest.raises(ValueError, match="supports transformer encoders only, not BiLSTMEncoder"):
        export_onnx(tmp_path)


def test_onnx_prediction_never_imports_torch(exported, tmp_path):
    """backend=onnx in a fresh process: the same entities as the torch Predictor, and no torch."""
    script = (
        "import json, sys\n"
        "from nerkit.predict_cli import load_predictor\n"
        f"predictor = load_predictor({str(exported)!r}, 'onnx', batch_size=3)\n"
        f"out = predictor.predict({TEXTS!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'entities': [[[e.start, e.end, e.label, e.text] for e in d] for d in out],"
        " 'head': predictor.head_name, 'types': predictor.entity_types}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = json.loads(subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                                       text=True).stdout.splitlines()[-1])
    assert result["torch"] is False
    expected = Predictor.from_run(exported, "cpu", batch_size=3, precision="fp32").predict(TEXTS)
    assert [[tuple(e) for e in d] for d in result["entities"]] == entity_tuples(expected)
    assert result["types"] == ["LOC", "ORG", "PER"] and result["head"] in ("SoftmaxHead", "CRFHead", "GlobalPointerHead", "EfficientGlobalPointerHead")


def test_encoder_folder_is_a_transformers_model(exported):
    """RUN/encoder holds the fine-tuned encoder's weights; model.safetensors holds the rest only."""
    model, _ = NerModel.load(exported)
    hf = AutoModel.from_pretrained(exported / "encoder").eval()
    batch = {"input_ids": torch.tensor([[101, 2198, 3044, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.inference_mode():
        assert torch.equal(hf(**batch).last_hidden_state, model.encoder(batch["input_ids"], batch["attention_mask"]))
    from safetensors import safe_open

    with safe_open(exported / "model.safetensors", "pt") as weights:
        assert weights.keys() and all(k.startswith("head.") for k in weights.keys())


def biased_softmax_run(tiny_bert_dir: Path, directory: Path) -> Path:
    """A tiny softmax run whose tags vary from word to word, so that it predicts many entities."""
    # HF's pipeline cuts raw text into the tokenizer's own words: nerkit's data.words=pretokenizer.
    save_tiny_run(tiny_bert_dir, directory, "softmax", ["max_length=64", "data.words=pretokenizer"])
    model, cfg = NerModel.load(directory)
    torch.manual_seed(1)
    with torch.no_grad():
        model.head.classifier.weight.normal_(0, 2.0)
        model.head.classifier.bias.copy_(torch.linspace(0, 3, len(model.head.tags)))
    model.save(directory, cfg)
    return directory


HF_TEXTS = ["John Smith lives in Berlin .", "Maria works for Siemens in Paris", "Paris", "The U.N. met in New York yesterday.",
            "Siemens hired John Smith yesterday in Berlin and Paris, then went home."]


def test_hf_pipeline_gives_the_same_entities(tiny_bert_dir, tmp_path):
    run_dir = biased_softmax_run(tiny_bert_dir, tmp_path / "run")
    assert export_main([f"run_dir={run_dir}", "format=hf", f"output={tmp_path / 'hf'}"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert list(config["id2label"].values()) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    ner = pipeline("token-classification", model=str(tmp_path / "hf"), aggregation_strategy="first", device="cpu")
    got = [[(e["start"], e["end"], e["entity_group"]) for e in doc] for doc in ner(HF_TEXTS)]
    expected = [[(e.start, e.end, e.label) for e in doc] for doc in Predictor.from_run(run_dir, "cpu", precision="fp32").predict(HF_TEXTS)]
    assert sum(map(len, expected)) >= 5
    assert got == expected
    # With the default CoNLL-like words, nerkit keeps "U.N." one word; the pipeline cuts it in four.
    conll = Predictor(Predictor.from_run(run_dir, "cpu", precision="fp32").model, 64, words="conll").predict(HF_TEXTS[3:4])
    inside = {5, 6, 7}  # character offsets inside "U.N."
    assert inside & {b for s, e, _ in got[3] for b in (s, e)}
    assert conll[0] and not inside & {b for e in conll[0] for b in (e.start, e.end)}


@pytest.mark.parametrize("head", ["crf", "global_pointer"])
def test_hf_export_of_other_heads_is_refused_clearly(tiny_bert_dir, tmp_path, head):
    run_dir = save_tiny_run(tiny_bert_dir, tmp_path / head, head)
    with pytest.raises(ValueError, match="format=hf needs a softmax head.*AutoModel.from_pretrained.*nerkit.onnx_predict"):
        export_hf(run_dir)
