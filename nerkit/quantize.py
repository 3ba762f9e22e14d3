"""int8 ONNX graphs for CPU prediction: ``python -m nerkit.export run_dir=RUN precision=int8``.

Steps, all at export, once:

1. The fp32 graph is fused for ONNX Runtime (bias + GELU, residual + LayerNorm).
2. SmoothQuant: on calibration windows of training text, each linear layer's input channels are
   divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` (a Mul before the layer) and its weight
   rows multiplied by ``s``: the same product, with the outlier channels that ruin a per-tensor
   int8 activation scale moved into the weights.
3. Each encoder linear layer's sensitivity is measured end to end: the error of the graph's
   scores on the calibration windows with that layer alone int8. (The error of a layer's own
   product predicts this badly: in MiniLM the feed-forward output layers, read after GELU, change
   the entities most, the attention output layers least.)
4. The least sensitive layers become int8 (per-output-channel weight scales; activations quantized
   per batch by ONNX Runtime, ``method=dynamic``, or with scales calibrated here,
   ``method=static``): as many as keep ``target`` of the fp32 graph's entities on held-out text,
   the run's dev data by default (entities shared over their union; found by bisection over the
   sensitivity order). Training text would flatter the int8 graph: the model fits it, and its
   decisions there are far from any boundary. The embeddings and the head stay fp32.

The int8 graph carries the run's weights hash (a graph made from other weights is refused, as
for model.onnx), the decoding data, and what was done (``nerkit.quantization``: method, alpha,
layers kept fp32, calibration windows, the held-out texts and the agreement reached on them).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn

from nerkit.calibration import Batch, calibration_batches, held_out_texts, int8_layer_count, run_texts
from nerkit.data.words import words_of
from nerkit.evaluation import entity_agreement
from nerkit.heads.decoding import WORD_SCORES, decoder_from_spec
from nerkit.model import NerModel
from nerkit.onnx_predict import DECODER, INPUTS, INT8_FILE, QUANTIZATION, WEIGHTS_HASH, OnnxPredictor

log = logging.getLogger(__name__)

METHODS = ("dynamic", "static")
class _Reader(CalibrationDataReader):
    def __init__(self, batches: Sequence[Batch]):
        self.batches: Iterator[Batch] = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else dict(zip(INPUTS, batch))


def fuse(fp32_graph: str | Path, output: str | Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer fusions (BiasGelu, SkipLayerNormalization) on the fp32 graph."""
    fused = optimize_model(str(fp32_graph), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           opt_level=0)
    # The fusion prunes inputs no operator reads (a softmax head's word_mask); every nerkit graph
    # takes all four, so they are put back.
    original = onnx.load(str(fp32_graph), load_external_data=False).graph.input
    kept = {i.name for i in fused.model.graph.input}
    fused.model.graph.input.extend(i for i in original if i.name not in kept)
    fused.save_model_to_file(str(output))
    return Path(output)


def linear_nodes(graph: onnx.ModelProto, model: NerModel) -> dict[str, str]:
    """The graph's MatMul node computing each ``nn.Linear`` of ``model`` (module name -> node
    name), found by the weight it multiplies by (the exporter names weights ``val_N``)."""
    weights = {name: module.weight.detach().numpy().T for name, module in model.named_modules()
               if isinstance(module, nn.Linear)}
    initializers = {init.name: init for init in graph.graph.initializer}
    found = {}
    for node in graph.graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers:
            value = numpy_helper.to_array(initializers[node.input[1]])
            matches = [name for name, w in weights.items() if w.shape == value.shape and np.array_equal(w, value)]
            if len(matches) == 1:
                found[matches[0]] = node.name
    missing = sorted(set(weights) - set(found))
    if missing:
        raise RuntimeError(f"the ONNX graph has no MatMul for the linear layer(s) {missing}")
    return found


def _input_values(graph: onnx.ModelProto, tensors: Sequence[str], batches: Sequence[Batch]) -> Iterator[dict]:
    """The values of intermediate ``tensors`` of the graph, batch by batch."""
    graph = onnx.ModelProto.FromString(graph.SerializeToString())
    graph.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors named
    session = onnxruntime.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        yield dict(zip(tensors, session.run(list(tensors), dict(zip(INPUTS, batch)))))


