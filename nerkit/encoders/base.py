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
    # True for encoders whose ``save_files`` writes their weights too, in their library's own
    # format (a HuggingFace model folder): the run's model.safetensors then holds the others only.
    saves_weights: ClassVar[bool] = False

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] -> [batch, tokens, hidden_size]."""

    @abstractmethod
    def save_files(self, directory: Path) -> None:
        """Write what rebuilding this encoder needs (tokenizer, model config; weights if ``saves_weights``)."""

    def compile_for_inference(self) -> None:
        """``torch.compile`` this encoder for prediction, where shapes change from batch to batch."""
        self.compile(dynamic=True)

    def load_saved_weights(self, directory: Path) -> None:
        """Load the weights ``save_files`` wrote (encoders with ``saves_weights`` only)."""
        raise NotImplementedError(f"{type(self).__name__} keeps its weights in the run's model.safetensors")

    @classmethod
    @abstractmethod
    def reload_kwargs(cls, directory: Path) -> dict[str, Any]:
        """Config overrides that rebuild the architecture from ``save_files`` output, without weights."""
