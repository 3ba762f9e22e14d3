"""Document classifier model (``task=classify``): one label per document, from encoder window vectors.

A document's encoder inputs (``nerkit.data.document_inputs``: one or several windows) each give
a vector, taken from the encoder output as ``task.sentence_vector`` says: ``cls`` (the first
position, [CLS] in BERT), ``mean`` (mean over the window's real tokens, as sentence-transformers
models were trained) or ``first_token`` (the first content token). A document's window vectors are
pooled (``task.pooling``: mean, max or attention) and classified.

Saved as a run directory like NER models (``nerkit.runs``); predicting is ``nerkit.classifier``,
training ``nerkit.tasks.classify``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nerkit.data.encoding import TextEncoder
from nerkit.encoders import build_encoder
from nerkit.encoders.base import Encoder
from nerkit.runs import ENCODER_DIR, read_run
from nerkit.weights import load_weights, save_run

POOLINGS = ("mean", "max", "attention")
SENTENCE_VECTORS = ("cls", "mean", "first_token")


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

    def save(self, directory: str | Path, cfg: DictConfig) -> None:
        """Write a run directory (``weights.save_run``); ``task.save`` adds the model card."""
        save_run(directory, self, cfg, "labels", self.labels)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu",
             trust_remote_code: bool = False) -> tuple["DocClassifier", DictConfig]:
        """Build the classifier a run directory describes (checked first: ``runs.read_run``) and load its weights."""
        directory = Path(directory)
        cfg, labels = read_run(directory, "labels", trust_remote_code)
        model = cls.from_config(cfg, labels, directory / ENCODER_DIR)
        load_weights(model, directory)
        return model.to(device).eval(), cfg
