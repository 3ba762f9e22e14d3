"""What a task gives the engine. A new task is one module here plus one ``conf/task/*.yaml``
whose ``_target_`` names its class; the engine never changes for it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from nerkit.data.readers import Document
from nerkit.model_card import write_model_card
from nerkit.validation import validate_splits
from nerkit.weights import load_weights


@dataclass
class Batch:
    """One (micro-)batch on its device, as the task's ``loss`` wants it."""

    inputs: dict[str, Any]
    units: float  # how many terms the loss averages over: micro-batches and processes are weighted by it
    tokens: int  # real (non-pad) tokens, for the throughput log


def read_splits(cfg: DictConfig) -> dict[str, list[Document]]:
    """The documents of every split ``cfg.data`` names, each checked to be non-empty before a model is built."""
    splits = {name: instantiate(cfg.data[name]) for name in ("train", "dev", "test") if cfg.data.get(name)}
    validate_splits(splits, cfg.data)
    return splits


class Task(ABC):
    metric: ClassVar[str]  # the primary dev metric (higher is better): best model, early stopping, sweeps

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.model: nn.Module  # set by the task: built from the config and the training data

    @abstractmethod
    def lengths(self) -> list[int]:
        """Per training example, its length in tokens (for length-grouped batches and padding counts)."""

    @abstractmethod
    def batch(self, rows: Sequence[int]) -> Batch:
        """Training examples ``rows`` -> a padded batch on the task's device."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean loss over ``batch.units``; ``model`` is ``self.model`` or its data-parallel wrapper."""

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups (a ``name`` each, for the log); no decay on biases and norms."""
        trained = [p for p in self.model.parameters() if p.requires_grad]
        return [{"name": "weights", "params": [p for p in trained if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
                {"name": "no_decay", "params": [p for p in trained if p.ndim < 2], "lr": lr, "weight_decay": 0.0}]

    @abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether the config names data for ``split`` (dev, test)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> dict:
        """Score ``model`` on ``split``; the result holds ``self.metric``."""

    @property
    def label_map(self) -> dict[str, list[str]]:
        """What labels.json holds: ``{key: labels}`` (a checkpoint is resumed only with the same)."""
        return self.model.label_map

    @classmethod
    @abstractmethod
    def model_card(cls, cfg: DictConfig, labels: Sequence[str], metrics: dict | None = None) -> str:
        """The README.md of a run of this task (``nerkit.model_card``), with ``metrics``, the dev scores, if known."""

    def save(self, run_dir: Path, metrics: dict | None = None) -> None:
        """Write the run directory (weights, config, labels, encoder files, a model card with ``metrics``)."""
        self.model.save(run_dir, self.cfg)
        [labels] = self.label_map.values()
        write_model_card(run_dir, self.model_card(self.cfg, labels, metrics))

    def load_weights(self, run_dir: Path) -> None:
        """Load the weights of a run directory (or checkpoint) of this task into ``self.model``."""
        load_weights(self.model, run_dir)

    @abstractmethod
    def load(self, run_dir: Path) -> nn.Module:
        """The model a run directory holds (the best one, for the final test score)."""

    def report(self, best: nn.Module, run_dir: Path) -> dict:
        """Reports on the best model written into the run directory after training; what goes
        into metrics.json about them. None by default."""
        return {}

    def summary(self) -> dict:
        """Facts about the run for metrics.json (sizes of data and model)."""
        return {"parameters": sum(p.numel() for p in self.model.parameters()),
                "trained_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad)}
