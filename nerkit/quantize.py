"""int8 ONNX graphs for CPU prediction: ``python -m nerkit.export run_dir=RUN precision=int8``.

Steps, all at export, once:

1. The fp32 graph is fused for ONNX Runtime (bias + GELU, residual + LayerNorm).
2. SmoothQuant: on calibration windows of training text, each linear layer's input channels are
   divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` (a Mul before the layer) and its weight
   rows multiplied by ``s``: the same product, with the outlier channels that ruin a per-tensor
   int8 activation scale moved into the weights.
3. The linear layers become int8 (per-output-channel weight scales; activations quantized per
   batch by ONNX Runtime, ``method=dynamic``, or with scales calibrated here, ``method=static``).
   The embeddings and the head stay fp32, and so do the layers whose simulated int8 error is the
   largest, one by one, until the int8 graph gives the fp32 graph's tag on ``target`` of the
   calibration windows' entity words (words either graph tags as part of an entity).

The int8 graph carries the run's weights hash (a graph made from other weights is refused, as
for model.onnx), the decoding data, and what was done (``nerkit.quantization``: method, alpha,
layers kept fp32, calibration windows and the agreement reached on them).
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
from omegaconf import DictConfig
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.transformers.optimizer import optimize_model
import torch
from torch import nn

from nerkit.data import readers
from nerkit.data.windowing import WindowTable, budget_batches
from nerkit.data.encoding import TextEncoder
from nerkit.data.words import words_of
from nerkit.heads.decoding import WORD_SCORES, decoder_from_spec
from nerkit.inference import Inference
from nerkit.model import NerModel, torch_scores
from nerkit.onnx_predict import DECODER, INPUTS, INT8_FILE, QUANTIZATION, WEIGHTS_HASH

log = logging.getLogger(__name__)

METHODS = ("dynamic", "static")
Batch = tuple[np.ndarray, ...]
# NER readers a run's training data may be read with, by name: a run directory never names code to run.
CALIBRATION_READERS = {"nerkit.data.readers.read_conll": readers.read_conll,
                       "nerkit.data.readers.read_json_spans": readers.read_json_spans,
                       "nerkit.data.readers.read_doccano": readers.read_doccano}


def calibration_texts(cfg: DictConfig, path: str | Path | None = None) -> list[str]:
    """The texts of ``path`` (default: the run's training data), read as the run read its training data."""
    train = cfg.data.get("train")
    reader = CALIBRATION_READERS.get(train.get("_target_")) if train is not None else None
    if reader is None:
        raise ValueError(f"int8 calibration reads the run's training data format; {train and train.get('_target_')!r} "
                         f"is not one of {sorted(CALIBRATION_READERS)}")
    kwargs = {k: v for k, v in train.items() if k not in ("_target_", "path", "limit")}
    return [doc.text for doc in reader(path or train.path, **kwargs)]


def calibration_batches(model: NerModel, texts: Sequence[str], max_windows: int, max_length: int, stride: int,
                        words: str, batch_size: int = 32) -> list[Batch]:
    """Padded graph inputs for the first ``max_windows`` windows of ``texts``, cut and batched
    as prediction cuts and batches them."""
    predictor = Inference(TextEncoder(model.encoder.tokenizer, max_length, stride, words=words),
                          torch_scores(model, torch.device("cpu"), "fp32"), model.head.decoder, batch_size)
    encodings = predictor.text_encoder.encode(list(texts))
    table = WindowTable.of([enc.windows for enc in encodings])
    n = min(max_windows, len(table.doc))
    if n == 0:
        raise ValueError("the calibration data holds no text to quantize with")
    specials = len(predictor.text_encoder.prefix_ids) + len(predictor.text_encoder.suffix_ids)
    lengths = (table.token_end - table.token_start + specials)[:n].tolist()
    return [predictor.window_batch(encodings, table, rows)
            for rows in budget_batches(lengths, batch_size, predictor.max_batch_tokens, predictor.batch_cost_tokens)]


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


def smooth(graph: onnx.ModelProto, nodes: Sequence[str], batches: Sequence[Batch], alpha: float) -> dict[str, float]:
    """SmoothQuant ``nodes`` (MatMuls by a weight) of ``graph`` in place; returns each node's
    simulated int8 relative error after smoothing (per-tensor uint8 input, per-channel int8 weights)."""
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
    scales = {}
    for tensor, group in groups.items():
        w_max = np.max([np.abs(weights[n]).max(1) for n in group], 0)
        scale = (np.maximum(amax[tensor], 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha)).astype(np.float32)
        scales[tensor] = scale
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
    errors = {name: [0.0, 0.0] for name in nodes}
    for values in _input_values(graph, [f"{t}_smoothed" for t in groups], batches):
        for tensor, group in groups.items():
            x = values[f"{tensor}_smoothed"].reshape(-1, amax[tensor].shape[0])
            for name in group:
                w = weights[name] * scales[tensor][:, None]
                exact = x @ w
                errors[name][0] += float(np.square(_int8_input(x) @ _int8_weight(w) - exact).sum())
                errors[name][1] += float(np.square(exact).sum())
    return {name: (err / norm) ** 0.5 if norm else 0.0 for name, (err, norm) in errors.items()}


def _int8_input(x: np.ndarray) -> np.ndarray:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _int8_weight(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max(0, keepdims=True) / 127
    scale[scale == 0] = 1.0
    return np.round(w / scale) * scale


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


def run_graph(path: str | Path, batches: Sequence[Batch], threads: int = 1) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, dict(zip(INPUTS, batch)))[0] for batch in batches]


