"""int8 BERT encoders for CPU prediction with PyTorch: ``python -m nerkit.export run_dir=RUN
format=torch precision=int8`` calibrates once and writes RUN/encoder.int8.safetensors;
``precision=int8`` with the torch backend (``Predictor.from_run``, the predict CLI, the server)
predicts with it.

ONNX Runtime's int8 (``nerkit.quantize``) quantizes activations per batch and keeps fp32 around
each int8 product; on a CPU with AVX-512 BF16 that was slower than bf16. Here torchao's PT2E
quantization with static activation scales is lowered by inductor to oneDNN's int8 matmuls (AVX-512
VNNI), everything else running in bf16 where the CPU has bf16 units, else fp32.

Steps at export, once:

1. SmoothQuant on every linear layer of the transformer layers: the layer reads its input
   divided by ``s = max|x|^alpha / max|w|^(1 - alpha)`` per channel (a multiplication inductor
   fuses into the quantization) and its weight columns are multiplied by ``s``.
2. Each layer's sensitivity: the relative error of the encoder's output on the calibration windows
   with that layer alone int8.
3. The least sensitive layers become int8 (per-channel weight scales, activation scales from
   histograms of the calibration windows): as many as keep ``target`` of the fp32 entities on
   held-out text, predicted as prediction will run (compiled, bf16 elsewhere), found by bisection.

The file holds tensors only, no code: the smoothing scales, the observers' statistics, and in its
metadata the int8 layers, the agreement reached and the hash of the weights it was made from.
Loading rebuilds the int8 graph from the run's own model (``torch.export``, then the same
quantizer) and refuses a file made from other weights or for another graph.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch._inductor.config as inductor_config
from omegaconf import DictConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import BaseModelOutput

from nerkit.calibration import Batch, calibration_batches, fp32_inference, held_out_texts, int8_layer_count, run_texts
from nerkit.data.words import words_of
from nerkit.evaluation import entity_agreement
from nerkit.model import NerModel
from nerkit.precision import autocast
from nerkit.runs import weights_hash

log = logging.getLogger(__name__)

INT8_FILE = "encoder.int8.safetensors"
WEIGHTS_HASH, QUANTIZATION = "nerkit.weights_sha256", "nerkit.quantization"
_SMOOTH, _OBSERVER = "smooth.", "observer."


class Smoothed(nn.Module):
    """A linear layer that reads its input divided by SmoothQuant's scale (its weight absorbed it)."""

    def __init__(self, linear: nn.Linear, scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("divisor", 1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.divisor)


class _LastHidden(nn.Module):
    """The HF model as a function of two tensors, the form ``torch.export`` takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Int8Model(nn.Module):
    """Stands in for the encoder's HF model at prediction: the same call, the int8 graph inside."""

    def __init__(self, graph: nn.Module, config: PretrainedConfig):
        super().__init__()
        self.graph, self.config = graph, config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.graph(input_ids, attention_mask))

    def train(self, mode: bool = True) -> "Int8Model":
        # Inference only, always: the exported graph refuses train() and eval() (the predictor calls eval()).
        if mode:
            raise RuntimeError("an int8 encoder predicts only; train the run's fp32 model")
        return self


def transformer_linears(hf_model: nn.Module) -> list[str]:
    """The linear layers of the transformer layers (attention and feed-forward), by module name;
    the embeddings, the pooler and the head stay as they are."""
    layers = getattr(hf_model, "encoder", None)
    if layers is None or not hasattr(layers, "layer"):
        raise ValueError(f"precision=int8 quantizes BERT-style encoders (model.encoder.layer); "
                         f"{type(hf_model).__name__} has none")
    return [f"encoder.{name}" for name, module in layers.named_modules() if isinstance(module, nn.Linear)]


@torch.no_grad()
def smoothing_scales(hf_model: nn.Module, linears: Sequence[str], batches: Sequence[Batch],
                     alpha: float) -> dict[str, torch.Tensor]:
    """SmoothQuant's per-channel scale for each of ``linears``, from their inputs on ``batches``."""
    amax: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, inputs, output):
            seen = inputs[0].detach().abs().flatten(0, -2).amax(0).float()
            amax[name] = torch.maximum(amax[name], seen) if name in amax else seen
        return hook

    hooks = [hf_model.get_submodule(name).register_forward_hook(record(name)) for name in linears]
    try:
        hf_model.eval()
        for batch in batches:
            hf_model(input_ids=torch.from_numpy(batch[0]), attention_mask=torch.from_numpy(batch[1]))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: amax[name].clamp(min=1e-5) ** alpha
            / hf_model.get_submodule(name).weight.abs().amax(0).float().clamp(min=1e-5) ** (1 - alpha)
            for name in linears}


