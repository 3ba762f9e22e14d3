"""precision=int8 with the torch backend: the int8 encoder calibrated at export
(``format=torch precision=int8``) predicts the fp32 model's entities through PyTorch's int8
kernels, and a file made from other weights or for another graph is refused."""
from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch._inductor.config as inductor_config
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from nerkit.cli import load_predictor
from nerkit.evaluation import entity_agreement
from nerkit.export import main as export_main
from nerkit.predict import Predictor
from nerkit.quantize_torch import INT8_FILE, export_int8_torch, quantization_of
from tests.helpers import change_weights
from tests.test_quantize import AGREEMENT, TEXTS, entity_sets


@pytest.fixture(scope="module")
def int8_run(fitted_toy_run, tmp_path_factory) -> Path:
    """The fitted toy run, its int8 encoder exported (calibrated on its training data)."""
    run = shutil.copytree(fitted_toy_run, tmp_path_factory.mktemp("int8_torch") / "run")
    assert export_main([f"run_dir={run}", "format=torch", "precision=int8"]) == 0
    return run


def quantize_ops(predictor: Predictor) -> set[str]:
    graph = predictor.model.encoder.model.graph.compiled._orig_mod.graph  # the int8 graph inside torch.compile
    return {str(node.target) for node in graph.nodes if "quantize" in str(node.target)}


def test_int8_encoder_predicts_the_fp32_entities(int8_run):
    fp32 = entity_sets(Predictor.from_run(int8_run, "cpu", batch_size=2, precision="fp32").predict(TEXTS))
    predictor = Predictor.from_run(int8_run, "cpu", batch_size=2, precision="int8")
    assert predictor.precision == "int8"
    assert any("quantize_per_tensor" in op for op in quantize_ops(predictor)), "no int8 activations in the graph"
    int8 = entity_sets(predictor.predict(TEXTS))
    assert sum(map(len, fp32)) >= 10, "the fp32 model predicts too few entities for the comparison to mean anything"
    assert entity_agreement(fp32, int8) >= AGREEMENT

    done = quantization_of(int8_run)
    assert done["held_out"] == "dev" and done["held_out_entity_agreement"] >= done["target"]
    assert done["int8_layers"], "no layer was made int8"
    assert sorted(done["int8_layers"] + done["kept"]) == sorted(done["sensitivity"])  # every linear layer, measured
    assert max(done["sensitivity"][m] for m in done["int8_layers"]) <= min(
        [done["sensitivity"][m] for m in done["kept"]], default=float("inf"))


def test_texts_without_tokens_are_predicted_with_int8(int8_run):
    texts = ["", "Berlin", "John Smith lives in Berlin ."]
    fp32 = entity_sets(Predictor.from_run(int8_run, "cpu", precision="fp32").predict(texts))
    int8 = entity_sets(Predictor.from_run(int8_run, "cpu", precision="int8").predict(texts))
    assert int8[0] == set() and int8[2], "nothing predicted where fp32 finds entities"
    assert entity_agreement(fp32, int8) >= AGREEMENT


def test_int8_calls_from_threads_agree_and_leave_inductors_setting_as_it_was(int8_run):
    predictor = Predictor.from_run(int8_run, "cpu", batch_size=2, precision="int8")
    texts = TEXTS * 10  # calls long enough to overlap
    expected = entity_sets(predictor.predict(texts))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: entity_sets(predictor.predict(texts)), range(8)))
    assert all(result == expected for result in results)
    assert inductor_config.freezing is False  # the int8 calls' setting does not outlive them


def test_the_cli_and_server_loader_take_int8_with_the_torch_backend(int8_run, tmp_path):
    assert load_predictor(int8_run, backend="torch", precision="int8").precision == "int8"
    bare = shutil.copytree(int8_run, tmp_path / "bare")
    (bare / INT8_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="format=torch precision=int8"):
        load_predictor(bare, backend="torch", precision="int8")


def test_int8_needs_a_calibrated_encoder_and_a_cpu(int8_run):
    model = Predictor.from_run(int8_run, "cpu", precision="fp32").model
    with pytest.raises(ValueError, match="calibrated int8 encoder"):
        Predictor(model, precision="int8")
    with pytest.raises(ValueError, match="runs on CPU"):
        Predictor.from_run(int8_run, "cuda", precision="int8")


def test_an_int8_file_from_other_weights_or_for_another_graph_is_refused(int8_run, tmp_path):
    changed = shutil.copytree(int8_run, tmp_path / "changed")
    change_weights(changed)
    with pytest.raises(ValueError, match="made from other weights"):
        Predictor.from_run(changed, "cpu", precision="int8")

    other = shutil.copytree(int8_run, tmp_path / "other")
    with safe_open(other / INT8_FILE, "numpy") as f:
        metadata = f.metadata()
    tensors = load_file(other / INT8_FILE)
    observer = next(k for k in tensors if k.startswith("observer."))
    tensors[observer.replace("observer.", "observer.renamed_")] = tensors.pop(observer)
    save_file(tensors, other / INT8_FILE, metadata=metadata)
    with pytest.raises(ValueError, match="another graph"):
        Predictor.from_run(other, "cpu", precision="int8")


def test_a_target_no_layer_can_keep_is_refused_and_writes_nothing(int8_run, tmp_path, caplog):
    run = shutil.copytree(int8_run, tmp_path / "run")
    (run / INT8_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="nerkit"), pytest.raises(ValueError, match="keep this run bf16"):
        export_int8_torch(run, target=1.01)
    assert not list(run.glob(INT8_FILE + "*"))
    tried = [r.getMessage() for r in caplog.records if "least sensitive" in r.getMessage()]
    assert tried and "with the 1 least sensitive" in tried[-1]  # it measured down to one layer before refusing


@pytest.mark.parametrize("target, shown", [("0", "0.0"), ("1.5", "1.5"), ("nan", "nan")])
def test_an_agreement_target_that_is_no_share_is_refused_before_any_work(fitted_toy_run, tmp_path, target, shown):
    run = shutil.copytree(fitted_toy_run, tmp_path / "run")  # an export that went ahead would write into it
    with pytest.raises(SystemExit, match=f"agreement_target={shown}: a share of the fp32 entities"):
        export_main([f"run_dir={run}", "format=torch", "precision=int8", f"agreement_target={target}"])
    assert not list(run.glob(INT8_FILE + "*"))


def test_the_agreement_target_reaches_the_export_and_its_record(fitted_toy_run, tmp_path):
    run = shutil.copytree(fitted_toy_run, tmp_path / "run")
    assert export_main([f"run_dir={run}", "format=torch", "precision=int8", "agreement_target=0.9"]) == 0
    done = quantization_of(run)
    assert done["target"] == 0.9 and done["held_out_entity_agreement"] >= 0.9
