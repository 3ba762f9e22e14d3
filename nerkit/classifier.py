"""Document classification with a trained run: texts in, (label, probability) out.

``Classifier.from_run(dir).predict(texts)`` loads a ``task=classify`` run directory (the model is
``nerkit.classifier_model``, the documents' encoder inputs ``nerkit.data.document_inputs``) and
uses it. Training is ``nerkit.tasks.classify``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig

from nerkit.classifier_model import DocClassifier
from nerkit.data.document_inputs import DocumentInputs, batch_tensors
from nerkit.data.encoding import TextEncoder
from nerkit.precision import autocast, check_precision, dtype_of


class Classifier:
    """Texts in, (label, probability) out, for a trained ``DocClassifier``."""

    def __init__(self, model: DocClassifier, cfg: DictConfig, batch_size: int = 16, device: str | torch.device = "cpu",
                 precision: str = "fp32", cast_encoder: bool = False):
        """``precision`` and ``cast_encoder`` as for ``nerkit.predict.Predictor``: "bf16" runs under
        autocast, and ``cast_encoder`` also holds the encoder's weights in bf16 (a loaded model only)."""
        self.model, self.batch_size, self.device = model.to(device).eval(), batch_size, torch.device(device)
        self.precision = check_precision(precision, self.device)
        if cast_encoder:
            self.model.encoder.to(dtype_of(self.precision))
        text_encoder = TextEncoder(model.encoder.tokenizer, cfg.max_length, cfg.stride)
        self.inputs = DocumentInputs(text_encoder, cfg.task.strategy, cfg.task.head_tokens)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", batch_size: int = 16,
                 trust_remote_code: bool = False, precision: str = "auto") -> "Classifier":
        """Load a trained classifier; ``trust_remote_code`` lets its encoder run Python from the run
        directory; ``precision="auto"`` is bf16 where the hardware has bf16 units (nerkit.precision)."""
        model, cfg = DocClassifier.load(run_dir, device, trust_remote_code)
        return cls(model, cfg, batch_size, device, precision, cast_encoder=True)

    @torch.no_grad()
    def features(self, texts: Sequence[str], what: str = "prediction") -> list[torch.Tensor]:
        """Per text, the vectors of its encoder inputs [inputs, hidden] (no gradient)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts; wrap a single text in a list")
        docs_inputs = self.inputs(texts)
        self.inputs.report(what)
        return self.input_features(docs_inputs)

    @torch.no_grad()
    def input_features(self, docs_inputs: Sequence[list[list[int]]]) -> list[torch.Tensor]:
        """Per document, the vectors of its encoder inputs (``DocumentInputs`` output)."""
        order = sorted(range(len(docs_inputs)), key=lambda d: sum(map(len, docs_inputs[d])))
        out: list = [None] * len(docs_inputs)
        pad_id = self.model.encoder.tokenizer.pad_token_id
        was_training = self.model.training
        self.model.eval()
        for b in range(0, len(order), self.batch_size):
            batch = order[b : b + self.batch_size]
            ids, mask, counts = batch_tensors([docs_inputs[d] for d in batch], pad_id, self.device)
            with autocast(self.device, self.precision):
                vectors = self.model.window_vectors(ids, mask)
            for d, rows in zip(batch, vectors.split(counts)):
                out[d] = rows
        self.model.train(was_training)
        return out

    @torch.no_grad()
    def predict_features(self, features: Sequence[torch.Tensor]) -> list[tuple[str, float]]:
        was_training = self.model.training
        self.model.eval()
        out = []
        for b in range(0, len(features), self.batch_size):
            batch = features[b : b + self.batch_size]
            with autocast(self.device, self.precision):
                logits = self.model.classify(torch.cat(list(batch)), [len(f) for f in batch])
            probs = logits.float().softmax(-1)
            out += [(self.model.labels[int(row.argmax())], float(row.max())) for row in probs]
        self.model.train(was_training)
        return out

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Texts -> (label, probability) each."""
        return self.predict_features(self.features(texts))
