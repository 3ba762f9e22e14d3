"""A HuggingFace transformer encoder (BERT family), from a local path or a hub name."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from nerkit.encoders.base import Encoder
from nerkit.encoders.packing import Packing

log = logging.getLogger(__name__)


def locate_pretrained(pretrained: str, key: str = "encoder.pretrained") -> Path | None:
    """The local folder ``pretrained`` names, or None for a hub model name; a ``ValueError``
    naming ``key`` when it is neither (so a mistyped path does not read as a bad repo id)."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{key}={pretrained!r} is a file; give the folder that holds the model, or a hub model name")
    try:
        validate_repo_id(pretrained)
    except HFValidationError:
        raise ValueError(f"{key}={pretrained!r}: no such local folder, and not a hub model name "
                         "('name' or 'namespace/name')") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(pretrained, "config.json"), str):
        raise ValueError(f"{key}={pretrained!r}: no such local folder, and no hub model of that name in the local "
                         "cache (HF_HUB_OFFLINE=1: nothing can be downloaded)")
    return None


def position_limit(pretrained: str) -> int | None:
    """The most tokens a model's position embeddings take, from its config.json (no weights are
    loaded); None when the config cannot be had without downloading it offline."""
    folder = locate_pretrained(pretrained)
    if folder is not None:
        config_path = folder / "config.json"
    else:
        cached = try_to_load_from_cache(pretrained, "config.json")
        if isinstance(cached, str):
            config_path = Path(cached)
        elif constants.HF_HUB_OFFLINE:
            return None
        else:
            config_path = Path(hf_hub_download(pretrained, "config.json"))
    if not config_path.is_file():
        raise ValueError(f"{pretrained}: no config.json; not a transformers model folder")
    limits = [json.loads(config_path.read_text(encoding="utf-8")).get("max_position_embeddings")]
    # RoBERTa-style models reserve positions for padding: the tokenizer knows the usable length.
    tokenizer_config = config_path.with_name("tokenizer_config.json")
    if tokenizer_config.is_file():
        limits.append(json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length"))
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # 1e30 means "no limit"
    return min(usable) if usable else None


class BertEncoder(Encoder):
    saves_weights = True

    def __init__(
        self,
        pretrained: str,
        load_weights: bool = True,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        pack_in_training: bool = True,
    ):
        super().__init__()
        locate_pretrained(pretrained)
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
        # RoBERTa-style embeddings number positions from padding_idx + 1
        self.first_position = getattr(getattr(self.model, "embeddings", None), "padding_idx", -1) + 1
        self.pack_in_training = pack_in_training and self.packs_exactly(pretrained)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.pack_in_training:
            return self.packed_forward(input_ids, attention_mask)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def packed_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The same vectors as ``forward``, computed on the batch's sequences packed into fewer rows
        (or padded, when no row would be saved: batches of similar lengths)."""
        packing = Packing.plan(attention_mask)
        if packing.rows == len(input_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        packed = self.model(input_ids=packing.pack(input_ids, self.tokenizer.pad_token_id or 0),
                            position_ids=packing.positions + self.first_position).last_hidden_state
        return packing.unpack(packed)

    def compile_for_inference(self) -> None:
        # On CPU, inductor fuses the plain attention (matmuls and softmax) into code faster than
        # SDPA's flash kernel on sentence-length windows: 1,000 CoNLL-2003 test sentences in bf16
        # took 1.24 s instead of 1.49 s at 1 thread, 0.91 s instead of 1.07 s at 2 (medians of 6).
        if next(self.parameters()).device.type == "cpu":
            self.model.set_attn_implementation("eager")
        super().compile_for_inference()

    @torch.no_grad()
    def packs_exactly(self, pretrained: str) -> bool:
        """Whether this model computes packed sequences as it does padded ones, tried on a probe
        batch (a model that ignores restarting positions would let packed sequences see each other)."""
        # The longest text is at least as long as the two others together in any tokenizer (every
        # word one token or more), so they share a row; right-padded, as nerkit pads every batch.
        probe = self.tokenizer(["a", ".", "a probe of packing , long enough to hold both of the others"], padding=True,
                               padding_side="right", return_tensors="pt")
        real = probe["attention_mask"].bool()
        was_training = self.model.training
        self.model.eval()
        try:
            padded = self.model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).last_hidden_state
            packed = self.packed_forward(probe["input_ids"], probe["attention_mask"])
            if torch.allclose(packed[real], padded[real], atol=1e-4):
                return True
            why = "packed sequences did not get the padded batch's outputs"
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. a model whose forward takes no position_ids
            why = f"{type(err).__name__}: {err}"
        finally:
            self.model.train(was_training)
        log.warning("%s: training pads its batches instead of packing them (%s)", pretrained, why)
        return False

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
