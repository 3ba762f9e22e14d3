"""ONNX export: ONNX Runtime gives the same entities as PyTorch, decoding outside the graph."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_cfg, save_tiny_run

from nerkit.export import OnnxPredictor, export_onnx
from nerkit.model import NerModel
from nerkit.predict import Predictor
from nerkit.predict_cli import main as predict_main

TEXTS = [
    "John Smith lives in Berlin .",
    "Maria works for Siemens in Paris",
    " ".join(["Siemens hired John Smith yesterday in Berlin and Paris ."] * 8),  # several windows
    "Paris",
    "",
]


def entity_tuples(predictions):
    return [[(e.start, e.end, e.label, e.text) for e in doc] for doc in predictions]


@pytest.fixture(scope="module", params=["softmax", "crf", "global_pointer"])
def exported(request, tiny_bert_dir, tmp_path_factory) -> Path:
    run_dir = save_tiny_run(tiny_bert_dir, tmp_path_factory.mktemp(request.param), request.param)
    assert export_onnx(run_dir) == run_dir / "model.onnx"
    return run_dir


def test_onnx_runtime_gives_the_same_entities(exported):
    run_dir = exported
    # Small batches: the graph meets several batch sizes and widths.
    torch_out = Predictor.from_run(run_dir, "cpu", batch_size=3, precision="fp32").predict(TEXTS)  # the graph is fp32
    onnx_out = OnnxPredictor.from_run(run_dir, batch_size=3).predict(TEXTS)
    assert sum(map(len, torch_out)) > 0
    assert entity_tuples(onnx_out) == entity_tuples(torch_out)
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
