"""Named-entity recognition (``task=ner``): encoder + head over sliding windows, scored at entity
level on whole documents (``nerkit.evaluation``, through ``nerkit.inference``, the path every
predictor takes). The run directory loads with ``Predictor.from_run``."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from nerkit.data import batching
from nerkit.data.encoding import TextEncoder
from nerkit.data.readers import Document
from nerkit.data.words import words_of
from nerkit.error_report import write_error_report
from nerkit.evaluation import evaluate
from nerkit.inference import Inference
from nerkit.messages import shorten
from nerkit.model import NerModel, default_batch_cost, default_batch_tokens, torch_scores
from nerkit.model_card import TaskCard, escape, model_card, short_name
from nerkit.precision import check_precision
from nerkit.tasks.base import Batch, Task, read_splits
from nerkit.validation import check_entity_types, eval_batch_tokens

log = logging.getLogger(__name__)


def entity_types_of(train: list[Document], others: dict[str, list[Document]]) -> list[str]:
    types = sorted({span.label for doc in train for span in doc.spans})
    if not types:
        raise ValueError("the training data has no entities: nothing to learn")
    for split, docs in others.items():
        unseen = {span.label for doc in docs for span in doc.spans} - set(types)
        if unseen:
            log.warning("%s has entity types never seen in train (they count as missed): %s", split,
                        shorten(sorted(unseen)))
    return types


class NerTask(Task):
    metric = "f1"

    def __init__(self, cfg: DictConfig, device: torch.device):
        super().__init__(cfg, device)
        self.splits = read_splits(cfg)
        train_docs = self.splits.pop("train")
        entity_types = entity_types_of(train_docs, self.splits)
        check_entity_types(cfg, entity_types)  # before the head is built for them
        self.eval_batch_tokens = eval_batch_tokens(cfg, len(entity_types))
        self.model = NerModel.from_config(cfg, entity_types, train_texts=[d.text for d in train_docs]).to(device)
        # Raw training texts (character-span data) are cut into words by the splitter predictions use.
        self.text_encoder = TextEncoder(self.model.encoder.tokenizer, cfg.max_length, cfg.stride, cfg.get("truncate", False),
                                        words_of(cfg))
        # Evaluated at the training precision, so dev scores say what the trained weights do at it.
        self.precision = check_precision(cfg.trainer.get("precision", "fp32"), device)
        self.windows = batching.window_dataset(train_docs, self.text_encoder, entity_types,
                                               self.model.head.supports_nested).to_list()
        self.pad_id = self.model.encoder.tokenizer.pad_token_id
        log.info("%d training documents -> %d windows; entity types: %s", len(train_docs), len(self.windows),
                 shorten(entity_types))

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

    def inference(self, model: NerModel) -> Inference:
        """``model`` predicting through the one inference path, as users' predictors do."""
        batch_size, device = self.cfg.trainer.eval_batch_size, torch.device(self.device)
        # the head's scores stay within limits.head_memory_gb
        tokens = min(default_batch_tokens(device, batch_size, self.cfg.max_length), self.eval_batch_tokens)
        return Inference(self.text_encoder, torch_scores(model, self.device, self.precision), model.head.decoder,
                         batch_size, tokens, default_batch_cost(device, tokens))

    def evaluate(self, model: nn.Module, split: str) -> dict:
        # Scored in the data's own tag scheme when the reader names one (CoNLL files: IOB2 / BIOES).
        return evaluate(self.inference(model), self.splits[split], scheme=self.cfg.data[split].get("scheme"))

    def report(self, best: nn.Module, run_dir: Path) -> dict:
        """The dev set's error analysis (errors.html / errors.json), when ``report_errors`` is on."""
        if not (self.cfg.get("report_errors", False) and self.has_split("dev")):
            return {}
        return {"error_report": str(write_error_report(self.inference(best), self.splits["dev"], run_dir, "dev"))}

    @classmethod
    def model_card(cls, cfg: DictConfig, labels: Sequence[str], metrics: dict | None = None) -> str:
        head = short_name(cfg.head._target_)
        use = ["from nerkit.predict import Predictor", "", "predictor = Predictor.from_run(\"RUN_DIR\")",
               "predictor.predict([\"John Smith lives in Berlin.\"])  # entities with character offsets"]
        notes = ["Files of documents: `python -m nerkit.predict_cli run_dir=RUN_DIR input=in.txt output=out.jsonl`."]
        if head == "SoftmaxHead":  # the one head transformers has a class for
            notes.append("\n".join([
                "In transformers, after `python -m nerkit.export run_dir=RUN_DIR format=hf output=RUN_DIR/hf`:", "",
                "```python", "from transformers import pipeline", "",
                "ner = pipeline(\"token-classification\", model=\"RUN_DIR/hf\", aggregation_strategy=\"first\")",
                "ner(\"John Smith lives in Berlin.\")", "```"]))
        return model_card(cfg, labels, TaskCard(
            "NER", "token-classification, ner", head + (f", tags {cfg.head.scheme}" if "scheme" in cfg.head else ""),
            "Entity types", _card_scores(metrics), use, notes, cfg.head.get("lr")))

    def load(self, run_dir: Path) -> nn.Module:
        # The run's own encoder: trusted exactly as far as this training config trusted it.
        return NerModel.load(run_dir, self.device, self.cfg.encoder.get("trust_remote_code", False))[0]

    def summary(self) -> dict:
        return {**super().summary(), "train_windows": len(self.windows)}


def _card_scores(metrics: dict | None) -> list[str]:
    """Markdown lines for the dev scores (seqeval) of the saved weights."""
    if not metrics:
        return ["Not evaluated at save time."]
    dev = metrics.get("dev", metrics)
    if math.isnan(dev.get("f1", math.nan)):
        return ["No dev set: no scores."]
    lines = [f"Dev (seqeval strict, entity level) after epoch {metrics.get('epoch', '?')}, step "
             f"{metrics.get('step', '?')}: precision {dev['precision']:.4f}, recall {dev['recall']:.4f}, "
             f"**F1 {dev['f1']:.4f}**.", ""]
    if dev.get("per_type"):
        lines += ["| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {escape(t)} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1-score']:.4f} "
                  f"| {int(r['support'])} |" for t, r in sorted(dev["per_type"].items())]
    return lines
