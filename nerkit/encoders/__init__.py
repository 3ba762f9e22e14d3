"""Encoders turn token ids into vectors; heads sit on top of any of them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from nerkit.encoders.base import Encoder


def build_encoder(cfg: DictConfig, train_texts: Sequence[str] | None = None, saved: Path | None = None) -> Encoder:
    """Instantiate ``cfg`` (an ``encoder/`` config); from ``saved`` files instead of pretrained ones if given."""
    cls = get_class(cfg._target_)
    kwargs = {}
    if saved is not None:
        kwargs = cls.reload_kwargs(saved)
    elif cls.needs_train_texts:
        kwargs = {"train_texts": train_texts}
    return instantiate(cfg, **kwargs)
