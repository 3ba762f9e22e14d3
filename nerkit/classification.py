"""Long-document classification (``task=classify``): one label per document.

A document longer than the encoder's window is handled by an explicit strategy
(``task.strategy``), never by silent truncation:

* ``head``: the first window only (cut at a word boundary); the rest is dropped, and counted.
* ``head_tail``: the first ``head_tokens`` and the last ``capacity - head_tokens`` tokens
  (Sun et al. 2019, "How to fine-tune BERT for text classification": 128 + 382 at 512).
* ``windows``: sliding windows of ``max_length`` overlapping by ``stride`` cover the whole
  document; their [CLS] vectors are pooled (``task.pooling``: mean, max or attention).

A run directory holds model.safetensors, config.yaml, labels.json and encoder/, like NER runs.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nerkit.data.batching import length_grouped_batches
from nerkit.data.encoding import TextEncoder
from nerkit.data.readers import Document
from nerkit.encoders import build_encoder
from nerkit.encoders.base import Encoder
from nerkit.model import ENCODER_DIR, load_weights, read_run, save_run

log = logging.getLogger(__name__)
STRATEGIES = ("head", "head_tail", "windows")
POOLINGS = ("mean", "max", "attention")


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
    def __init__(self, encoder: Encoder, labels: Sequence[str], pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"task.pooling must be one of {POOLINGS}, got {pooling!r}")
        self.encoder, self.labels, self.pooling = encoder, list(labels), pooling
        self.attention = nn.Linear(encoder.hidden_size, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, len(self.labels))

    @classmethod
    def from_config(cls, cfg: DictConfig, labels: Sequence[str], saved: Path | None = None) -> "DocClassifier":
        return cls(build_encoder(cfg.encoder, saved=saved), labels, cfg.task.pooling, cfg.task.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Inputs of several documents (``counts[d]`` consecutive rows each) -> logits [documents, labels]."""
        return self.classify(self.encoder(input_ids, attention_mask)[:, 0], counts)

    def classify(self, cls_vectors: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """[CLS] vectors of the inputs -> pooled per document -> logits [documents, labels]."""
        pooled = []
        for rows in cls_vectors.split(list(counts)):
            if self.pooling == "mean":
                pooled.append(rows.mean(0))
            elif self.pooling == "max":
                pooled.append(rows.max(0).values)
            else:
                pooled.append((self.attention(rows).softmax(0) * rows).sum(0))
        return self.classifier(self.dropout(torch.stack(pooled)))

    def save(self, directory: str | Path, cfg: DictConfig) -> None:
        save_run(directory, self, cfg, "labels", self.labels)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> tuple["DocClassifier", DictConfig]:
        directory = Path(directory)
        cfg, labels = read_run(directory, "labels")
        model = cls.from_config(cfg, labels, directory / ENCODER_DIR)
        load_weights(model, directory)
        return model.to(device).eval(), cfg


def batch_tensors(docs_inputs: Sequence[list[list[int]]], pad_id: int, device: torch.device):
    rows = [torch.tensor(ids) for inputs in docs_inputs for ids in inputs]
    input_ids = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id).to(device)
    mask = nn.utils.rnn.pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True).to(device)
    return input_ids, mask, [len(inputs) for inputs in docs_inputs]


class Classifier:
    """Texts in, (label, probability) out, for a trained ``DocClassifier``."""

    def __init__(self, model: DocClassifier, cfg: DictConfig, batch_size: int = 16, device: str | torch.device = "cpu"):
        self.model, self.batch_size, self.device = model.to(device).eval(), batch_size, torch.device(device)
        text_encoder = TextEncoder(model.encoder.tokenizer, cfg.max_length, cfg.stride)
        self.inputs = DocumentInputs(text_encoder, cfg.task.strategy, cfg.task.head_tokens)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", batch_size: int = 16) -> "Classifier":
        model, cfg = DocClassifier.load(run_dir, device)
        return cls(model, cfg, batch_size, device)

    @torch.no_grad()
    def features(self, texts: Sequence[str], what: str = "prediction") -> list[torch.Tensor]:
        """Per text, the [CLS] vectors of its encoder inputs [inputs, hidden] (no gradient)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts; wrap a single text in a list")
        docs_inputs = self.inputs(texts)
        self.inputs.report(what)
        order = sorted(range(len(docs_inputs)), key=lambda d: sum(map(len, docs_inputs[d])))
        out: list = [None] * len(docs_inputs)
        pad_id = self.model.encoder.tokenizer.pad_token_id
        was_training = self.model.training
        self.model.eval()
        for b in range(0, len(order), self.batch_size):
            batch = order[b : b + self.batch_size]
            ids, mask, counts = batch_tensors([docs_inputs[d] for d in batch], pad_id, self.device)
            for d, rows in zip(batch, self.model.encoder(ids, mask)[:, 0].split(counts)):
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
            probs = self.model.classify(torch.cat(list(batch)), [len(f) for f in batch]).float().softmax(-1)
            out += [(self.model.labels[int(row.argmax())], float(row.max())) for row in probs]
        self.model.train(was_training)
        return out

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Texts -> (label, probability) each."""
        return self.predict_features(self.features(texts))


