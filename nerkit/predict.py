"""Prediction with PyTorch: raw texts (``predict``) or token lists (``predict_tokens``) in,
entities with exact character offsets out.

A thin face over ``nerkit.inference`` (windows, batches sorted by length, merging, decoding):
it loads a run directory and supplies the torch scores function.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nerkit.data.encoding import TextEncoder
from nerkit.data.words import DEFAULT_WORDS, words_of
from nerkit.inference import Inference, freeze_loaded_objects
from nerkit.model import NerModel, default_batch_cost, default_batch_tokens, torch_scores
from nerkit.precision import PREDICT_PRECISIONS, check_precision, dtype_of
from nerkit.quantize_torch import Int8Model, load_int8
from nerkit.runs import CONFIG


class Predictor(Inference):
    def __init__(self, model: NerModel, max_length: int = 128, stride: int = 32, batch_size: int = 64,
                 device: str | torch.device = "cpu", truncate: bool = False, max_batch_tokens: int | None = None,
                 precision: str = "auto", cast_encoder: bool = False, compile: bool = False, words: str = DEFAULT_WORDS):
        """``precision``: "bf16"/"fp16" run the model under autocast, "auto" picks bf16 where the
        hardware has bf16 units (nerkit.precision); "int8" needs an encoder holding a run's int8
        graph (``from_run`` loads it). ``cast_encoder`` also holds the encoder's
        weights in that type (half the memory, no weight casts per batch): only for a model that
        nothing else trains or evaluates in fp32, as ``from_run`` loads it. ``compile`` runs the
        encoder through ``torch.compile`` (compiled here, tens of seconds; then faster batches). ``words``
        names the splitter that cuts raw text into words (``nerkit.data.words``; a run records its own)."""
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.precision = check_precision(precision, self.device, PREDICT_PRECISIONS)
        if self.precision == "int8" and not isinstance(getattr(model.encoder, "model", None), Int8Model):
            raise ValueError("precision=int8 predicts with a run's calibrated int8 encoder: "
                             "Predictor.from_run(RUN, precision='int8')")
        if cast_encoder:
            self.model.encoder.to(dtype_of(self.precision))
        max_batch_tokens = max_batch_tokens or default_batch_tokens(self.device, batch_size, max_length)
        super().__init__(TextEncoder(model.encoder.tokenizer, max_length, stride, truncate, words),
                         torch_scores(self.model, self.device, self.precision), self.model.head.decoder, batch_size,
                         max_batch_tokens, default_batch_cost(self.device, max_batch_tokens))
        if compile and self.precision != "int8":  # the int8 graph is compiled already
            self.model.encoder.compile_for_inference()
            # Compiled here, not at the first request: one graph for single windows, one for batches.
            self.predict(["Compile the encoder ."])
            self.predict(["a", "Compile the encoder for batches of windows of any length ."])

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, batch_size: int = 64,
                 trust_remote_code: bool = False, precision: str = "auto", compile: bool = False) -> "Predictor":
        """Load a trained run directory (weights, config, labels, tokenizer; no pickle). Nothing in
        it runs as code; ``trust_remote_code=True`` allows the encoder's own Python files in
        ``encoder/``, for a directory you trust. ``precision="int8"`` loads the run's int8 encoder
        (RUN/encoder.int8.safetensors, ``python -m nerkit.export run_dir=RUN format=torch precision=int8``).
        Loading ends with ``nerkit.inference.freeze_loaded_objects``: no garbage-collector pauses
        over the model later."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_precision(precision, device, PREDICT_PRECISIONS)
        model, cfg = NerModel.load(run_dir, device, trust_remote_code)
        if precision == "int8":
            load_int8(model, run_dir)
        predictor = cls(model, cfg.max_length, cfg.stride, batch_size, device, cfg.get("truncate", False),
                        precision=precision, cast_encoder=True, compile=compile,
                        words=words_of(cfg, str(Path(run_dir) / CONFIG)))
        freeze_loaded_objects()
        return predictor

    @property
    def head_name(self) -> str:
        return type(self.model.head).__name__


if __name__ == "__main__":  # the batch CLI is its own module: importing it from here ran in a circle
    raise SystemExit("the batch prediction command is python -m nerkit.predict_cli run_dir=DIR input=IN output=OUT")
