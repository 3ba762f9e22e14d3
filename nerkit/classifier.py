"""Document classifier (``task=classify``): one label per document, from encoder window vectors.

A document longer than the encoder's window is handled by an explicit strategy
(``task.strategy``), never by silent truncation:

* ``head``: the first window only (cut at a word boundary); the rest is dropped, and counted.
* ``head_tail``: the first ``head_tokens`` and the last ``capacity - head_tokens`` tokens
  (Sun et al. 2019, "How to fine-tune BERT for text classification": 128 + 382 at 512).
* ``windows``: sliding windows of ``max_length`` overlapping by ``stride`` cover the whole
  document; their vectors are pooled (``task.pooling``: mean, max or attention).

A window's vector is taken from the encoder output as ``task.sentence_vector`` says: ``cls``
(the first position, [CLS] in BERT), ``mean`` (mean over the window's real tokens, as
sentence-transformers models were trained) or ``first_token`` (the first content token).

A run directory holds model.safetensors, config.yaml, labels.json and encoder/, like NER runs;
``Classifier.from_run(dir).predict(texts)`` loads and uses it. Training is ``nerkit.tasks.classify``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nerkit.data.batching import pad
from nerkit.data.encoding import TextEncoder
from nerkit.encoders import build_encoder
from nerkit.encoders.base import Encoder
from nerkit.precision import autocast, check_precision, dtype_of
from nerkit.runs import ENCODER_DIR, load_weights, read_run, save_run

log = logging.getLogger(__name__)
STRATEGIES = ("head", "head_tail", "windows")
POOLINGS = ("mean", "max", "attention")
SENTENCE_VECTORS = ("cls", "mean", "first_token")


class DocumentInputs:
    """Texts -> per document, the list of encoder inputs (token ids with special tokens)."""

    def __init__(self, text_encoder: TextEncoder, strategy: str, head_tokens: int = 128):
        if strategy not in STRATEGIES:
            raise ValueError(f"task.strategy must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "head_tail" and not 0 <= head_tokens <= text_encoder.capacity:
            raise ValueError(f"task.head_tokens={head_tokens} must be in [0, {text_encoder.capacity}] (the window's content tokens)")
        self.text_encoder, self.strategy, self.head_tokens = text_encoder, strategy, head_tokens
        self.truncated_documents = self.dropped_tokens = 0

    def __call__(self, texts: Sequence[str]) -> list[list[list[int]]]:
        enc, out = self.text_encoder, []
        for encoded in enc.encode(texts):
            ids, capacity = encoded.token_ids, enc.capacity
            empty = enc.prefix_ids + enc.suffix_ids  # a text without tokens still gets its [CLS]
            if self.strategy == "windows":
                out.append([enc.window_input(encoded, win)[0] for win in encoded.windows] or [empty])
                continue
            if self.strategy == "head":
                kept = enc.window_input(encoded, encoded.windows[0])[0] if encoded.windows else empty
                content = len(kept) - len(empty)
            else:
                tail = capacity - self.head_tokens
                content = ids if len(ids) <= capacity else ids[: self.head_tokens] + (ids[-tail:] if tail else [])
                kept, content = enc.prefix_ids + content + enc.suffix_ids, len(content)
            if content < len(ids):
                self.truncated_documents += 1
                self.dropped_tokens += len(ids) - content
            out.append([kept])
        return out

    def report(self, what: str) -> None:
        if self.truncated_documents:
            log.warning("%s: strategy %s truncated %d documents (%d tokens dropped)", what, self.strategy,
                        self.truncated_documents, self.dropped_tokens)
        self.truncated_documents = self.dropped_tokens = 0


class DocClassifier(nn.Module):
    def __init__(self, encoder: Encoder, labels: Sequence[str], pooling: str = "mean", dropout: float = 0.1,
                 sentence_vector: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
        if sentence_vector not in SENTENCE_VECTORS:
            raise ValueError(f"task.sentence_vector must be one of {SENTENCE_VECTORS}, got {sentence_vector!r}")
        self.encoder, self.labels, self.pooling, self.sentence_vector = encoder, list(labels), pooling, sentence_vector
        # Where a window's content starts: after the tokenizer's prefix ([CLS] for BERT).
        self.first_content = len(TextEncoder(encoder.tokenizer, 16, 0).prefix_ids)
        self.attention = nn.Linear(encoder.hidden_size, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, len(self.labels))

    @classmethod
    def from_config(cls, cfg: DictConfig, labels: Sequence[str], saved: Path | None = None) -> "DocClassifier":
        # Run directories from before task.sentence_vector existed used [CLS].
        return cls(build_encoder(cfg.encoder, saved=saved), labels, cfg.task.pooling, cfg.task.dropout,
                   cfg.task.get("sentence_vector", "cls"))

    @property
    def label_map(self) -> dict[str, list[str]]:
        """What labels.json holds (a checkpoint is resumed only with the same)."""
        return {"labels": self.labels}

    def window_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Padded encoder inputs [rows, tokens] -> one vector per row, as ``sentence_vector`` says."""
        hidden = self.encoder(input_ids, attention_mask)
        if self.sentence_vector == "cls":
            return hidden[:, 0]
        if self.sentence_vector == "first_token":
            return hidden[:, self.first_content]
        mask = attention_mask.unsqueeze(-1).float()
        return (hidden.float() * mask).sum(1) / mask.sum(1)  # summed in fp32 also when the encoder runs in bf16

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, counts: Sequence[int],
                vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs of several documents (``counts[d]`` consecutive rows each) -> logits [documents, labels].
        ``vectors``: the window vectors, already computed (frozen encoder), instead of the inputs."""
        if vectors is None:
            vectors = self.window_vectors(input_ids, attention_mask)
        return self.classify(vectors, counts)

    def classify(self, vectors: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Window vectors -> pooled per document -> logits [documents, labels]."""
        pooled = []
        for rows in vectors.split(list(counts)):
            if self.pooling == "mean":
                pooled.append(rows.mean(0))
            elif self.pooling == "max":
                pooled.append(rows.max(0).values)
            else:
                pooled.append((self.attention(rows).softmax(0) * rows).sum(0))
        return self.classifier(self.dropout(torch.stack(pooled)))

    def save(self, directory: str | Path, cfg: DictConfig, metrics: dict | None = None) -> None:
        save_run(directory, self, cfg, "labels", self.labels, metrics)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu",
             trust_remote_code: bool = False) -> tuple["DocClassifier", DictConfig]:
        """Build the classifier a run directory describes (checked first: ``runs.read_run``) and load its weights."""
        directory = Path(directory)
        cfg, labels = read_run(directory, "labels", trust_remote_code)
        model = cls.from_config(cfg, labels, directory / ENCODER_DIR)
        load_weights(model, directory)
        return model.to(device).eval(), cfg


def batch_tensors(docs_inputs: Sequence[list[list[int]]], pad_id: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Documents' encoder inputs -> padded ids and attention mask of all their rows, and rows per document."""
    input_ids, mask = pad([ids for inputs in docs_inputs for ids in inputs], pad_id)
    return input_ids.to(device), mask.long().to(device), [len(inputs) for inputs in docs_inputs]


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