def smooth(graph: onnx.ModelProto, nodes: Sequence[str], batches: Sequence[Batch], alpha: float) -> None:
    """SmoothQuant ``nodes`` (MatMuls by a weight) of ``graph`` in place."""
    by_name = {node.name: node for node in graph.graph.node}
    initializers = {init.name: init for init in graph.graph.initializer}
    groups: dict[str, list[str]] = {}  # q, k and v read the same tensor: one Mul for the three
    for name in nodes:
        groups.setdefault(by_name[name].input[0], []).append(name)
    weights = {name: numpy_helper.to_array(initializers[by_name[name].input[1]]) for name in nodes}
    amax = {tensor: np.zeros(weights[group[0]].shape[0], np.float32) for tensor, group in groups.items()}
    for values in _input_values(graph, list(groups), batches):
        for tensor, value in values.items():
            amax[tensor] = np.maximum(amax[tensor], np.abs(value).reshape(-1, value.shape[-1]).max(0))
    for tensor, group in groups.items():
        w_max = np.max([np.abs(weights[n]).max(1) for n in group], 0)
        scale = (np.maximum(amax[tensor], 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha)).astype(np.float32)
        smoothed = f"{tensor}_smoothed"
        # Not "<smoothed>_scale": the quantizer names its own tensors so.
        divisor = f"{tensor}_smoothquant_divisor"
        graph.graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), divisor))
        graph.graph.node.append(onnx.helper.make_node("Mul", [tensor, divisor], [smoothed], f"{smoothed}_mul"))
        for name in group:
            node = by_name[name]
            node.input[0] = smoothed
            weight = initializers[node.input[1]]
            weight.CopyFrom(numpy_helper.from_array((weights[name] * scale[:, None]).astype(np.float32), weight.name))
    _topological_sort(graph)  # the Muls were appended last


