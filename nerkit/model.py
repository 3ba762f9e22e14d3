"""Encoder + head, saved to and loaded from a run directory (``nerkit.runs``, ``nerkit.weights``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from nerkit.encoders import build_encoder
from nerkit.encoders.base import Encoder
from nerkit.heads.base import Head
from nerkit.precision import autocast
from nerkit.runs import ENCODER_DIR, read_run
from nerkit.weights import load_weights, save_run


class NerModel(nn.Module):
    def __init__(self, encoder: Encoder, head: Head):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @classmethod
    def from_config(cls, cfg: DictConfig, entity_types: Sequence[str], train_texts: Sequence[str] | None = None,
                    saved: Path | None = None) -> "NerModel":
        encoder = build_encoder(cfg.encoder, train_texts, saved)
        head = instantiate(cfg.head, hidden_size=encoder.hidden_size, entity_types=list(entity_types))
        return cls(encoder, head)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor,
                word_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)
        words = hidden.gather(1, word_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return self.head(words, word_mask)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Encoder parameters at ``lr`` (no decay on biases and norms); the head chooses its own."""
        decay, no_decay = [], []
        for name, param in self.encoder.named_parameters():
            (no_decay if param.ndim < 2 else decay).append(param)
        return [
            {"name": "encoder", "params": decay, "lr": lr, "weight_decay": weight_decay},
            {"name": "encoder_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
            *self.head.param_groups(lr, weight_decay),
        ]

    @property
    def label_map(self) -> dict[str, list[str]]:
        """What labels.json holds (a checkpoint is resumed only with the same)."""
        return {"entity_types": self.head.entity_types}

    def save(self, directory: str | Path, cfg: DictConfig) -> None:
        """Write a run directory (``weights.save_run``); ``task.save`` adds the model card."""
        save_run(directory, self, cfg, "entity_types", self.head.entity_types)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu",
             trust_remote_code: bool = False) -> tuple["NerModel", DictConfig]:
        """Build the model a run directory describes (checked first: ``runs.read_run``) and load its weights."""
        directory = Path(directory)
        cfg, entity_types = read_run(directory, "entity_types", trust_remote_code)
        model = cls.from_config(cfg, entity_types, saved=directory / ENCODER_DIR)
        load_weights(model, directory)
        return model.to(device).eval(), cfg


def torch_scores(model: nn.Module, device: torch.device, precision: str
                 ) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``nerkit.inference``'s scores function for a torch model: numpy batches in, float32 numpy
    scores out, the model run in eval mode at ``precision`` (autocast) without autograd."""

    @torch.inference_mode()
    def scores(input_ids: np.ndarray, attention_mask: np.ndarray, word_index: np.ndarray,
               word_mask: np.ndarray) -> np.ndarray:
        model.eval()  # dropout off, also when evaluating in the middle of training
        tensors = [torch.from_numpy(a).to(device) for a in (input_ids, attention_mask, word_index, word_mask)]
        with autocast(device, precision):
            return model(*tensors).float().cpu().numpy()

    return scores


def default_batch_tokens(device: torch.device, batch_size: int, max_length: int) -> int:
    """Padded tokens per prediction batch. On CPU, batches of ~2k tokens, whose activations stay
    in cache, run faster than bigger ones."""
    return 2048 if device.type == "cpu" else batch_size * max_length


def default_batch_cost(device: torch.device, max_batch_tokens: int) -> int:
    """A prediction batch's fixed cost in padded tokens, weighed against padding where windows are
    cut into batches (``budget_batches``). On CPU 128: of 32, 128 and 512, the fastest over the
    server's rounds of CoNLL sentences (a fifth faster than filling batches) and over whole files.
    Elsewhere the budget itself, which keeps batches full (a GPU's kernel launches cost more)."""
    return 128 if device.type == "cpu" else max_batch_tokens
