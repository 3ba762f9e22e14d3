"""ONNX export of a run directory, and a Predictor that runs the exported graph in ONNX Runtime.

The graph is the model's forward pass: encoder, gather of each word's first sub-token, and
the head's scores (tag emissions, or GlobalPointer span logits). Decoding (argmax, CRF
Viterbi, span thresholds) and the merging of windows stay outside the graph, in the head's
own ``window_outputs`` / ``decode_documents``, so both runtimes share every step after the
scores. The export records a hash of the weights it came from; loading a graph exported from
other weights is refused.

The exported graph is fp32 whatever precision the torch predictor runs at (ONNX Runtime's CPU
provider has no bf16 kernels for most operators); for a smaller, faster CPU graph, quantise it
with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights; bench/speed.py measures its
speed and its entity agreement with fp32).

``python -m nerkit.export run_dir=DIR [output=DIR/model.onnx] [opset=18]``
"""
from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime
import torch
from omegaconf import MISSING

from nerkit.encoders.bert import BertEncoder
from nerkit.model import WEIGHTS, NerModel
from nerkit.predict import Predictor

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")
WEIGHTS_HASH = "nerkit.weights_sha256"
# Past 2 GB an ONNX protobuf cannot hold the weights; they go to a side file next to it.
PROTOBUF_LIMIT = 2_000_000_000


def weights_hash(run_dir: str | Path) -> str:
    digest = hashlib.sha256()
    with open(Path(run_dir) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_inputs(model: NerModel) -> tuple[torch.Tensor, ...]:
    """A padded batch to trace with; every dynamic axis gets a distinct size so none is merged."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, len(model.encoder.tokenizer), (2, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    word_index = torch.tensor([[1, 2, 4, 5, 7, 8, 9], [1, 3, 4, 6, 0, 0, 0]])
    return input_ids, attention_mask, word_index, word_index > 0


def export_onnx(run_dir: str | Path, output: str | Path | None = None, opset: int = 18, atol: float = 1e-4) -> Path:
    """Export ``run_dir``'s model to ONNX and check ONNX Runtime against PyTorch on a batch."""
    output = Path(output or Path(run_dir) / ONNX_FILE)
    model, _ = NerModel.load(run_dir, "cpu")
    if not isinstance(model.encoder, BertEncoder):
        raise ValueError(f"{run_dir}: ONNX export supports transformer encoders only, not "
                         f"{type(model.encoder).__name__} (packed LSTM sequences do not export)")
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


class OnnxPredictor(Predictor):
    """``Predictor`` whose window scores come from ONNX Runtime; tokenizing, windowing and
    decoding are the PyTorch predictor's (the head's decoders need its CRF transitions)."""

    def __init__(self, model: NerModel, session, max_length: int = 128, stride: int = 32, batch_size: int = 64):
        super().__init__(model, max_length, stride, batch_size, "cpu", precision="fp32")  # the graph is fp32
        self.session = session

    @classmethod
    def from_run(cls, run_dir: str | Path, onnx_path: str | Path | None = None, batch_size: int = 64,
                 providers: list[str] | None = None, threads: int | None = None) -> "OnnxPredictor":
        """``threads``: ONNX Runtime's intra-op threads (default: one per physical core)."""
        onnx_path = Path(onnx_path or Path(run_dir) / ONNX_FILE)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{onnx_path} not found; create it with: python -m nerkit.export run_dir={run_dir}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers or ["CPUExecutionProvider"])
        exported_from = session.get_modelmeta().custom_metadata_map.get(WEIGHTS_HASH)
        if exported_from != weights_hash(run_dir):
            raise ValueError(f"{onnx_path} was not exported from the weights in {run_dir}; export it again")
        model, cfg = NerModel.load(run_dir, "cpu")
        return cls(model, session, cfg.max_length, cfg.stride, batch_size)

    def scores(self, input_ids, attention_mask, word_index, word_mask) -> torch.Tensor:
        inputs = (input_ids, attention_mask, word_index, word_mask)
        return torch.from_numpy(self.session.run(None, dict(zip(INPUTS, (t.numpy() for t in inputs))))[0])


@dataclass
class ExportConfig:
    run_dir: str = MISSING
    output: Optional[str] = None  # default: RUN_DIR/model.onnx
    opset: int = 18


def main(argv: list[str] | None = None) -> int:
    from nerkit.predict_cli import parse_args, setup_logging

    setup_logging()
    cfg = parse_args(ExportConfig, sys.argv[1:] if argv is None else argv, __doc__)
    print(export_onnx(cfg.run_dir, cfg.output, cfg.opset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
