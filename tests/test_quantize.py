"""precision=int8: the quantized ONNX graph, calibrated at export, predicts the fp32 model's
entities, and is refused once the run's weights change."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest

from nerkit.cli import load_predictor
from nerkit.evaluation import entity_agreement
from nerkit.export import export_onnx, main as export_main
from nerkit.onnx_predict import QUANTIZATION, OnnxPredictor
from nerkit.predict import Predictor
from nerkit.calibration import most_quantized
from nerkit.quantize import _QuantizerChatter, export_int8
from tests.helpers import change_weights

TEXTS = [
    "John Smith lives in Berlin .",
    "Maria works for Siemens in Paris",
    "Siemens hired John Smith yesterday",
    "Paris and Berlin are cities",
    " ".join(["Maria works for Siemens in Paris and John Smith lives in Berlin ."] * 30),  # several windows
]
AGREEMENT = 0.99  # the goal stated for int8: entities shared with fp32 over their union


def entity_sets(predictions) -> list[set]:
    return [{(e.start, e.end, e.label) for e in doc} for doc in predictions]


@pytest.fixture(scope="module")
def int8_run(fitted_toy_run, tmp_path_factory) -> Path:
    """The fitted toy run, exported with precision=int8 (calibrated on its training data)."""
    run = shutil.copytree(fitted_toy_run, tmp_path_factory.mktemp("int8") / "run")
    assert export_main([f"run_dir={run}", "precision=int8"]) == 0
    return run


def test_int8_graph_predicts_the_fp32_entities(int8_run):
    graph = onnx.load(str(int8_run / "model.int8.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, f"no int8 matrix product in the graph: {sorted(ops)}"
    assert not (int8_run / "model.onnx").exists()  # the fp32 graph it came from was temporary

    fp32 = entity_sets(Predictor.from_run(int8_run, "cpu", batch_size=2, precision="fp32").predict(TEXTS))
    predictor = OnnxPredictor.from_run(int8_run, batch_size=2, precision="int8")
    assert predictor.precision == "int8"
    int8 = entity_sets(predictor.predict(TEXTS))
    assert sum(map(len, fp32)) >= 10, "the fp32 model predicts too few entities for the comparison to mean anything"
    assert entity_agreement(fp32, int8) >= AGREEMENT

    done = json.loads({p.key: p.value for p in graph.metadata_props}[QUANTIZATION])
    assert done["held_out"] == "dev" and done["held_out_entity_agreement"] >= done["target"]
    assert done["int8_layers"], "no layer was made int8"
    linear = set(done["sensitivity"])  # every encoder linear layer, measured
    assert set(done["int8_layers"]) | set(done["kept_fp32"]) >= linear
    assert not set(done["int8_layers"]) & set(done["kept_fp32"])
    assert max(done["sensitivity"][m] for m in done["int8_layers"]) <= min(
        [done["sensitivity"][m] for m in linear - set(done["int8_layers"])], default=float("inf"))


def test_most_quantized_finds_the_largest_agreeing_count_by_bisection():
    for count, last_good in [(36, 36), (36, 0), (36, 12), (36, 35), (1, 0), (7, 3)]:
        asked = []

        def agrees(n: int) -> bool:
            asked.append(n)
            return n <= last_good

        assert most_quantized(count, agrees) == last_good
        assert len(asked) <= 2 + count.bit_length() and 0 not in asked  # nothing int8 agrees by definition


def test_a_target_no_layer_can_keep_is_refused_writes_nothing_and_keeps_the_quantizers_notes_out_of_the_log(
        int8_run, tmp_path, caplog):
    run = shutil.copytree(int8_run, tmp_path / "run")
    (run / "model.int8.onnx").unlink()
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="keep this run fp32"):
        export_int8(run, export_onnx(run, tmp_path / "model.onnx"), target=1.01)
    assert not list(run.glob("model.int8.onnx*"))
    assert any("least sensitive" in r.getMessage() for r in caplog.records)  # it did quantize before refusing
    notes = [r for r in caplog.records if "onnxruntime/quantization" in r.pathname.replace("\\", "/")]
    assert not notes, f"{len(notes)} of ONNX Runtime's quantizer notes reached the log: {notes[0].getMessage()}"
    assert not [f for f in logging.getLogger().filters if isinstance(f, _QuantizerChatter)]  # removed, error or not


def test_int8_graph_is_refused_when_the_weights_change(int8_run, tmp_path):
    run = shutil.copytree(int8_run, tmp_path / "run")
    change_weights(run)
    with pytest.raises(ValueError, match="was not exported from the weights"):
        OnnxPredictor.from_run(run, precision="int8")


def test_cli_int8_choice(int8_run, tmp_path):
    assert load_predictor(int8_run, backend="onnx", precision="int8").precision == "int8"
    with pytest.raises(FileNotFoundError, match="format=torch precision=int8"):  # the torch backend's int8 is another file
        load_predictor(int8_run, backend="torch", precision="int8")
    bare = shutil.copytree(int8_run, tmp_path / "bare")
    (bare / "model.int8.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="precision=int8"):
        OnnxPredictor.from_run(bare, precision="int8")
