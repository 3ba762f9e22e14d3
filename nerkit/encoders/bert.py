"""A HuggingFace transformer encoder (BERT family), from a local path or a hub name."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from nerkit.encoders.base import Encoder


class BertEncoder(Encoder):
    saves_weights = True

    def __init__(
        self,
        pretrained: str,
        load_weights: bool = True,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{pretrained}: nerkit needs a fast tokenizer (offset mappings) and none is available")
        if load_weights:
            self.model = AutoModel.from_pretrained(pretrained, trust_remote_code=trust_remote_code, use_safetensors=True)
        else:  # weights come from a nerkit run directory afterwards
            config = AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # token vectors only; an unused pooler would get no gradient
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.hidden_size = self.model.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def save_files(self, directory: Path) -> None:
        """A HuggingFace model folder: ``AutoModel.from_pretrained(directory)`` gives the fine-tuned
        encoder (its pooler, unused and untrained, is left out: transformers initializes a new one)."""
        self.tokenizer.save_pretrained(directory)
        self.model.save_pretrained(directory)

    def load_saved_weights(self, directory: Path) -> None:
        index = Path(directory) / "model.safetensors.index.json"  # big models are saved in shards
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
        state = {}
        for name in files:
            state.update(load_file(Path(directory) / name))
        self.model.load_state_dict(state, strict=True)

    @classmethod
    def reload_kwargs(cls, directory: Path) -> dict[str, Any]:
        return {"pretrained": str(directory), "load_weights": False}