def _topological_sort(graph: onnx.ModelProto) -> None:
    produced = {i.name for i in graph.graph.input} | {i.name for i in graph.graph.initializer} | {""}
    pending, ordered = list(graph.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise RuntimeError("the smoothed graph has a cycle")
        for node in ready:
            produced.update(node.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    del graph.graph.node[:]
    graph.graph.node.extend(ordered)


class _QuantizerChatter(logging.Filter):
    """Drops ONNX Runtime's quantizer notes (which log through the root logger, several per call,
    dozens per export: 'consider pre-processing', 'no quantization parameters for tensor...');
    its errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def quantize_graph(fp32_graph: str | Path, output: str | Path, method: str, nodes: Sequence[str],
                   batches: Sequence[Batch]) -> Path:
    """int8 MatMuls (per-channel weights) for ``nodes``; everything else stays fp32."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "dynamic":
        quantize_dynamic(str(fp32_graph), str(output), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_quantize=list(nodes),
                         extra_options={"MatMulConstBOnly": True})
    else:
        quantize_static(str(fp32_graph), str(output), _Reader(batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=list(nodes),
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"MatMulConstBOnly": True})
    return Path(output)


def run_graph(path: str | Path, batches: Sequence[Batch], threads: int = 0) -> list[np.ndarray]:
    """The graph's scores for each batch (``threads=0``: ONNX Runtime's default, one per core)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, dict(zip(INPUTS, batch)))[0] for batch in batches]


def relative_error(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """||other - reference|| / ||reference|| over all batches' scores."""
    error = sum(float(np.square(b - a).sum()) for a, b in zip(reference, other, strict=True))
    norm = sum(float(np.square(a).sum()) for a in reference)
    return (error / norm) ** 0.5 if norm else 0.0


def sensitivities(smoothed: Path, layers: dict[str, str], method: str, batches: Sequence[Batch],
                  workdir: Path) -> dict[str, float]:
    """Each layer's (module name -> graph node) end-to-end error: the relative error of the
    graph's scores on ``batches`` with that layer alone int8."""
    reference = run_graph(smoothed, batches)
    return {module: relative_error(reference, run_graph(
                quantize_graph(smoothed, workdir / "one_layer.onnx", method, [node], batches), batches))
            for module, node in layers.items()}


def _entities(run_dir: Path, graph: Path, meta: dict[str, str], texts: Sequence[str]) -> list[set]:
    """The graph's entities for ``texts``, predicted as ``backend=onnx`` predicts them."""
    model = onnx.load(str(graph))
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(graph))
    predictor = OnnxPredictor.from_run(run_dir, graph)
    return [{(e.start, e.end, e.label) for e in doc} for doc in predictor.predict(list(texts))]


def export_int8(run_dir: str | Path, fp32_graph: str | Path, output: str | Path | None = None,
                calibration: str | Path | None = None, held_out: str | Path | None = None, method: str = "dynamic",
                windows: int = 300, held_out_count: int = 1000, alpha: float = 0.8, target: float = 0.995) -> Path:
    """Write ``run_dir``'s int8 graph (default RUN/model.int8.onnx) from its fp32 graph.

    ``calibration``: text for the activation statistics (default: the run's training data);
    ``held_out``: text the entity agreement is checked on (default: the run's dev data), both
    files in the run's data format; the first ``held_out_count`` of its texts are used."""
    run_dir = Path(run_dir)
    output = Path(output or run_dir / INT8_FILE)
    model, cfg = NerModel.load(run_dir, "cpu")
    meta = {p.key: p.value for p in onnx.load(str(fp32_graph), load_external_data=False).metadata_props}
    if WEIGHTS_HASH not in meta or DECODER not in meta:
        raise ValueError(f"{fp32_graph} is not a nerkit graph (no weights hash or decoding data)")
    if decoder_from_spec(json.loads(meta[DECODER])).merge != WORD_SCORES:  # what the tests and benchmarks cover
        raise ValueError(f"{run_dir}: precision=int8 supports token heads (softmax, CRF), not {type(model.head).__name__}")
    training_texts = run_texts(cfg, "train", calibration)
    batches = calibration_batches(model, training_texts, windows, cfg.max_length, cfg.stride, words_of(cfg))
    texts, source = held_out_texts(cfg, run_dir, training_texts, held_out, held_out_count)
    chatter = _QuantizerChatter()
    logging.getLogger().addFilter(chatter)
    try:
        return _quantize_run(run_dir, model, fp32_graph, output, meta, method, alpha, target, batches, texts, source)
    finally:
        logging.getLogger().removeFilter(chatter)


def _quantize_run(run_dir: Path, model: NerModel, fp32_graph: str | Path, output: Path, meta: dict[str, str],
                  method: str, alpha: float, target: float, batches: Sequence[Batch], texts: Sequence[str],
                  source: str) -> Path:
    config = model.encoder.model.config
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fused = fuse(fp32_graph, tmp / "fused.onnx", config.num_attention_heads, config.hidden_size)
        graph = onnx.load(str(fused))
        modules = linear_nodes(graph, model)
        encoder = {module: node for module, node in modules.items() if not module.startswith("head.")}
        smooth(graph, list(encoder.values()), batches, alpha)
        smoothed = tmp / "smoothed.onnx"
        onnx.save(graph, str(smoothed))
        sensitivity = sensitivities(smoothed, encoder, method, batches, tmp)
        order = sorted(encoder, key=sensitivity.__getitem__)
        reference = _entities(run_dir, fused, meta, texts)

        def agreement_of(n: int) -> float:
            candidate = quantize_graph(smoothed, tmp / f"int8_{n}.onnx", method, [encoder[m] for m in order[:n]], batches)
            return entity_agreement(reference, _entities(run_dir, candidate, meta, texts))

        n, agreement = int8_layer_count(run_dir, order, agreement_of, target, f"{len(texts)} {source} texts",
                                        "keep this run fp32")
        meta[QUANTIZATION] = json.dumps({
            "method": method, "alpha": alpha, "int8_layers": order[:n],
            "kept_fp32": ["embeddings", *order[n:], *sorted(set(modules) - set(encoder))],
            "sensitivity": sensitivity, "calibration_windows": sum(len(b[0]) for b in batches),
            "held_out": source, "held_out_texts": len(texts), "held_out_entity_agreement": agreement[n],
            "target": target})
        quantized = onnx.load(str(tmp / f"int8_{n}.onnx"))
        onnx.helper.set_model_props(quantized, meta)
        partial = output.with_name(output.name + ".partial")
        onnx.save(quantized, str(partial))
        partial.replace(output)  # never a half-written graph under the real name
    log.info("wrote %s (%s int8: %d of %d encoder linear layers; entity agreement with fp32 %.4f on %s text)", output,
             method, n, len(encoder), agreement[n], source)
    return output
