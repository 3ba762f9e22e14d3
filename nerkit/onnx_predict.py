"""Prediction with an exported ONNX graph in a process that never imports torch.

A thin face over ``nerkit.inference``, like ``nerkit.predict.Predictor``: the same words,
windows, batches, merging and the head's own decoder (``nerkit.heads.decoding``, numpy); only
the scores come from ONNX Runtime. The decoder (tags and scheme, CRF transitions, span
threshold) is stored in the graph's metadata at export time, beside the hash of the weights it
was exported from. The run directory is read and checked by ``nerkit.runs.read_run``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
from transformers import PreTrainedTokenizerFast

from nerkit.data.encoding import TextEncoder
from nerkit.heads.decoding import Decoder, decoder_from_spec
from nerkit.inference import Inference, freeze_loaded_objects
from nerkit.data.words import DEFAULT_WORDS, words_of
from nerkit.runs import CONFIG, ENCODER_DIR, LABELS, read_run, weights_hash

ONNX_FILE = "model.onnx"
# precision=int8: the quantized graph nerkit.quantize writes, calibrated at export.
INT8_FILE = "model.int8.onnx"
GRAPH_FILES = {"fp32": ONNX_FILE, "int8": INT8_FILE}
INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")
WEIGHTS_HASH, DECODER, HEAD, QUANTIZATION = "nerkit.weights_sha256", "nerkit.decoder", "nerkit.head", "nerkit.quantization"


class OnnxPredictor(Inference):
    """Texts or token lists in, ``Entity`` lists out, like ``nerkit.predict.Predictor``, without torch."""

    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: PreTrainedTokenizerFast, decoder: Decoder,
                 head_name: str, max_length: int = 128, stride: int = 32, batch_size: int = 64, truncate: bool = False,
                 max_batch_tokens: int = 2048, words: str = DEFAULT_WORDS):
        self.session, self.head_name = session, head_name
        self.precision = "fp32"  # the graph's: from_run sets "int8" for a quantized one
        super().__init__(TextEncoder(tokenizer, max_length, stride, truncate, words), self._run_session, lambda: decoder,
                         batch_size, max_batch_tokens)

    def _run_session(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, dict(zip(INPUTS, arrays)))[0]

    @classmethod
    def from_run(cls, run_dir: str | Path, onnx_path: str | Path | None = None, batch_size: int = 64,
                 providers: list[str] | None = None, threads: int | None = None,
                 precision: str = "fp32") -> "OnnxPredictor":
        """``threads``: ONNX Runtime's intra-op threads (default: one per physical core).
        ``precision``: "fp32" runs RUN/model.onnx, "int8" the quantized RUN/model.int8.onnx."""
        run_dir = Path(run_dir)
        if precision not in GRAPH_FILES:
            raise ValueError(f"precision must be one of {tuple(GRAPH_FILES)} for ONNX graphs, got {precision!r}")
        onnx_path = Path(onnx_path or run_dir / GRAPH_FILES[precision])
        if not onnx_path.is_file():
            option = " precision=int8" if precision == "int8" else ""
            raise FileNotFoundError(f"{onnx_path} not found; create it with: python -m nerkit.export run_dir={run_dir}{option}")
        # The same checks as the torch predictor's (nerkit.runs, which imports no torch).
        cfg, entity_types = read_run(run_dir, "entity_types")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers or ["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get(WEIGHTS_HASH) != weights_hash(run_dir):
            raise ValueError(f"{onnx_path} was not exported from the weights in {run_dir}; export it again")
        try:
            decoder = decoder_from_spec(json.loads(meta[DECODER]))
            head_name = meta[HEAD]
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{onnx_path} has no decoding data this nerkit reads (exported by an older nerkit: "
                             f"{err}); export it again") from None
        if decoder.entity_types != entity_types:
            raise ValueError(f"{onnx_path} decodes entity types {decoder.entity_types}, but {run_dir / LABELS} lists "
                             f"{entity_types}; export it again")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(run_dir / ENCODER_DIR))
        predictor = cls(session, tokenizer, decoder, head_name, cfg.max_length, cfg.stride, batch_size,
                        cfg.get("truncate", False), words=words_of(cfg, str(run_dir / CONFIG)))
        predictor.precision = "int8" if QUANTIZATION in meta else "fp32"
        freeze_loaded_objects()  # as the torch predictor's loading: no garbage-collector pauses over it later
        return predictor
