"""Export a run directory: to ONNX (``format=onnx``, the default), to a transformers model folder
(``format=hf``, softmax heads), or its int8 encoder for the torch backend (``format=torch precision=int8``).

ONNX: the graph is the model's forward pass: encoder, gather of each word's first sub-token,
and the head's scores (tag emissions, or GlobalPointer span logits). Decoding and the merging
of windows stay outside the graph, in ``nerkit.inference`` with the head's own numpy decoder
(``Head.decoder``: argmax, CRF Viterbi, span threshold), so ``nerkit.onnx_predict`` never
imports torch; the decoder's spec (tags, scheme, CRF transitions, threshold) goes into the
graph's metadata, with a hash of the weights it came from: loading a graph exported from other
weights is refused.

HF: a ``*ForTokenClassification`` folder (config.json with id2label / label2id, model.safetensors
with transformers' key names, tokenizer files) that ``pipeline("token-classification", model=DIR,
aggregation_strategy="first")`` loads. Only a softmax head is a token classifier: transformers
has no CRF or GlobalPointer class (docs/export.md says what works for those).

``python -m nerkit.export run_dir=DIR [format=onnx|hf|torch] [output=...] [opset=18] [precision=fp32|int8] [calibration=FILE] [held_out=FILE] [agreement_target=0.995]``

The exported graph is fp32 whatever precision the torch predictor runs at (ONNX Runtime's CPU
provider has no bf16 kernels for most operators). ``precision=int8`` writes RUN/model.int8.onnx
instead (``nerkit.quantize``: int8 linear layers, the layers that would change the entities kept
fp32, chosen at export on held-out text, the run's dev data by default); ``backend=onnx
precision=int8`` predicts with it. ``format=torch precision=int8`` chooses and calibrates the same
way for PyTorch's int8 kernels (``nerkit.quantize_torch``: RUN/encoder.int8.safetensors, tensors
only); ``precision=int8`` with the torch backend predicts with it, on CPU.
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime
import torch
from omegaconf import MISSING
from torch import nn
from transformers import AutoModelForTokenClassification

from nerkit.cli import parse_args, setup_logging
from nerkit.encoders.bert import BertEncoder
from nerkit.heads.softmax import SoftmaxHead
from nerkit.model import NerModel
from nerkit.onnx_predict import DECODER, HEAD, INPUTS, ONNX_FILE, WEIGHTS_HASH
from nerkit.runs import weights_hash

log = logging.getLogger(__name__)

HF_DIR = "hf"
# Past 2 GB an ONNX protobuf cannot hold the weights; they go to a side file next to it.
PROTOBUF_LIMIT = 2_000_000_000


def example_inputs(model: NerModel) -> tuple[torch.Tensor, ...]:
    """A padded batch to trace with; every dynamic axis gets a distinct size so none is merged."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, len(model.encoder.tokenizer), (2, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    word_index = torch.tensor([[1, 2, 4, 5, 7, 8, 9], [1, 3, 4, 6, 0, 0, 0]])
    return input_ids, attention_mask, word_index, word_index > 0


def _load_transformer(run_dir: str | Path, what: str) -> NerModel:
    model, _ = NerModel.load(run_dir, "cpu")
    if not isinstance(model.encoder, BertEncoder):
        raise ValueError(f"{run_dir}: {what} supports transformer encoders only, not "
                         f"{type(model.encoder).__name__} (packed LSTM sequences do not export)")
    return model


def export_onnx(run_dir: str | Path, output: str | Path | None = None, opset: int = 18, atol: float = 1e-4) -> Path:
    """Export ``run_dir``'s model to ONNX and check ONNX Runtime against PyTorch on a batch."""
    output = Path(output or Path(run_dir) / ONNX_FILE)
    model = _load_transformer(run_dir, "ONNX export")
    decoder = model.head.decoder()  # the head's own, the one every backend decodes with
    example = example_inputs(model)
    batch, tokens, words = torch.export.Dim("batch"), torch.export.Dim("tokens"), torch.export.Dim("words")
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with warnings.catch_warnings():  # the exporter notes each axis name shared by several inputs
        warnings.filterwarnings("ignore", message="# The axis name")
        program = torch.onnx.export(
            model, example, input_names=list(INPUTS), output_names=["scores"], opset_version=opset, dynamo=True,
            dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}, {0: batch, 1: words}, {0: batch, 1: words}),
            verbose=False,
        )
    program.model.metadata_props[WEIGHTS_HASH] = weights_hash(run_dir)
    program.model.metadata_props[DECODER] = json.dumps(decoder.spec())
    program.model.metadata_props[HEAD] = type(model.head).__name__
    program.save(output, external_data=n_bytes > PROTOBUF_LIMIT)

    # A batch shaped differently from the traced one shows that the axes really are dynamic.
    check = tuple(t[:1, :9] for t in example[:2]) + tuple(t[:1, :4] for t in example[2:])
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        for inputs in (example, check):
            expected = model(*inputs).numpy()
            got = session.run(None, dict(zip(INPUTS, (t.numpy() for t in inputs))))[0]
            if got.shape != expected.shape or not np.allclose(got, expected, atol=atol, rtol=1e-4):
                raise RuntimeError(
                    f"{output}: ONNX Runtime disagrees with PyTorch (shapes {got.shape} vs {expected.shape}, "
                    f"max difference {np.abs(got - expected).max() if got.shape == expected.shape else 'n/a'})"
                )
    log.info("exported %s to %s (ONNX Runtime matches PyTorch within %g)", run_dir, output, atol)
    return output


