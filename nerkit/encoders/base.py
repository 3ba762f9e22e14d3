"""What every encoder provides: a fast tokenizer, a hidden size, and token vectors."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast


class Encoder(nn.Module, ABC):
    tokenizer: PreTrainedTokenizerFast
    hidden_size: int
    # True for encoders whose vocabulary is built from the training texts (passed as `train_texts`).
    needs_train_texts: ClassVar[bool] = False

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] -> [batch, tokens, hidden_size]."""

    @abstractmethod
    def save_files(self, directory: Path) -> None:
        """Write what rebuilding this encoder needs besides its weights (tokenizer, model config)."""

    @classmethod
    @abstractmethod
    def reload_kwargs(cls, directory: Path) -> dict[str, Any]:
        """Config overrides that rebuild the architecture from ``save_files`` output, without weights."""