@torch.no_grad()
def smoothed(hf_model: nn.Module, scales: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``hf_model`` with each layer of ``scales`` smoothed (the same function, up to rounding),
    with the plain attention, which inductor fuses into faster code than SDPA's kernel on CPU
    (as ``BertEncoder.compile_for_inference``)."""
    model = copy.deepcopy(hf_model).float().eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    for name, scale in scales.items():
        parent, _, child = name.rpartition(".")
        linear = model.get_submodule(name)
        linear.weight.mul_(scale)
        setattr(model.get_submodule(parent), child, Smoothed(linear, scale))
    return model


def _exported(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` as one graph over any batch size and window length."""
    max_length = getattr(model.config, "max_position_embeddings", 512)
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    batch, length = torch.export.Dim("batch", min=1, max=1 << 16), torch.export.Dim("length", min=1, max=max_length)
    return torch.export.export(_LastHidden(model).eval(), example,
                               dynamic_shapes=((batch, length), (batch, length))).module()


@functools.lru_cache(maxsize=None)
def _pt2e():
    """torchao's PT2E quantization (the ``int8`` extra). Its import tries to load CUDA kernels and
    registers types with torch's pytree, warning for each; int8 on CPU needs none of it, so those
    warnings are dropped here."""
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        from torchao.quantization import pt2e
        from torchao.quantization.pt2e import quantize_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    except ImportError as err:
        raise ImportError(f"precision=int8 with the torch backend needs torchao: pip install 'nerkit[int8]' ({err})") from err
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return pt2e, quantize_pt2e, x86_inductor_quantizer


def _prepared(graph: torch.fx.GraphModule, int8_layers: Sequence[str]) -> torch.fx.GraphModule:
    """The graph with observers for ``int8_layers`` (names in the HF model)."""
    _, pt2e, x86 = _pt2e()
    quantizer = x86.X86InductorQuantizer()
    config = x86.get_default_x86_inductor_quantization_config(is_dynamic=False)
    for name in int8_layers:
        quantizer.set_module_name_qconfig(f"model.{name}", config)
    return pt2e.prepare_pt2e(copy.deepcopy(graph), quantizer)


def _observers(prepared: nn.Module) -> dict[str, torch.Tensor]:
    observer = _pt2e()[0].ObserverBase
    return {f"{_OBSERVER}{name}.{key}": value.detach().clone().contiguous()
            for name, module in prepared.named_modules() if isinstance(module, observer)
            for key, value in module.state_dict().items()}


@torch.no_grad()
def _calibrated(graph: torch.fx.GraphModule, int8_layers: Sequence[str], batches: Sequence[Batch]
                ) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The int8 graph for ``int8_layers`` with scales observed on ``batches`` (quantization
    simulated in fp32, uncompiled), and the observers' statistics it was made from."""
    prepared = _prepared(graph, int8_layers)
    for batch in batches:
        prepared(torch.from_numpy(batch[0]), torch.from_numpy(batch[1]))
    observed = _observers(prepared)
    return _pt2e()[1].convert_pt2e(prepared), observed


def _compiled(converted: nn.Module) -> nn.Module:
    """The int8 graph compiled: inductor folds the weights' quantization in (``freezing``, a
    compile-time setting, so every call is wrapped in it: a recompile, e.g. for another grad mode,
    is frozen too) and calls oneDNN's int8 kernels. Compiled here, as prediction calls it
    (inference mode, autocast), for one window and for batches."""
    compiled = _Frozen(torch.compile(converted, dynamic=True))
    with torch.inference_mode(), autocast("cpu", "int8"):
        for shape in ((1, 5), (3, 7)):
            compiled(torch.ones(shape, dtype=torch.long), torch.ones(shape, dtype=torch.long))
    return compiled


class _Frozen(nn.Module):
    """A compiled graph called under inductor's freezing setting (see ``_compiled``; passing it as
    ``torch.compile(options=...)`` does not reach the int8 lowering). Config patches are
    per thread, so concurrent calls do not undo each other's."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return self.compiled(input_ids, attention_mask)


class _Prediction:
    """Entities of held-out texts from an NER model whose encoder runs a given int8 graph."""

    def __init__(self, model: NerModel, cfg: DictConfig, texts: Sequence[str]):
        self.model, self.texts = model.eval(), list(texts)
        self.predictor = fp32_inference(model, cfg.max_length, cfg.stride, words_of(cfg), cfg.get("truncate", False))
        self.fp32 = self.entities()

    def entities(self) -> list[set]:
        return [{(e.start, e.end, e.label) for e in doc} for doc in self.predictor.predict(self.texts)]

    def agreement(self, graph: nn.Module) -> float:
        hf_model = self.model.encoder.model
        self.model.encoder.model = Int8Model(graph, hf_model.config)
        try:
            with autocast("cpu", "int8"):  # bf16 beside the int8 products where the CPU has bf16 units
                return entity_agreement(self.fp32, self.entities())
        finally:
            self.model.encoder.model = hf_model


def _relative_error(graph: nn.Module, reference: Sequence[torch.Tensor], batches: Sequence[Batch]) -> float:
    with torch.no_grad():
        outputs = [graph(torch.from_numpy(b[0]), torch.from_numpy(b[1])) for b in batches]
    error = sum(float((o - r).square().sum()) for o, r in zip(outputs, reference))
    return (error / sum(float(r.square().sum()) for r in reference)) ** 0.5


def export_int8_torch(run_dir: str | Path, output: str | Path | None = None, calibration: str | Path | None = None,
                      held_out: str | Path | None = None, windows: int = 1000, held_out_count: int = 1000,
                      alpha: float = 0.8, target: float = 0.995) -> Path:
    """Calibrate ``run_dir``'s encoder for int8 and write RUN/encoder.int8.safetensors (or ``output``).

    ``calibration``: text for the activation statistics (default: the run's training data);
    ``held_out``: text the entity agreement is checked on (default: the run's dev data), both in
    the run's data format. Static scales need more windows than ONNX Runtime's per-batch ones: on
    CoNLL-2003, 1,000 instead of 300 kept 0.4% more of the entities."""
    run_dir = Path(run_dir)
    output = Path(output or run_dir / INT8_FILE)
    model, cfg = NerModel.load(run_dir, "cpu")
    hf_model = model.encoder.model
    linears = transformer_linears(hf_model)
    training_texts = run_texts(cfg, "train", calibration)
    batches = calibration_batches(model, training_texts, windows, cfg.max_length, cfg.stride, words_of(cfg))
    texts, source = held_out_texts(cfg, run_dir, training_texts, held_out, held_out_count)

    scales = smoothing_scales(hf_model, linears, batches, alpha)
    graph = _exported(smoothed(hf_model, scales))
    with torch.no_grad():
        reference = [graph(torch.from_numpy(b[0]), torch.from_numpy(b[1])) for b in batches]
    sensitivity = {name: _relative_error(_calibrated(graph, [name], batches)[0], reference, batches) for name in linears}
    order = sorted(linears, key=sensitivity.__getitem__)
    prediction = _Prediction(model, cfg, texts)
    made: dict[int, dict[str, torch.Tensor]] = {}

    def agreement_of(n: int) -> float:
        converted, made[n] = _calibrated(graph, order[:n], batches)
        return prediction.agreement(_compiled(converted))

    n, agreement = int8_layer_count(run_dir, order, agreement_of, target, f"{len(texts)} {source} texts",
                                    "keep this run bf16")
    tensors = {f"{_SMOOTH}{name}": scale.contiguous() for name, scale in scales.items()} | made[n]
    metadata = {WEIGHTS_HASH: weights_hash(run_dir), QUANTIZATION: json.dumps({
        "method": "static", "alpha": alpha, "int8_layers": order[:n], "kept": order[n:], "sensitivity": sensitivity,
        "calibration_windows": sum(len(b[0]) for b in batches), "held_out": source, "held_out_texts": len(texts),
        "held_out_entity_agreement": agreement[n], "target": target, "torch": torch.__version__})}
    partial = output.with_name(output.name + ".partial")
    save_file(tensors, str(partial), metadata)
    partial.replace(output)  # never a half-written file under the real name
    log.info("wrote %s (static int8: %d of %d encoder linear layers; entity agreement with fp32 %.4f on %s text)",
             output, n, len(order), agreement[n], source)
    return output


def quantization_of(run_dir: str | Path) -> dict:
    """What the export did (int8 layers, agreement reached, ...), read from RUN/encoder.int8.safetensors."""
    with safe_open(str(Path(run_dir) / INT8_FILE), "pt") as f:
        return json.loads(f.metadata()[QUANTIZATION])


def load_int8(model: NerModel, run_dir: str | Path) -> None:
    """Put the int8 graph of RUN/encoder.int8.safetensors in ``model``'s encoder (compiled; tens of seconds)."""
    path = Path(run_dir) / INT8_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: precision=int8 with the torch backend needs "
                                f"python -m nerkit.export run_dir={run_dir} format=torch precision=int8")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if metadata.get(WEIGHTS_HASH) != weights_hash(run_dir):
        raise ValueError(f"{path} was made from other weights than {run_dir}'s; export it again")
    done = json.loads(metadata[QUANTIZATION])
    hf_model = model.encoder.model
    linears = set(transformer_linears(hf_model))
    scales = {key[len(_SMOOTH):]: value for key, value in tensors.items() if key.startswith(_SMOOTH)}
    if set(scales) != linears or not set(done["int8_layers"]) <= linears:
        raise ValueError(f"{path} was made for another encoder (its layers are not this model's)")
    prepared = _prepared(_exported(smoothed(hf_model, scales)), done["int8_layers"])
    stored = {key: value for key, value in tensors.items() if key.startswith(_OBSERVER)}
    if set(stored) != set(_observers(prepared)):  # the statistics' shapes: observers resize on loading
        raise ValueError(f"{path} was made for another graph (torch {done.get('torch')}, here {torch.__version__}); "
                         f"export it again")
    prepared.load_state_dict({**prepared.state_dict(), **{k[len(_OBSERVER):]: v for k, v in stored.items()}})
    model.encoder.model = Int8Model(_compiled(_pt2e()[1].convert_pt2e(prepared)), hf_model.config)