def export_hf(run_dir: str | Path, output: str | Path | None = None, atol: float = 1e-4) -> Path:
    """Write ``run_dir``'s softmax model as a transformers token-classification folder, and check
    that its logits on each word's first sub-token are nerkit's scores."""
    output = Path(output or Path(run_dir) / HF_DIR)
    model = _load_transformer(run_dir, "format=hf")
    head = model.head
    if not isinstance(head, SoftmaxHead):
        raise ValueError(
            f"{run_dir}: format=hf needs a softmax head; transformers has no token-classification class for "
            f"{type(head).__name__}. What works: RUN/encoder loads with AutoModel.from_pretrained, and "
            f"`python -m nerkit.export run_dir={run_dir}` (ONNX) runs the whole model, decoding included, "
            "with nerkit.onnx_predict (no torch); see docs/export.md")
    if head.scheme.name != "BIO":
        log.warning("%s: the head's tags are %s; the pipeline's entity grouping reads B-/I- prefixes only, so "
                    "use aggregation_strategy='none' and group E-/S- tags yourself", run_dir, head.scheme.name)
    config = model.encoder.model.config.__class__.from_dict(model.encoder.model.config.to_dict())
    config.id2label = dict(enumerate(head.tags))
    config.label2id = {tag: i for i, tag in enumerate(head.tags)}
    hf = AutoModelForTokenClassification.from_config(config)
    classifier = getattr(hf, "classifier", None)
    if not isinstance(classifier, nn.Linear) or classifier.weight.shape != head.classifier.weight.shape:
        raise ValueError(f"{run_dir}: {type(hf).__name__} has no linear `classifier` over the hidden states to hold the head")
    hf.base_model.load_state_dict(model.encoder.model.state_dict(), strict=True)
    classifier.load_state_dict(head.classifier.state_dict())
    hf.eval()

    inputs = example_inputs(model)
    with torch.inference_mode():
        expected = model(*inputs)
        logits = hf(input_ids=inputs[0], attention_mask=inputs[1]).logits
        got = logits.gather(1, inputs[2].unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    mask = inputs[3]
    if not torch.allclose(got[mask], expected[mask], atol=atol, rtol=1e-4):
        raise RuntimeError(f"{output}: the transformers model disagrees with nerkit's "
                           f"(max difference {(got[mask] - expected[mask]).abs().max():.3g})")
    hf.save_pretrained(output)
    model.encoder.tokenizer.save_pretrained(output)
    log.info("exported %s to %s (%s, %d tags)", run_dir, output, type(hf).__name__, len(head.tags))
    return output


class Format(str, Enum):
    onnx = "onnx"
    hf = "hf"
    torch = "torch"  # precision=int8 only: RUN/encoder.int8.safetensors, the torch backend's int8 encoder


class GraphPrecision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"  # calibrated here on training text: RUN/model.int8.onnx (nerkit.quantize) or, format=torch,
    # RUN/encoder.int8.safetensors (nerkit.quantize_torch)


@dataclass
class ExportConfig:
    run_dir: str = MISSING
    format: Format = Format.onnx
    output: Optional[str] = None  # default: RUN_DIR/model.onnx (onnx), RUN_DIR/hf (hf), RUN_DIR/encoder.int8.safetensors (torch)
    opset: int = 18  # onnx only
    precision: GraphPrecision = GraphPrecision.fp32  # onnx; torch takes int8 only
    calibration: Optional[str] = None  # int8: a file in the run's training-data format (default: its training data)
    held_out: Optional[str] = None  # int8: text the entity agreement is checked on, same format (default: its dev data)
    agreement_target: float = 0.995  # int8: the share of the fp32 entities on held_out the int8 model must keep


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(ExportConfig, sys.argv[1:] if argv is None else argv, __doc__)
    if not 0 < cfg.agreement_target <= 1:  # NaN too
        raise SystemExit(f"bad argument: agreement_target={cfg.agreement_target}: a share of the fp32 entities, "
                         f"above 0 and at most 1")
    if cfg.format is Format.hf:
        if cfg.precision is not GraphPrecision.fp32:
            raise SystemExit("precision=int8 applies to format=onnx and format=torch only")
        print(export_hf(cfg.run_dir, cfg.output))
    elif cfg.format is Format.torch:
        if cfg.precision is not GraphPrecision.int8:
            raise SystemExit("format=torch writes the int8 encoder: add precision=int8 (a run directory is already "
                             "the torch model)")
        from nerkit.quantize_torch import export_int8_torch  # lazy: torchao loads slowly

        print(export_int8_torch(cfg.run_dir, cfg.output, cfg.calibration, cfg.held_out,
                                target=cfg.agreement_target))
    elif cfg.precision is GraphPrecision.int8:
        from nerkit.quantize import export_int8  # lazy: ONNX Runtime's quantization tools load slowly

        with tempfile.TemporaryDirectory() as tmp:
            print(export_int8(cfg.run_dir, export_onnx(cfg.run_dir, Path(tmp) / ONNX_FILE, cfg.opset), cfg.output,
                              cfg.calibration, cfg.held_out, target=cfg.agreement_target))
    else:
        print(export_onnx(cfg.run_dir, cfg.output, cfg.opset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