def accuracy(predicted: Sequence[tuple[str, float]], documents: Sequence[Document], labels: Sequence[str]) -> dict:
    per_label = {}
    for label in labels:
        tp = sum(p == label == d.label for (p, _), d in zip(predicted, documents))
        n_pred = sum(p == label for p, _ in predicted)
        n_gold = sum(d.label == label for d in documents)
        prec, rec = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
        per_label[label] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
    correct = sum(p == d.label for (p, _), d in zip(predicted, documents))
    return {"accuracy": correct / len(documents), "macro_f1": sum(v["f1"] for v in per_label.values()) / len(labels),
            "per_label": per_label, "documents": len(documents)}


def train_classifier(cfg: DictConfig, output_dir: Path) -> float:
    """Train and save a document classifier as ``cfg`` says; returns the best dev accuracy."""
    from nerkit.train import optimizer_step, pick_device, seed_everything  # train.py dispatches here

    seed_everything(cfg.seed)
    device = pick_device(cfg.trainer.device)
    splits = {name: instantiate(cfg.data[name]) for name in ("train", "dev", "test") if cfg.data.get(name)}
    train_docs = splits.pop("train")
    for split, docs in [("train", train_docs), *splits.items()]:
        missing = [d.id for d in docs if d.label is None]
        if missing:
            raise ValueError(f"{split}: {len(missing)} documents have no label (e.g. {missing[0]!r}); task=classify needs one per document")
    labels = sorted({d.label for d in train_docs})
    for split, docs in splits.items():
        unseen = {d.label for d in docs} - set(labels)
        if unseen:
            raise ValueError(f"{split} has labels never seen in train: {sorted(unseen)}")
    label_ids = {label: i for i, label in enumerate(labels)}

    model = DocClassifier.from_config(cfg, labels).to(device)
    classifier = Classifier(model, cfg, cfg.trainer.eval_batch_size, device)
    frozen = cfg.task.get("freeze_encoder", False)
    if frozen:  # the encoder's [CLS] vectors never change: compute them once
        model.encoder.requires_grad_(False)
        features = classifier.features([d.text for d in train_docs], "train")
        dev_features = classifier.features([d.text for d in splits["dev"]], "dev") if "dev" in splits else None
        counts = lengths = [len(f) for f in features]
    else:
        inputs = classifier.inputs([d.text for d in train_docs])
        classifier.inputs.report("train")
        counts = [len(doc_inputs) for doc_inputs in inputs]
        lengths = [sum(map(len, doc_inputs)) for doc_inputs in inputs]
    log.info("%d training documents -> %d encoder inputs (strategy %s%s); labels %s",
             len(train_docs), sum(counts), cfg.task.strategy, ", frozen encoder" if frozen else "", labels)

    steps_per_epoch = math.ceil(len(train_docs) / cfg.trainer.batch_size)
    total_steps = cfg.trainer.max_steps or steps_per_epoch * cfg.trainer.epochs
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trained if p.ndim >= 2], "weight_decay": cfg.trainer.weight_decay},
                                   {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.trainer.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.trainer.warmup_ratio * total_steps), total_steps)
    pad_id = model.encoder.tokenizer.pad_token_id

    best, history, step = -1.0, [], 0
    started = time.perf_counter()
    progress = tqdm(total=total_steps, desc="train", unit="step", dynamic_ncols=True)
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        model.train()
        for batch in length_grouped_batches(lengths, cfg.trainer.batch_size, cfg.seed + epoch):
            if step == total_steps:
                break
            if frozen:
                logits = model.classify(torch.cat([features[d] for d in batch]), [counts[d] for d in batch])
            else:
                logits = model(*batch_tensors([inputs[d] for d in batch], pad_id, device))
            targets = torch.tensor([label_ids[train_docs[d].label] for d in batch], device=device)
            loss = nn.functional.cross_entropy(logits.float(), targets)
            optimizer_step(loss, loss, step, model, optimizer, scheduler, cfg.trainer.max_grad_norm)
            step += 1
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        if "dev" in splits:
            dev = classifier.predict_features(dev_features) if frozen else classifier.predict([d.text for d in splits["dev"]])
            metrics = accuracy(dev, splits["dev"], labels)
        else:
            metrics = {"accuracy": float("nan")}
        history.append({"epoch": epoch, "step": step, "dev": metrics})
        log.info("epoch %d: dev accuracy %.4f", epoch, metrics["accuracy"])
        if "dev" not in splits or metrics["accuracy"] > best:
            best = metrics["accuracy"]
            model.save(output_dir, cfg)
    progress.close()

    results = {"best_dev_accuracy": best, "history": history, "train_seconds": time.perf_counter() - started,
               "train_inputs": sum(counts), "parameters": sum(p.numel() for p in model.parameters()),
               "trained_parameters": sum(p.numel() for p in trained)}
    if "test" in splits:
        best_model = Classifier.from_run(output_dir, str(device), cfg.trainer.eval_batch_size)
        results["test"] = accuracy(best_model.predict([d.text for d in splits["test"]]), splits["test"], labels)
        log.info("test accuracy %.4f", results["test"]["accuracy"])
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=1))
    return best
