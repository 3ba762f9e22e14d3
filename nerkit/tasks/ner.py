"""Named-entity recognition (``task=ner``): encoder + head over sliding windows, scored at entity
level on whole documents (``nerkit.evaluation``). The run directory loads with ``Predictor.from_run``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nerkit.data import batching
from nerkit.data.readers import Document
from nerkit.data.words import words_of
from nerkit.error_report import write_error_report
from nerkit.evaluation import evaluate
from nerkit.model import NerModel
from nerkit.predict import Predictor
from nerkit.tasks.base import Batch, Task, read_splits

log = logging.getLogger(__name__)


def entity_types_of(train: list[Document], others: dict[str, list[Document]]) -> list[str]:
    types = sorted({span.label for doc in train for span in doc.spans})
    if not types:
        raise ValueError("the training data has no entities: nothing to learn")
    for split, docs in others.items():
        unseen = {span.label for doc in docs for span in doc.spans} - set(types)
        if unseen:
            log.warning("%s has entity types never seen in train (they count as missed): %s", split, sorted(unseen))
    return types


class NerTask(Task):
    metric = "f1"

    def __init__(self, cfg: DictConfig, device: torch.device):
        super().__init__(cfg, device)
        self.splits = read_splits(cfg)
        train_docs = self.splits.pop("train")
        entity_types = entity_types_of(train_docs, self.splits)
        self.model = NerModel.from_config(cfg, entity_types, train_texts=[d.text for d in train_docs]).to(device)
        # Evaluated at the training precision, so dev scores say what the trained weights do at it.
        # Raw training texts (character-span data) are cut into words by the splitter predictions use.
        self.predictor = Predictor(self.model, cfg.max_length, cfg.stride, cfg.trainer.eval_batch_size, device,
                                   cfg.get("truncate", False), precision=cfg.trainer.get("precision", "fp32"),
                                   words=words_of(cfg))
        self.windows = batching.window_dataset(train_docs, self.predictor.text_encoder, entity_types,
                                               self.model.head.supports_nested).to_list()
        self.pad_id = self.model.encoder.tokenizer.pad_token_id
        log.info("%d training documents -> %d windows; entity types: %s", len(train_docs), len(self.windows), entity_types)

    def lengths(self) -> list[int]:
        return [len(w["input_ids"]) for w in self.windows]

    def batch(self, rows: Sequence[int]) -> Batch:
        padded = batching.collate([self.windows[j] for j in rows], self.pad_id)
        tensors = {k: padded[k].to(self.device) for k in ("input_ids", "attention_mask", "word_index", "word_mask")}
        return Batch({**tensors, "spans": padded["spans"]}, units=float(self.model.head.loss_size(tensors["word_mask"])),
                     tokens=int(padded["attention_mask"].sum()))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch.inputs
        scores = model(x["input_ids"], x["attention_mask"], x["word_index"], x["word_mask"])
        return self.model.head.loss(scores.float(), x["word_mask"], x["spans"])

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return self.model.param_groups(lr, weight_decay)  # the head's own groups (CRF, GlobalPointer: own lr)

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def evaluate(self, model: nn.Module, split: str) -> dict:
        predictor = self.predictor if model is self.model else Predictor(
            model, self.cfg.max_length, self.cfg.stride, self.cfg.trainer.eval_batch_size, self.device,
            self.cfg.get("truncate", False), precision=self.predictor.precision, words=self.predictor.text_encoder.words)
        # Scored in the data's own tag scheme when the reader names one (CoNLL files: IOB2 / BIOES).
        return evaluate(predictor, self.splits[split], scheme=self.cfg.data[split].get("scheme"))

    def report(self, best: nn.Module, run_dir: Path) -> dict:
        """The dev set's error analysis (errors.html / errors.json), when ``report_errors`` is on."""
        if not (self.cfg.get("report_errors", False) and self.has_split("dev")):
            return {}
        predictor = Predictor(best, self.cfg.max_length, self.cfg.stride, self.cfg.trainer.eval_batch_size, self.device,
                              self.cfg.get("truncate", False), precision=self.predictor.precision,
                              words=self.predictor.text_encoder.words)
        return {"error_report": str(write_error_report(predictor, self.splits["dev"], run_dir, "dev"))}

    def load(self, run_dir: Path) -> nn.Module:
        # The run's own encoder: trusted exactly as far as this training config trusted it.
        return NerModel.load(run_dir, self.device, self.cfg.encoder.get("trust_remote_code", False))[0]

    def summary(self) -> dict:
        return {**super().summary(), "train_windows": len(self.windows)}
