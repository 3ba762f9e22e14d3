"""Encoder + head, and the run directory that holds a trained model.

A run directory is self-contained and loads without pickle: ``encoder/`` (tokenizer and
encoder; a transformer encoder is a HuggingFace model folder with its fine-tuned weights, so
``AutoModel.from_pretrained(RUN/encoder)`` loads it), ``model.safetensors`` (every other weight:
the head, and a BiLSTM encoder's), ``config.yaml`` (the resolved Hydra config), ``labels.json``
(entity types) and ``README.md`` (a model card).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_model, save_file
from torch import nn

from nerkit.encoders import build_encoder
from nerkit.encoders.base import Encoder
from nerkit.heads.base import Head
from nerkit.model_card import write_model_card

WEIGHTS, CONFIG, LABELS, ENCODER_DIR = "model.safetensors", "config.yaml", "labels.json", "encoder"


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
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            *self.head.param_groups(lr, weight_decay),
        ]

    def save(self, directory: str | Path, cfg: DictConfig, metrics: dict | None = None) -> None:
        save_run(directory, self, cfg, "entity_types", self.head.entity_types, metrics)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> tuple["NerModel", DictConfig]:
        directory = Path(directory)
        cfg, entity_types = read_run(directory, "entity_types")
        model = cls.from_config(cfg, entity_types, saved=directory / ENCODER_DIR)
        try:
            load_weights(model, directory)
        except RuntimeError as err:
            raise ValueError(
                f"{directory / WEIGHTS} does not match {directory / LABELS} ({len(entity_types)} entity types) "
                f"and {directory / CONFIG}: {err}"
            ) from None
        return model.to(device).eval(), cfg


def _run_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights model.safetensors holds: all but those the encoder saves in encoder/."""
    own = model.encoder.saves_weights
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (own and k.startswith("encoder."))}


def save_run(directory: str | Path, model: nn.Module, cfg: DictConfig, key: str, labels: Sequence[str],
             metrics: dict | None = None) -> None:
    """Write a run directory: weights, resolved config, label map (under ``key``), encoder files
    and a model card (with ``metrics``, the dev scores, when given)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Both written aside and renamed, so a crash mid-write keeps the previous model.
    encoder_tmp, old = directory / f".{ENCODER_DIR}.tmp", directory / f".{ENCODER_DIR}.old"
    for leftover in (encoder_tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.encoder.save_files(encoder_tmp)
    tmp = directory / f".{WEIGHTS}.tmp"
    # The label map also goes into the weights file: a labels.json edited or swapped later is caught.
    save_file(_run_weights(model), str(tmp), metadata={key: json.dumps(list(labels))})
    if (directory / ENCODER_DIR).exists():
        os.replace(directory / ENCODER_DIR, old)
    os.replace(encoder_tmp, directory / ENCODER_DIR)
    os.replace(tmp, directory / WEIGHTS)
    shutil.rmtree(old, ignore_errors=True)
    OmegaConf.save(cfg, directory / CONFIG, resolve=True)
    (directory / LABELS).write_text(json.dumps({key: list(labels)}, ensure_ascii=False, indent=1), encoding="utf-8")
    write_model_card(directory, cfg, list(labels), metrics)


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load a run directory's weights into ``model`` (built for it): model.safetensors, and the
    encoder's own files when it saves its weights there. Raises RuntimeError on any mismatch."""
    missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    expected_missing = set(model.state_dict()) - set(_run_weights(model))
    if unexpected or set(missing) != expected_missing:
        raise RuntimeError(f"unexpected weights {sorted(unexpected)[:5]}, missing weights "
                           f"{sorted(set(missing) ^ expected_missing)[:5]}")
    if model.encoder.saves_weights:
        model.encoder.load_saved_weights(directory / ENCODER_DIR)


def read_run(directory: Path, key: str) -> tuple[DictConfig, list[str]]:
    """Check a run directory is complete and its label map matches its weights; return config and labels."""
    for name in (WEIGHTS, CONFIG, LABELS, ENCODER_DIR):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} is not a complete nerkit run directory: {name} is missing")
    try:
        labels = json.loads((directory / LABELS).read_text(encoding="utf-8"))[key]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{directory / LABELS}: not a nerkit label map ({err})") from None
    with safe_open(directory / WEIGHTS, "pt") as weights:
        trained = (weights.metadata() or {}).get(key)
    if trained is not None and json.loads(trained) != labels:
        raise ValueError(f"{directory / LABELS} lists {key.replace('_', ' ')} {labels}, but {directory / WEIGHTS} "
                         f"was trained with {json.loads(trained)}; restore the original labels.json")
    return OmegaConf.load(directory / CONFIG), labels