def entity_word_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray], batches: Sequence[Batch],
                          outside: int = 0) -> float:
    """Among real words either graph tags as part of an entity, the share both give the same tag
    (token heads; tag ``outside`` is O). Far stricter than agreement over all words, most of
    which are O whatever the precision."""
    same = total = 0
    for a, b, batch in zip(reference, other, batches):
        tags_a, tags_b = a.argmax(-1), b.argmax(-1)
        entity = batch[3] & ((tags_a != outside) | (tags_b != outside))
        same += int((tags_a == tags_b)[entity].sum())
        total += int(entity.sum())
    return same / total if total else 1.0


def export_int8(run_dir: str | Path, fp32_graph: str | Path, output: str | Path | None = None,
                calibration: str | Path | None = None, method: str = "dynamic", windows: int = 300,
                alpha: float = 0.8, target: float = 0.995, max_kept: int = 12) -> Path:
    """Write ``run_dir``'s int8 graph (default RUN/model.int8.onnx) from its fp32 graph."""
    run_dir = Path(run_dir)
    output = Path(output or run_dir / INT8_FILE)
    model, cfg = NerModel.load(run_dir, "cpu")
    meta = {p.key: p.value for p in onnx.load(str(fp32_graph), load_external_data=False).metadata_props}
    if WEIGHTS_HASH not in meta or DECODER not in meta:
        raise ValueError(f"{fp32_graph} is not a nerkit graph (no weights hash or decoding data)")
    if decoder_from_spec(json.loads(meta[DECODER])).merge != WORD_SCORES:  # agreement is measured on tags
        raise ValueError(f"{run_dir}: precision=int8 supports token heads (softmax, CRF), not {type(model.head).__name__}")
    batches = calibration_batches(model, calibration_texts(cfg, calibration), windows, cfg.max_length, cfg.stride,
                                  words_of(cfg))
    config = model.encoder.model.config
    with tempfile.TemporaryDirectory() as tmp:
        fused = fuse(fp32_graph, Path(tmp) / "fused.onnx", config.num_attention_heads, config.hidden_size)
        graph = onnx.load(str(fused))
        modules = linear_nodes(graph, model)
        encoder = {module: node for module, node in modules.items() if not module.startswith("head.")}
        errors = smooth(graph, list(encoder.values()), batches, alpha)
        smoothed = Path(tmp) / "smoothed.onnx"
        onnx.save(graph, str(smoothed))
        reference = run_graph(fused, batches)
        by_error = sorted(encoder, key=lambda module: -errors[encoder[module]])
        for n_kept in range(0, max_kept + 1):
            kept = by_error[:n_kept]
            candidate = quantize_graph(smoothed, Path(tmp) / "int8.onnx", method,
                                       [encoder[m] for m in by_error[n_kept:]], batches)
            agreement = entity_word_agreement(reference, run_graph(candidate, batches), batches)
            log.info("int8 with %d layer(s) kept fp32: entity-word agreement with fp32 %.4f on %d calibration windows",
                     n_kept, agreement, sum(len(b[0]) for b in batches))
            if agreement >= target:
                break
        else:
            log.warning("int8: entity-word agreement %.4f stays below %.4f with %d layers kept fp32", agreement, target,
                        max_kept)
        quantized = onnx.load(str(candidate))
        meta[QUANTIZATION] = json.dumps({
            "method": method, "alpha": alpha, "kept_fp32": ["embeddings", *kept, *sorted(set(modules) - set(encoder))],
            "calibration_windows": sum(len(b[0]) for b in batches), "calibration_entity_word_agreement": agreement,
            "target": target})
        onnx.helper.set_model_props(quantized, meta)
        partial = output.with_name(output.name + ".partial")
        onnx.save(quantized, str(partial))
        partial.replace(output)  # never a half-written graph under the real name
    log.info("wrote %s (%s int8, %d of %d encoder linear layers kept fp32)", output, method, len(kept), len(encoder))
    return output
