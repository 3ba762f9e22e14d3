"""Long-document classification (``task=classify``): one label per document (``Document.label``),
scored by accuracy (and macro F1). The model is ``nerkit.classifier_model``, its predictor ``nerkit.classifier``."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nerkit.classifier import Classifier
from nerkit.classifier_model import DocClassifier
from nerkit.data.document_inputs import batch_tensors
from nerkit.data.readers import Document
from nerkit.evaluation import bootstrap_mean_ci
from nerkit.messages import shorten
from nerkit.model_card import TaskCard, model_card
from nerkit.tasks.base import Batch, Task, read_splits

log = logging.getLogger(__name__)


def accuracy(predicted: Sequence[tuple[str, float]], documents: Sequence[Document], labels: Sequence[str]) -> dict:
    per_label = {}
    for label in labels:
        tp = sum(p == label == d.label for (p, _), d in zip(predicted, documents))
        n_pred = sum(p == label for p, _ in predicted)
        n_gold = sum(d.label == label for d in documents)
        prec, rec = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
        per_label[label] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
    correct = [float(p == d.label) for (p, _), d in zip(predicted, documents)]
    return {"accuracy": sum(correct) / len(documents), "ci95": bootstrap_mean_ci(correct),
            "macro_f1": sum(v["f1"] for v in per_label.values()) / len(labels),
            "per_label": per_label, "documents": len(documents)}


class ClassifyTask(Task):
    metric = "accuracy"

    def __init__(self, cfg: DictConfig, device: torch.device):
        super().__init__(cfg, device)
        self.splits = read_splits(cfg)
        self.train_docs = self.splits.pop("train")
        for split, docs in [("train", self.train_docs), *self.splits.items()]:
            missing = [d.id for d in docs if d.label is None]
            if missing:
                raise ValueError(f"{split}: {len(missing)} documents have no label (e.g. {missing[0]!r}); "
                                 "task=classify needs one per document")
        self.labels = sorted({d.label for d in self.train_docs})
        for split, docs in self.splits.items():
            unseen = {d.label for d in docs} - set(self.labels)
            if unseen:
                raise ValueError(f"{split} has labels never seen in train: {shorten(sorted(unseen))}")
        self.label_ids = {label: i for i, label in enumerate(self.labels)}

        self.model = DocClassifier.from_config(cfg, self.labels).to(device)
        self.classifier = Classifier(self.model, cfg, cfg.trainer.eval_batch_size, device)
        self.frozen = cfg.task.get("freeze_encoder", False)
        self.pad_id = self.model.encoder.tokenizer.pad_token_id
        self.inputs = self.classifier.inputs([d.text for d in self.train_docs])
        self.classifier.inputs.report("train")
        self.counts = [len(doc_inputs) for doc_inputs in self.inputs]
        if self.frozen:  # the encoder's window vectors never change: compute them once
            self.model.encoder.requires_grad_(False)
            self.features = self.classifier.input_features(self.inputs)
            self.dev_features = (self.classifier.features([d.text for d in self.splits["dev"]], "dev")
                                 if "dev" in self.splits else None)
        log.info("%d training documents -> %d encoder inputs (strategy %s%s); labels %s", len(self.train_docs),
                 sum(self.counts), cfg.task.strategy, ", frozen encoder" if self.frozen else "", shorten(self.labels))

    def lengths(self) -> list[int]:
        if self.frozen:
            return self.counts  # a batch's cost is its number of window vectors
        return [sum(map(len, doc_inputs)) for doc_inputs in self.inputs]

    def batch(self, rows: Sequence[int]) -> Batch:
        targets = torch.tensor([self.label_ids[self.train_docs[d].label] for d in rows], device=self.device)
        tokens = sum(len(ids) for d in rows for ids in self.inputs[d])
        if self.frozen:
            vectors = torch.cat([self.features[d] for d in rows])
            inputs = {"input_ids": None, "attention_mask": None, "counts": [self.counts[d] for d in rows], "vectors": vectors}
        else:
            input_ids, mask, counts = batch_tensors([self.inputs[d] for d in rows], self.pad_id, self.device)
            inputs = {"input_ids": input_ids, "attention_mask": mask, "counts": counts, "vectors": None}
        return Batch({**inputs, "targets": targets}, units=float(len(rows)), tokens=tokens)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch.inputs
        logits = model(x["input_ids"], x["attention_mask"], x["counts"], x["vectors"])
        return nn.functional.cross_entropy(logits.float(), x["targets"])

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def evaluate(self, model: nn.Module, split: str) -> dict:
        documents = self.splits[split]
        if model is self.model and split == "dev" and self.frozen:
            predicted = self.classifier.predict_features(self.dev_features)
        else:
            classifier = self.classifier if model is self.model else Classifier(
                model, self.cfg, self.cfg.trainer.eval_batch_size, self.device)
            predicted = classifier.predict([d.text for d in documents])
        return accuracy(predicted, documents, self.labels)

    @classmethod
    def model_card(cls, cfg: DictConfig, labels: Sequence[str], metrics: dict | None = None) -> str:
        dev = (metrics or {}).get("dev", metrics or {})
        if not metrics:
            scores = ["Not evaluated at save time."]
        elif math.isnan(dev.get("accuracy", math.nan)):
            scores = ["No dev set: no scores."]
        else:
            scores = [f"Dev accuracy {dev['accuracy']:.4f}, macro F1 {dev.get('macro_f1', math.nan):.4f} "
                      f"(epoch {metrics.get('epoch', '?')})."]
        use = ["from nerkit.classifier import Classifier", "",
               "Classifier.from_run(\"RUN_DIR\").predict([\"Some text\"])"]
        return model_card(cfg, labels, TaskCard(
            "document classification", "text-classification",
            f"document classifier ({cfg.task.strategy}, {cfg.task.pooling} pooling)", "Labels", scores, use))

    def load(self, run_dir: Path) -> nn.Module:
        # The run's own encoder: trusted exactly as far as this training config trusted it.
        return DocClassifier.load(run_dir, self.device, self.cfg.encoder.get("trust_remote_code", False))[0]

    def summary(self) -> dict:
        return {**super().summary(), "train_inputs": sum(self.counts)}
